"""Sweeps: the cells of a multirun (sweep file + command line), and every check that must pass before launch.

A sweep file is `conf/sweep/<name>.yaml` (the repository's `sweeps/`), used as `python -m ablate -m
+sweep=<name>`: it overrides the fixed axes and lists the swept ones under `hydra.sweeper.params`, which
Hydra's basic sweeper crosses with the command line (the command line wins for a key given in both).
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from omegaconf import DictConfig, OmegaConf, open_dict

from ablate.config import CONF_DIR, options
from ablate.ranks import world_size

SWEEP_DIR = CONF_DIR / "sweep"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
CELL_SWEEPER = "hydra_plugins.ablate_sweeper.cell_sweeper.CellSweeper"
LOCAL_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
_NOT_AXES = {"hydra", "sweep"}  # config groups that are not axes of a cell


def sweep_choice(config: DictConfig) -> str | None:
    """The sweep file this run was composed with (`+sweep=<name>`), or None."""
    return OmegaConf.select(config, "hydra.runtime.choices.sweep", default=None)


def groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in _NOT_AXES)


def sweep_names() -> list[str]:
    return options("sweep")


# ---------------------------------------------------------------- the sweep file itself (static checks)

@lru_cache(maxsize=None)
def _group_trees(group: str) -> tuple[dict, ...]:
    return tuple(OmegaConf.to_container(OmegaConf.load(p), resolve=False) for p in (CONF_DIR / group).glob("*.yaml"))


def _has_path(tree, parts: list[str]) -> bool:
    for part in parts:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def known_key(path: str) -> bool:
    """Whether `path` (dotted) is a key of config.yaml or of some option of the config group it starts with."""
    first, *rest = path.split(".")
    if first in groups():
        return not rest or any(_has_path(t, rest) for t in _group_trees(first))
    root = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"), resolve=False)
    return _has_path(root, path.split("."))


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        path = f"{prefix}{k}"
        out += _leaves(v, path + ".") if isinstance(v, dict) and v else [path]
    return out


def _values(key: str, value) -> list[str]:
    """The values a sweeper param takes, as Hydra's basic sweeper expands it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    ov = OverridesParser.create().parse_override(f"{key}={value}")
    if ov.is_sweep_override():
        return list(ov.sweep_string_iterator()) if ov.is_discrete_sweep() else ["<range>", "<range>"]
    return [ov.get_value_element_as_str()]


def sweep_file(name: str, config: DictConfig | None = None) -> Path:
    """The file `+sweep=<name>` loads: ablate's own, or one in a directory on hydra.searchpath."""
    sources = OmegaConf.select(config, "hydra.runtime.config_sources", default=None) if config is not None else None
    for src in sources or []:
        path = Path(str(src.path)) / "sweep" / f"{name}.yaml"
        if src.schema == "file" and path.is_file():
            return path
    return SWEEP_DIR / f"{name}.yaml"


