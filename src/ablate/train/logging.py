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
