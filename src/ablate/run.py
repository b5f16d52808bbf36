"""Run one cell: skip it when its row is complete, else stage 1 (shared), stage 2, evaluation, one row."""
from __future__ import annotations

import fcntl
import logging
import resource
import shutil
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig

from ablate import cell as C
from ablate.config import ConfigError, validate

log = logging.getLogger("ablate")


@contextmanager
def file_lock(path: Path):
    """An exclusive lock across processes (and SLURM jobs on a shared filesystem) for one artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def is_rank_zero() -> bool:
    import os
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", os.environ.get("LOCAL_RANK", 0)))) == 0


def run_cell(cfg: DictConfig) -> dict:
    """Return the cell's row, computing whatever is missing. Raises after writing a `failed` row on error."""
    cdir = C.cell_dir(cfg)
    existing = C.read_row(cdir)
    if existing and existing.get("status") == "complete" and not cfg.run.force:
        log.info("cell %s is complete (%s); skipping. Set run.force=true to redo it.", cdir.name, cdir)
        return existing
    row = C.new_row(cfg, "running")
    try:
        validate(cfg)
        if cfg.run.force and cdir.exists():
            shutil.rmtree(cdir)  # stage 1 is shared and kept; this cell's stage 2 and eval are redone
        if is_rank_zero():
            C.write_json(cdir / "result.json", row)
        _compute(cfg, cdir, row)
    except BaseException as e:  # noqa: BLE001 - every failure must leave a `failed` row, even Ctrl-C
        row.update(status="failed", error=f"{type(e).__name__}: {e}")
        if is_rank_zero():
            C.atomic_write_text(cdir / "error.txt", traceback.format_exc())
            C.write_json(cdir / "result.json", row)
        raise
    finally:
        if is_rank_zero():  # W&B: the row's metrics into the run summary, then wandb.finish() before the next cell
            from ablate.train.logging import finish_logging
            finish_logging(cfg, row)
    return row


def _compute(cfg: DictConfig, cdir: Path, row: dict) -> None:
    import lightning as L

    from ablate.data import resolve_data
    from ablate.data.conversation import get_template
    from ablate.data.tokenizer import build_tokenizer
    from ablate.eval.run import evaluate_cell
    from ablate.models.adapt import configure_stage, param_table
    from ablate.models.build import build_vlm
    from ablate.train.flops import train_flops
    from ablate.train.logging import make_logger
    from ablate.train.stage import run_stage

    t_start = time.perf_counter()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    data = resolve_data(cfg)
    tokenizer = build_tokenizer(cfg)
    vlm = build_vlm(cfg, tokenizer)
    row["params"]["total"] = sum(p.numel() for p in vlm.parameters())
    compute = row["compute"]
    compute.update(wall_s={}, device="cuda" if torch.cuda.is_available() else "cpu", tokens_seen=0, train_flops=0.0)
    s1 = C.stage1_dir(cfg)

    # ---- stage 1: align (projector only), shared by every cell with the same stage-1 identity ----------
    configure_stage(vlm, "align", cfg)
    row["params"]["stage1"] = _params(param_table(vlm))
    with file_lock(s1 / ".lock"):
        shared = (s1 / "weights.pt").exists()
        if not shared:
            C.write_json(s1 / "stage1.json", {"stage1_id": s1.name, "identity": C.stage1_identity(cfg)})
            ds = _dataset(cfg, data["align_json"], data["image_folder"], tokenizer, get_template("plain"), "align")
            res = run_stage(vlm, "align", cfg, ds, _collator(tokenizer), s1, make_logger(cfg, s1, "align"))
            C.write_json(s1 / "result.json", {
                "wall_s": res.wall_s, "steps": res.steps, "tokens_seen": res.tokens_seen,
                "images_seen": res.images_seen, "final_loss": res.final_loss,
                "train_flops": train_flops(vlm, res.tokens_seen, res.images_seen, cfg)})
    s1_result = C.read_json(s1 / "result.json")
    vlm.load_state_dict(torch.load(s1 / "weights.pt", map_location="cpu"), strict=False)
    compute["stage1_shared"] = shared
    compute["wall_s"]["stage1"] = 0.0 if shared else s1_result["wall_s"]
    row["metrics"]["train/stage1/loss"] = s1_result["final_loss"]
    if not shared:
        compute["tokens_seen"] += s1_result["tokens_seen"]
        compute["train_flops"] += s1_result["train_flops"]

    # ---- stage 2: instruct (freeze pattern, full or LoRA) -----------------------------------------------
    # Re-seed: stage 2 (LoRA init, dropout) must not depend on whether stage 1 ran here or was reused.
    L.seed_everything(int(cfg.seed) + 1, workers=True, verbose=False)
    vlm = configure_stage(vlm, "instruct", cfg)
    row["params"]["stage2"] = _params(param_table(vlm))
    s2 = cdir / "stage2"
    ds = _dataset(cfg, data["instruct_json"], data["image_folder"], tokenizer, get_template(cfg.lm.template),
                  "instruct")
    res = run_stage(vlm, "instruct", cfg, ds, _collator(tokenizer), s2, make_logger(cfg, cdir, "instruct"))
    compute["wall_s"]["stage2"] = res.wall_s
    compute["resumed_from_step"] = res.resumed_from_step
    compute["tokens_seen"] += res.tokens_seen
    compute["train_flops"] += train_flops(vlm, res.tokens_seen, res.images_seen, cfg)
    row["metrics"]["train/stage2/loss"] = res.final_loss
    if not is_rank_zero():
        return

    # ---- evaluation --------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    metrics, per_question = evaluate_cell(vlm, tokenizer, cfg, cdir, data)
    compute["wall_s"]["eval"] = time.perf_counter() - t0
    row["metrics"].update(metrics)
    row["per_question"] = per_question
    compute["wall_s"]["total"] = time.perf_counter() - t_start
    compute["peak_mem_mb"] = peak_memory_mb()
    n_gpu = int(cfg.trainer.devices) * int(cfg.trainer.num_nodes) if compute["device"] == "cuda" else 0
    compute["gpu_hours"] = n_gpu * (compute["wall_s"]["stage1"] + compute["wall_s"]["stage2"]) / 3600
    row["status"] = "complete"
    C.write_json(cdir / "result.json", row)
    log.info("cell %s complete: %s", cdir.name,
             ", ".join(f"{k}={v:.3f}" for k, v in row["metrics"].items() if isinstance(v, float)))


def _params(table: dict) -> dict:
    return {"trainable": sum(v["trainable"] for v in table.values()),
            "frozen": sum(v["frozen"] for v in table.values()), "modules": table}


def _dataset(cfg, json_path, image_folder, tokenizer, template, stage):
    from ablate.data.llava import LlavaDataset

    return LlavaDataset(json_path, image_folder, tokenizer, template, stage, resolution=int(cfg.resolution),
                        image_mean=list(cfg.encoder.image_mean), image_std=list(cfg.encoder.image_std),
                        max_length=int(cfg.data.get("max_length", 2048)))


def _collator(tokenizer):
    from ablate.data.collate import Collator

    return Collator(pad_token_id=tokenizer.pad_token_id, padding_side="right")


__all__ = ["run_cell", "ConfigError"]
