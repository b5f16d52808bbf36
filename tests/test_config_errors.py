"""Bad input gets one clear error naming the key, the value and what is valid, before any training."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import FAST, SMALL_DATA, ablate_cmd, compose

from ablate.config import ConfigError, validate


def _errors(overrides, root):
    small = [] if "data=llava" in overrides else SMALL_DATA
    cfg = compose(FAST + small + list(overrides), root=root)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    return str(e.value)


def test_resolution_not_multiple_of_patch(tmp_path):
    msg = _errors(["encoder=clip", "resolution=300"], tmp_path)
    assert "resolution=300" in msg and "14" in msg


def test_native_resolution_is_allowed(tmp_path):
    validate(compose(FAST + SMALL_DATA + ["encoder=siglip", "resolution=384"], root=tmp_path))


def test_lora_on_frozen_module(tmp_path):
    msg = _errors(["tuning=lora", "tuning.targets=lm", "freeze=frozen_both"], tmp_path)
    assert "tuning.targets" in msg and "frozen_both" in msg


def test_missing_llava_data_path(tmp_path):
    msg = _errors(["data=llava", "eval=none", f"data.align_json={tmp_path}/nope.json"], tmp_path)
    assert "data.align_json" in msg and "nope.json" in msg


def test_paper_scale_checkpoint_neither_local_nor_downloadable(tmp_path):
    msg = _errors(["scale=paper", f"lm.checkpoint={tmp_path}/no-such-phi"], tmp_path)
    assert "lm.checkpoint" in msg and "no-such-phi" in msg


def test_batch_not_divisible(tmp_path):
    msg = _errors(["scale.stage2.batch_size=6", "scale.stage2.micro_batch_size=4"], tmp_path)
    assert "scale.stage2.batch_size=6" in msg


def test_cli_unknown_option_and_bad_value_fail_before_training(tmp_path, data_root):
    root = tmp_path / "runs"
    out = subprocess.run(ablate_cmd("encoder=nosuch", f"paths.root={root}"), capture_output=True, text=True)
    assert out.returncode != 0
    assert "encoder/nosuch" in out.stderr and "siglip" in out.stderr   # Hydra lists the valid options
    out = subprocess.run(ablate_cmd(*FAST, *SMALL_DATA, "encoder=clip", "resolution=300", f"paths.root={root}",
                                    f"paths.data_root={data_root}"), capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "resolution=300" in out.stderr and "Traceback" not in out.stderr
    assert not (root / "stage1").exists()           # nothing was trained
    rows = list((root / "cells").glob("*/result.json"))
    assert len(rows) == 1                           # the failed cell still has a row, marked failed
    row = json.loads(rows[0].read_text())
    assert row["status"] == "failed" and "resolution=300" in row["error"]
