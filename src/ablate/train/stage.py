"""One training stage: fit with Lightning, checkpoint for resuming, save the trained weights atomically."""
from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from ablate.train.module import VLMModule, trainable_state
from ablate.train.preempt import CheckpointOnSignal

log = logging.getLogger(__name__)

STAGE_KEYS = {"align": "stage1", "instruct": "stage2"}


@dataclass
class StageResult:
    wall_s: float
    steps: int
    tokens_seen: int
    images_seen: int
    flops: float            # model FLOPs of every step run (train/flops.py: StepFlops); 0 without a counter
    final_loss: float | None
    resumed_from_step: int


def resolve_precision(cfg: DictConfig) -> str:
    p = cfg.trainer.precision
    if p != "auto":
        return p
    return "bf16-mixed" if _accelerator(cfg) == "gpu" else "32-true"


def _accelerator(cfg: DictConfig) -> str:
    acc = cfg.trainer.accelerator
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return acc


def resolve_num_workers(cfg: DictConfig) -> int:
    """`trainer.num_workers: auto`: none on CPU (the model's threads use every core, and measured loading is
    several times faster than a tiny step: benchmarks/dataload.py); on GPU several per device, so image
    decoding overlaps the step instead of adding to it."""
    w = cfg.trainer.num_workers
    if w != "auto":
        return int(w)
    if _accelerator(cfg) != "gpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // max(1, int(cfg.trainer.devices)) - 1))


def plan_steps(cfg: DictConfig, stage: str, dataset_len: int) -> tuple[int, int]:
    """(optimizer steps, gradient accumulation) for a stage from its global batch and length settings."""
    s = cfg.scale[STAGE_KEYS[stage]]
    world = int(cfg.trainer.devices) * int(cfg.trainer.num_nodes)
    accumulate = s.batch_size // (s.micro_batch_size * world)
    steps = s.max_steps if s.max_steps else math.ceil(dataset_len * s.max_epochs / s.batch_size)
    return int(steps), int(accumulate)


def _plugins(cfg: DictConfig) -> list:
    # Submitit owns requeueing on SLURM (hydra-submitit-launcher's max_num_timeout); Lightning must not also.
    if "SLURM_JOB_ID" in os.environ:
        from lightning.pytorch.plugins.environments import SLURMEnvironment
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def build_module(vlm, stage: str, cfg: DictConfig, dataset, collator) -> VLMModule:
    """The LightningModule of one stage, with the stage's optimiser, schedule and data settings."""
    from ablate.models.encoder import num_image_tokens
    from ablate.train.flops import StepFlops

    s = cfg.scale[STAGE_KEYS[stage]]
    steps, accumulate = plan_steps(cfg, stage, len(dataset))
    return VLMModule(vlm, stage, lr=float(s.lr), weight_decay=float(s.weight_decay),
                     warmup_ratio=float(s.warmup_ratio), total_steps=steps,
                     micro_batch_size=int(s.micro_batch_size), accumulate=accumulate, seed=int(cfg.seed),
                     dataset=dataset, collator=collator, num_workers=resolve_num_workers(cfg),
                     image_tokens=num_image_tokens(cfg.encoder, int(cfg.resolution)),
                     length_grouping=bool(cfg.trainer.get("length_grouping", False)),
                     log_every_n_steps=int(cfg.trainer.log_every_n_steps), flops_counter=StepFlops(vlm, cfg))


