"""The `python -m ablate` entry: Hydra composes the config, run_cell turns it into one result row."""
from __future__ import annotations

import json
import logging
import sys

import hydra
from omegaconf import DictConfig

from ablate.config import CONF_DIR, ConfigError

log = logging.getLogger("ablate")


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _record(row: dict) -> None:
    """Append this cell's outcome to the sweep's summary file (read by SweepCallback.on_multirun_end)."""
    from hydra.core.hydra_config import HydraConfig

    from ablate.callbacks import summary_path

    path = summary_path(HydraConfig.get().sweep.dir)
    line = {k: row.get(k) for k in ("cell_id", "status", "error", "axes")}
    line["wall_s"] = (row.get("compute") or {}).get("wall_s", {}).get("total")
    line["metrics"] = {k: v for k, v in (row.get("metrics") or {}).items() if k.startswith("eval/")}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # one short line per cell; O_APPEND keeps concurrent jobs' lines whole
        f.write(json.dumps(line, default=str) + "\n")


def _refuse_sweep_file_without_multirun() -> None:
    """Without -m Hydra ignores hydra.sweeper.params: a sweep file would silently run one cell."""
    from hydra.core.hydra_config import HydraConfig

    name = HydraConfig.get().runtime.choices.get("sweep")
    if name:
        print(f"ablate: +sweep={name} is a sweep, but without -m (multirun) Hydra would run a single cell of it. "
              f"Run: python -m ablate -m +sweep={name}   (add run.plan=true to see its cells first)",
              file=sys.stderr)
        sys.exit(2)


def _quiet_library_chatter() -> None:
    """Keep the console to ablate's own lines and the progress bars: Lightning's banners (accelerator
    info, tips) would otherwise print twice per stage, once through Hydra's root handler."""
    import warnings

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*`srun` command is available.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    from ablate.run import is_rank_zero, run_cell

    _quiet_library_chatter()

    multirun = _is_multirun()
    if not multirun:
        _refuse_sweep_file_without_multirun()
    if cfg.run.plan and not multirun:  # (a multirun prints its plan in SweepCallback before launching)
        from ablate.plan import describe, plan_cells

        print(describe(plan_cells([cfg])))
        return None
    try:
        row = run_cell(cfg)
    except Exception as e:  # noqa: BLE001 - the failed row is written; the rest of a sweep goes on
        if not multirun:
            if isinstance(e, ConfigError):
                print(f"ablate: {e}", file=sys.stderr)
                sys.exit(2)
            raise
        log.error("cell failed: %s", e, exc_info=not isinstance(e, ConfigError))
        from ablate import cell as C

        row = C.read_row(C.cell_dir(cfg)) or {"status": "failed", "error": str(e)}
    if multirun and is_rank_zero():
        _record(row)
    return row.get("status")


if __name__ == "__main__":
    main()
