"""Run one cell: skip it when its row is complete, else stage 1 (shared), stage 2, evaluation, one row.

Every step can be interrupted and re-run: a stage that finished left its `result.json` (written last, after
its weights) and is not trained again; an unfinished stage resumes from its last checkpoint. With several
ranks (DDP/FSDP), every rank runs this function; rank 0 alone takes locks, writes rows and evaluates, and
tells the other ranks what it decided (ablate.ranks).
"""
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
from ablate import ranks
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
    return ranks.global_rank() == 0


def run_cell(cfg: DictConfig) -> dict:
    """Return the cell's row, computing whatever is missing. Raises after writing a `failed` row on error."""
    cdir = C.cell_dir(cfg)
    existing = C.read_row(cdir)
    if existing and existing.get("status") == "complete" and not cfg.run.force:
        if C.eval_matches(existing, cfg):
            log.info("cell %s is complete (%s); skipping. Set run.force=true to redo it.", cdir.name, cdir)
            return existing
        log.info("cell %s is complete but was evaluated with other eval settings: evaluating again (both "
                 "trained stages are reused)", cdir.name)
    rank0 = is_rank_zero()
    row = C.new_row(cfg, "running")
    try:
        validate(cfg)
        from ablate.sweeps import cell_launch_errors
        errors = cell_launch_errors(cfg)
        if errors:
            raise ConfigError("invalid ablate config:\n  - " + "\n  - ".join(errors))
        # force redoes a *complete* cell. An incomplete one (a requeued or re-run job of a forced sweep) keeps
        # its checkpoints, so a preempted forced cell resumes instead of starting over on every requeue.
        if rank0 and cfg.run.force and existing and existing.get("status") == "complete":
            shutil.rmtree(cdir)  # stage 1 is shared and kept; this cell's stage 2 and eval are redone
        if rank0:
            C.write_json(cdir / "result.json", row)
        _compute(cfg, cdir, row)
    except BaseException as e:  # noqa: BLE001 - every failure must leave a `failed` row, even Ctrl-C
        row.update(status="failed", error=f"{type(e).__name__}: {e}")
        if isinstance(e, SystemExit):  # submitit's requeue on timeout/preemption exits this way
            row["error"] += " (interrupted; re-running the cell resumes from its last checkpoint)"
        if rank0:
            C.atomic_write_text(cdir / "error.txt", traceback.format_exc())
            C.write_json(cdir / "result.json", row)
            ranks.abort(cfg, cdir, row["error"])   # other ranks waiting on a decision stop instead of hanging
        raise
    finally:
        if rank0:  # W&B: the row's metrics into the run summary, then wandb.finish() before the next cell
            from ablate.train.logging import finish_logging
            finish_logging(cfg, row)
    return row