def build_trainer(cfg: DictConfig, steps: int, accumulate: int, out_dir: Path, logger=None,
                  callbacks: list | None = None) -> L.Trainer:
    """The Lightning Trainer of a stage (the benchmarks time this very object against a plain loop)."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    # The bar redraws when the loss is logged, not every step: fewer lines in SLURM logs, less per-step work.
    bar = TQDMProgressBar(refresh_rate=max(1, int(cfg.trainer.log_every_n_steps)))
    return L.Trainer(
        accelerator=_accelerator(cfg), devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes,
        strategy=cfg.trainer.strategy, precision=resolve_precision(cfg), max_steps=steps, max_epochs=-1,
        accumulate_grad_batches=accumulate, gradient_clip_val=cfg.trainer.max_grad_norm or None,
        logger=logger if logger is not None else False, callbacks=[*(callbacks or []), bar], plugins=_plugins(cfg),
        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
        log_every_n_steps=int(cfg.trainer.log_every_n_steps), default_root_dir=str(out_dir),
        deterministic=bool(cfg.trainer.deterministic), limit_val_batches=0,
    )


@contextmanager
def compiled(vlm, enabled: bool):
    """`trainer.compile`: torch.compile the encoder's and the LM's forward for the duration of a stage.

    The compiled function is set on the instance and removed afterwards, so parameter names (checkpoints) do
    not change and evaluation's generate() runs eagerly. The merge and the loss stay eager: the merge's
    per-sample Python loop would only break the graph.
    """
    mods = [vlm.encoder.backbone, vlm.lm_model] if enabled else []
    if enabled:
        import torch._inductor.config as inductor

        inductor.fallback_random = True   # dropout draws the same masks as eager: same numbers, same cell id
    for m in mods:
        m.forward = torch.compile(m.forward)
    try:
        yield
    finally:
        for m in mods:
            del m.forward


def run_stage(vlm, stage: str, cfg: DictConfig, dataset, collator, out_dir: Path, logger=None) -> StageResult:
    """Train `vlm` (its requires_grad flags already set) for one stage; resume from out_dir/ckpt if present.

    Writes out_dir/weights.pt (trainable weights only) last, atomically: its presence means the stage is done.
    """
    if cfg.trainer.get("fused_gelu", True):
        from ablate.train.fused import fuse_gelu

        fuse_gelu(vlm)
    if stage == "align" and cfg.trainer.get("feature_cache", False):
        from ablate.train.feature_cache import use_feature_cache

        gpu = _accelerator(cfg) == "gpu"
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if gpu else "cpu"
        dataset, collator = use_feature_cache(vlm, cfg, dataset, collator, device=device,
                                              bf16=resolve_precision(cfg).startswith("bf16"))
    module = build_module(vlm, stage, cfg, dataset, collator)
    steps = module.total_steps
    ckpt_dir = out_dir / "ckpt"
    every = max(1, int(cfg.trainer.checkpoint_every_n_steps))
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}", every_n_train_steps=every,
                                 save_top_k=0, save_last=True, auto_insert_metric_name=False,
                                 # always last.ckpt: resuming reads only that name, and after a resume (or a
                                 # save on SLURM's signal) Lightning would otherwise write last-v1.ckpt
                                 enable_version_counter=False)
    # On SLURM's USR2 warning: checkpoint at the next optimizer step, then submitit requeues (train/preempt.py).
    on_signal = CheckpointOnSignal(ckpt_dir / "last.ckpt")
    trainer = build_trainer(cfg, steps, module.accumulate, out_dir, logger, [checkpoint, on_signal])
    last = ckpt_dir / "last.ckpt"
    resumed = 0
    if last.exists():
        resumed = int(torch.load(last, map_location="cpu", weights_only=False).get("global_step", 0))
        log.info("%s: resuming from %s (step %d of %d)", stage, last, resumed, steps)
    t0 = time.perf_counter()
    with compiled(vlm, bool(cfg.trainer.get("compile", False))):
        trainer.fit(module, ckpt_path=str(last) if last.exists() else None)
    wall = time.perf_counter() - t0
    loss = trainer.callback_metrics.get(f"train/{stage}/loss")
    if trainer.global_rank == 0:
        from ablate.cell import atomic_save
        atomic_save(trainable_state(vlm), out_dir / "weights.pt")
    return StageResult(wall_s=wall, steps=int(trainer.global_step), tokens_seen=int(module.tokens_seen),
                       images_seen=int(module.images_seen), flops=float(module.flops_seen),
                       final_loss=float(loss) if loss is not None else None, resumed_from_step=resumed)
