"""Experiment loggers for a stage: CSV by default (no account needed), W&B with `logger=wandb`."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def make_logger(cfg: DictConfig, directory: Path, stage: str):
    name = cfg.logger.name
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(directory), name="logs", version=stage)
    if name == "none":
        return None
    if name == "wandb":
        from ablate.train.wandb_logger import make_wandb_logger

        return make_wandb_logger(cfg, directory, stage)
    raise ValueError(f"logger={name!r}: valid options are csv, wandb, none")


def finish_logging(cfg: DictConfig, row: dict) -> None:
    """After a cell (complete or failed): close its experiment-logger run with the row's final metrics.

    Never raises: it runs in run_cell's `finally`, where an error would hide the cell's own outcome.
    """
    if cfg.logger.name != "wandb":
        return                          # CSV files are closed by Lightning; nothing outlives the stage
    try:
        from ablate.train.wandb_logger import finish_run

        finish_run(cfg, row)
    except Exception as e:  # noqa: BLE001 - logging must not turn a complete cell into a failed one
        import logging

        logging.getLogger("ablate").warning("W&B: could not finish the run of cell %s: %s", row.get("cell_id"), e)
