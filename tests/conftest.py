"""Shared test fixtures: compose the real configs with small overrides, in a fresh results root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "ablate" / "conf"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A fast cell for tests: few steps, small data, eval on a handful of questions.
FAST = [
    "scale.stage1.max_steps=4", "scale.stage2.max_steps=4",
    "scale.stage1.batch_size=4", "scale.stage1.micro_batch_size=4",
    "scale.stage2.batch_size=4", "scale.stage2.micro_batch_size=4",
    "resolution=224", "logger=none",
]


def compose(overrides: list[str] | None = None, root: Path | None = None):
    """The real config, composed as `python -m ablate` would, with overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    ov = list(overrides or [])
    if root is not None:
        ov.append(f"paths.root={root}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=ov)


@pytest.fixture
def results_root(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One synthetic dataset for the whole session (generation is deterministic, so sharing is safe)."""
    return tmp_path_factory.mktemp("data")


SMALL_DATA = ["data.num_train=64", "data.num_eval=8"]


def ablate_cmd(*overrides: str) -> list[str]:
    """`python -m ablate` with the venv's interpreter, as a user types it."""
    import sys

    return [sys.executable, "-m", "ablate", *overrides]
