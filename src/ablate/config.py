"""Config validation: every bad value is caught here, before any compute, with the fix in the message."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent / "conf"


class ConfigError(ValueError):
    """A config value that would fail later; the message names the key, the value and what is valid."""


def options(group: str) -> list[str]:
    """The option names of a config group (the YAML files under conf/<group>/)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _err(key: str, value, valid: str) -> str:
    return f"{key}={value!r}: {valid}"


def _check_stage(cfg: DictConfig, stage: str, errors: list[str]) -> None:
    s = cfg.scale[stage]
    world = int(cfg.trainer.devices) * int(cfg.trainer.num_nodes)
    for key in ("batch_size", "micro_batch_size"):
        if not isinstance(s[key], int) or s[key] <= 0:
            errors.append(_err(f"scale.{stage}.{key}", s[key], "must be a positive integer"))
            return
    if s.batch_size % (s.micro_batch_size * world):
        errors.append(_err(
            f"scale.{stage}.batch_size", s.batch_size,
            f"must be a multiple of micro_batch_size ({s.micro_batch_size}) x devices x nodes ({world}) "
            "so that gradient accumulation is a whole number"))
    if s.max_steps is None and s.max_epochs is None:
        errors.append(f"scale.{stage}: set max_steps or max_epochs")
    if not (float(s.lr) > 0):
        errors.append(_err(f"scale.{stage}.lr", s.lr, "must be > 0"))


def validate(cfg: DictConfig, check_data: bool = True) -> None:
    """Raise ConfigError listing every problem of a composed config; return None when it is runnable."""
    from ablate.models.adapt import validate_tuning
    from ablate.models.build import check_checkpoint
    from ablate.models.encoder import valid_resolution

    errors: list[str] = []
    res = cfg.get("resolution")
    if not isinstance(res, int) or isinstance(res, bool) or res <= 0:
        errors.append(_err("resolution", res, "must be a positive integer number of pixels, e.g. 224, 336, 384"))
    else:
        ok, msg = valid_resolution(cfg.encoder, res)
        if not ok:
            errors.append(_err("resolution", res, msg))
    if not isinstance(cfg.get("seed"), int):
        errors.append(_err("seed", cfg.get("seed"), "must be an integer"))
    if cfg.scale.weights not in ("random", "pretrained"):
        errors.append(_err("scale.weights", cfg.scale.weights, "valid: random, pretrained"))
    if cfg.scale.arch not in ("tiny", "full"):
        errors.append(_err("scale.arch", cfg.scale.arch, "valid: tiny, full"))
    for stage in ("stage1", "stage2"):
        _check_stage(cfg, stage, errors)
    if cfg.trainer.precision not in ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"):
        errors.append(_err("trainer.precision", cfg.trainer.precision,
                           "valid: auto, 32-true, bf16-mixed, 16-mixed, bf16-true"))
    if cfg.trainer.strategy not in ("auto", "ddp", "fsdp", "ddp_spawn"):
        errors.append(_err("trainer.strategy", cfg.trainer.strategy, "valid: auto, ddp, fsdp, ddp_spawn"))
    synth = [b for b in cfg.eval.benchmarks if str(b).startswith("synth_")]
    if synth and cfg.data.name != "synthetic":
        errors.append(_err("eval", cfg.eval.name, f"benchmarks {synth} are built from the synthetic data, but "
                           f"data={cfg.data.name}; use eval=paper (with eval.root) or eval=none"))
    official = [b for b in cfg.eval.benchmarks if not str(b).startswith("synth_")]
    if official and not Path(str(cfg.eval.get("root"))).expanduser().is_dir():
        errors.append(_err("eval.root", cfg.eval.get("root"), f"no such folder; benchmarks {official} read "
                           "LLaVA-1.5's eval layout (playground/data/eval) from it: set eval.root or ABLATE_EVAL_ROOT"))
    if "mmvet" in cfg.eval.benchmarks:
        judge = cfg.eval.get("judge") or {}
        if not judge.get("grades") and not judge.get("base_url"):
            errors.append(_err("eval.judge.base_url", judge.get("base_url"),
                               "MM-Vet needs a judge: set eval.judge.base_url (an OpenAI-compatible endpoint, key "
                               "in the env var eval.judge.api_key_env) or eval.judge.grades, or drop mmvet from "
                               "eval.benchmarks"))
    try:
        validate_tuning(cfg)
    except ValueError as e:
        errors.append(str(e))
    if cfg.scale.weights == "pretrained":
        for kind in ("encoder", "lm"):
            try:
                check_checkpoint(kind, cfg[kind].checkpoint)
            except (ValueError, FileNotFoundError, OSError) as e:
                errors.append(str(e))
    if check_data:
        from ablate.data import resolve_data
        from ablate.data.synthetic import settings_from

        try:
            # LLaVA data: every path must exist. Synthetic data: settings checked here, generated at run start.
            resolve_data(cfg) if cfg.data.name != "synthetic" else settings_from(cfg.data)
        except (ValueError, FileNotFoundError) as e:
            errors.append(str(e))
    if errors:
        raise ConfigError("invalid ablate config:\n  - " + "\n  - ".join(errors))


def dump(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