def sweep_file_errors(name: str, config: DictConfig | None = None) -> list[str]:
    """What is wrong with the sweep file `name`: no swept axis, unknown keys, unknown group options."""
    path = sweep_file(name, config)
    where = f"sweeps/{name}.yaml" if path.parent == SWEEP_DIR else str(path)
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    params = ((raw.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    errors, swept = [], []
    for key, value in params.items():
        bare = key.lstrip("+~")
        try:
            values = _values(key, value)
        except Exception as e:  # noqa: BLE001 - Hydra's parser error names the bad character
            errors.append(f"{where}: hydra.sweeper.params.{key}={value!r} does not parse: {e}")
            continue
        if len(values) >= 2:
            swept.append(bare)
        if bare in groups():
            bad = [v for v in values if v not in options(bare)]
            if bad:
                errors.append(f"{where}: hydra.sweeper.params.{key}: no option {bad} in group {bare}; "
                              f"valid: {', '.join(options(bare))}")
        elif not known_key(bare):
            errors.append(f"{where}: hydra.sweeper.params.{key}: unknown key {bare!r}: it is neither a config "
                          f"group ({', '.join(groups())}) nor a key of the config")
    if not swept:
        errors.append(f"{where} sweeps no axis (no key of hydra.sweeper.params has two or more values), so it "
                      "would run a single cell: list the values to compare, e.g. `seed: 0,1,2`")
    for leaf in _leaves({k: v for k, v in raw.items() if k not in ("defaults", "hydra")}):
        if not known_key(leaf):
            errors.append(f"{where}: unknown key {leaf!r} (a typo would otherwise add a key nothing reads)")
    return errors


# ---------------------------------------------------------------- the jobs of a multirun

def job_overrides(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, made exactly as Hydra's basic sweeper makes them: sweeper params, then the
    command line, crossed."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    args = params + list(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    return BasicSweeper.split_arguments(parser.parse_overrides(args), None)[0]


def compose_job(config: DictConfig, overrides: list[str], num: int) -> DictConfig:
    """One job's config, composed as the launcher will compose it."""
    from hydra.core.global_hydra import GlobalHydra

    job = GlobalHydra.instance().config_loader().load_sweep_config(config, list(overrides))
    with open_dict(job):
        job.hydra.job.num = num          # set by the launcher at launch; resolving output dirs needs it
        job.hydra.job.id = f"planned_{num}"
    return job


# ---------------------------------------------------------------- the launcher's request vs the cells

def _int(value) -> int | None:
    """A GPU count from `4`, `"4"` or `"a100:4"`; None when not set."""
    if value is None or value == "":
        return None
    m = re.search(r"(\d+)$", str(value))
    return int(m.group(1)) if m else None


def cell_launch_errors(cfg: DictConfig) -> list[str]:
    """Settings of one cell that Lightning would reject only once training starts."""
    errors = []
    if cfg.trainer.strategy == "fsdp" and cfg.trainer.accelerator == "cpu":
        errors.append("trainer.strategy=fsdp with trainer.accelerator=cpu: Lightning's FSDP runs on GPUs only; "
                      "use trainer.strategy=ddp on CPUs")
    return errors


def launcher_errors(config: DictConfig, jobs: list[DictConfig]) -> list[str]:
    """Requests SLURM (or Lightning) would reject or waste, found before anything is submitted."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    errors: list[str] = []
    if target == LOCAL_LAUNCHER:
        multi = sorted({world_size(j) for j in jobs if world_size(j) > 1})
        if multi:
            errors.append(
                f"trainer.devices x trainer.num_nodes = {multi[0]} in a multirun on the local launcher: Lightning "
                "starts the other ranks by re-running this command line, which would start the whole sweep again "
                "in each. Run a multi-device cell without -m, or launch the sweep with hydra/launcher=slurm "
                "(one SLURM task per device)")
        return errors
    if "submitit" not in target or "Slurm" not in target:
        return errors
    ln = config.hydra.launcher
    shapes = sorted({(int(j.trainer.devices), int(j.trainer.num_nodes)) for j in jobs})
    if len(shapes) > 1:
        errors.append(f"the cells use different (trainer.devices, trainer.num_nodes): {shapes}; one SLURM multirun "
                      "resolves the launcher's request once, from the base config, so launch each shape separately")
    devices, nodes = shapes[0] if shapes else (int(config.trainer.devices), int(config.trainer.num_nodes))
    tasks = int(ln.tasks_per_node)
    if tasks != devices:
        errors.append(f"hydra.launcher.tasks_per_node={tasks} but trainer.devices={devices}: under SLURM Lightning "
                      "runs one task per device, so they must be equal (leave tasks_per_node at its default, "
                      "${trainer.devices})")
    if int(ln.nodes) != nodes:
        errors.append(f"hydra.launcher.nodes={ln.nodes} but trainer.num_nodes={nodes}: they must be equal")
    gpus = _int(ln.get("gpus_per_node")) or _int(ln.get("gres"))
    accel = {str(j.trainer.accelerator) for j in jobs} or {str(config.trainer.accelerator)}
    if gpus and "cpu" in accel:
        errors.append(f"hydra.launcher asks for {gpus} GPU(s) per node but trainer.accelerator=cpu would leave "
                      "them idle; use hydra/launcher=slurm (no GPUs) or trainer.accelerator=gpu")
    elif gpus and gpus > devices:
        errors.append(f"hydra.launcher asks for {gpus} GPUs per node but trainer.devices={devices} uses only "
                      f"{devices}: {gpus - devices} would sit idle; set both to the same number")
    elif gpus and gpus < devices:
        errors.append(f"hydra.launcher asks for {gpus} GPUs per node but trainer.devices={devices}: Lightning "
                      "would not find the devices it needs; set both to the same number")
    if not gpus and "gpu" in accel:
        errors.append("trainer.accelerator=gpu but the SLURM request has no GPUs: use hydra/launcher=slurm_gpu")
    if ln.get("mem_gb") and ln.get("mem_per_gpu"):
        errors.append(f"hydra.launcher.mem_gb={ln.mem_gb} and mem_per_gpu={ln.mem_per_gpu}: SLURM takes only one "
                      "of --mem and --mem-per-gpu; set the other to null")
    if int(ln.get("max_num_timeout") or 0) > 0 and int(ln.signal_delay_s) >= 60 * int(ln.timeout_min):
        errors.append(f"hydra.launcher.signal_delay_s={ln.signal_delay_s} is not shorter than timeout_min="
                      f"{ln.timeout_min} minutes: the checkpoint signal would come before the job starts")
    return errors