def _compute(cfg: DictConfig, cdir: Path, row: dict) -> None:
    import lightning as L

    from ablate.data import resolve_data
    from ablate.data.tokenizer import build_tokenizer
    from ablate.eval.run import evaluate_cell
    from ablate.models.adapt import configure_stage, param_table
    from ablate.models.build import build_vlm
    from ablate.train import preempt

    t_start = time.perf_counter()
    rank0 = is_rank_zero()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    data = resolve_data(cfg)
    tokenizer = build_tokenizer(cfg)
    vlm = build_vlm(cfg, tokenizer)
    row["params"]["total"] = sum(p.numel() for p in vlm.parameters())
    compute = row["compute"]
    compute.update(wall_s={}, device="cuda" if torch.cuda.is_available() else "cpu", tokens_seen=0, train_flops=0.0)

    # ---- stage 1: align (projector only), shared by every cell with the same stage-1 identity ----------
    configure_stage(vlm, "align", cfg)
    row["params"]["stage1"] = _params(param_table(vlm))
    s1 = C.stage1_dir(cfg)
    shared = _stage1(cfg, cdir, s1, vlm, tokenizer, data)
    if shared or rank0:
        # Loaded when shared; on rank 0 after training too (a no-op) so both paths end in the same state.
        # Other ranks that trained keep their in-memory copy: rank 0 may not have written the file yet.
        vlm.load_state_dict(torch.load(s1 / "weights.pt", map_location="cpu"), strict=False)
    compute["stage1_shared"] = shared     # this run found stage 1 done (another cell's, or its own earlier run's)
    if rank0:
        # Its compute counts in the row of the cell that trained it, also when that cell is resumed (or forced)
        # and finds its own stage 1 done: every stage 1 is counted exactly once in a sweep's compute.
        own = not shared or C.read_json(s1 / "stage1.json").get("trained_by") == cdir.name
        s1_result = C.read_json(s1 / "result.json")
        compute["wall_s"]["stage1"] = s1_result["wall_s"] if own else 0.0
        row["metrics"]["train/stage1/loss"] = s1_result["final_loss"]
        if own:
            compute["tokens_seen"] += s1_result["tokens_seen"]
            compute["train_flops"] += s1_result["train_flops"]

    # ---- stage 2: instruct (freeze pattern, full or LoRA) -----------------------------------------------
    # Re-seed: stage 2 (LoRA init, dropout) must not depend on whether stage 1 ran here or was reused.
    L.seed_everything(int(cfg.seed) + 1, workers=True, verbose=False)
    vlm = configure_stage(vlm, "instruct", cfg)
    row["params"]["stage2"] = _params(param_table(vlm))
    s2 = cdir / "stage2"
    # Rank 0 decides once whether stage 2 is already done (a re-run after a failure in evaluation).
    done = ranks.agree(cfg, cdir, "stage2", lambda: C.stage_done(s2))
    if done:
        vlm.load_state_dict(torch.load(s2 / "weights.pt", map_location="cpu"), strict=False)
        s2_result = C.read_json(s2 / "result.json") if rank0 else None
    else:
        s2_result = _train(cfg, vlm, "instruct", data, tokenizer, s2, cdir)
    if not rank0:
        return
    compute["wall_s"]["stage2"] = 0.0 if done else s2_result["wall_s"]
    compute["resumed_from_step"] = s2_result["resumed_from_step"]
    compute["tokens_seen"] += s2_result["tokens_seen"]
    compute["train_flops"] += s2_result["train_flops"]
    row["metrics"]["train/stage2/loss"] = s2_result["final_loss"]

    # ---- evaluation (rank 0 only) ------------------------------------------------------------------------
    # Training is saved: from here a SLURM warning requeues at once (benchmark results are cached).
    preempt.hand_on(after="training saved")
    preempt.release(during="evaluation")
    t0 = time.perf_counter()
    metrics, per_question = evaluate_cell(vlm, tokenizer, cfg, cdir, data)
    compute["wall_s"]["eval"] = time.perf_counter() - t0
    row["metrics"].update(metrics)
    row["per_question"] = per_question
    compute["wall_s"]["total"] = time.perf_counter() - t_start
    compute["peak_mem_mb"] = peak_memory_mb()
    n_gpu = ranks.world_size(cfg) if compute["device"] == "cuda" else 0
    compute["gpu_hours"] = n_gpu * (compute["wall_s"]["stage1"] + compute["wall_s"]["stage2"]) / 3600
    row["status"] = "complete"
    C.write_json(cdir / "result.json", row)
    log.info("cell %s complete: %s", cdir.name,
             ", ".join(f"{k}={v:.3f}" for k, v in row["metrics"].items() if isinstance(v, float)))


def _stage1(cfg: DictConfig, cdir: Path, s1: Path, vlm, tokenizer, data) -> bool:
    """Make sure the stage-1 artifact exists; return True when it existed already (shared, not trained here).

    Rank 0 holds the artifact's lock while it checks and trains, so two jobs never compute or write it twice.
    The other ranks of this cell never touch the lock: they follow rank 0's decision (waiting on a lock that
    rank 0 holds while it waits for them to join training would deadlock).
    """
    if not is_rank_zero():
        shared = ranks.follow(cfg, cdir, "stage1")
        if not shared:
            _train(cfg, vlm, "align", data, tokenizer, s1, cdir)
        return shared
    with file_lock(s1 / ".lock"):
        shared = C.stage_done(s1)
        ranks.decide(cfg, cdir, "stage1", shared)
        if not shared:
            C.write_json(s1 / "stage1.json", {"stage1_id": s1.name, "identity": C.stage1_identity(cfg),
                                              "trained_by": cdir.name})
            _train(cfg, vlm, "align", data, tokenizer, s1, cdir)
    return shared


def _train(cfg: DictConfig, vlm, stage: str, data: dict, tokenizer, out: Path, cdir: Path) -> dict | None:
    """Train one stage (resuming from out/ckpt if there is one); rank 0 writes out/result.json last."""
    from ablate.data.conversation import get_template
    from ablate.train import preempt
    from ablate.train.logging import make_logger
    from ablate.train.stage import run_stage

    if stage == "align":
        ds = _dataset(cfg, data["align_json"], data.get("align_image_folder", data["image_folder"]), tokenizer,
                      get_template("plain"), "align")
        logger = make_logger(cfg, out, "align")
    else:
        ds = _dataset(cfg, data["instruct_json"], data["image_folder"], tokenizer, get_template(cfg.lm.template),
                      "instruct")
        logger = make_logger(cfg, cdir, "instruct")
    res = run_stage(vlm, stage, cfg, ds, _collator(tokenizer), out, logger)
    if not is_rank_zero():
        preempt.hand_on(after=f"stage {stage} finished and saved")
        return None
    result = {"wall_s": res.wall_s, "steps": res.steps, "tokens_seen": res.tokens_seen,
              "images_seen": res.images_seen, "final_loss": res.final_loss,
              "resumed_from_step": res.resumed_from_step,
              "train_flops": res.flops}
    C.write_json(out / "result.json", result)  # after run_stage's weights.pt: the stage's "done" mark
    # a SLURM warning that came during the stage's last steps: requeue now that it is saved
    preempt.hand_on(after=f"stage {stage} finished and saved")
    return result


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


__all__ = ["run_cell", "ConfigError", "file_lock"]
