"""Shared set-up of the benchmarks: a composed tiny cell, its data, model and batches, and interleaved timing.

Every comparison runs its baseline and candidate in the same process, alternating, and reports medians: the
machine is shared, so two separate runs are never comparable.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / ".bench"            # gitignored: results, the synthetic data and feature caches
MODEL_KEYS = ("input_ids", "attention_mask", "pixel_values", "labels", "image_features")


def compose(overrides: list[str] | tuple[str, ...] = ()):
    """The real config (as `python -m ablate` composes it) with overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ablate.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def tiny_cfg(*extra: str, root: Path | None = None):
    """The default tiny cell (SigLIP + Phi-2 shapes, 224 px) rooted under .bench/ so data is generated once."""
    root = root or BENCH_DIR / "root"
    return compose(["resolution=224", "logger=none", f"paths.root={root}", f"paths.data_root={root}", *extra])


@dataclass
class Cell:
    cfg: object
    tokenizer: object
    vlm: torch.nn.Module
    dataset: object
    collator: object
    stage: str


def build_cell(cfg, stage: str = "instruct", seed: int = 0) -> Cell:
    """Tokenizer, VLM (requires_grad set for `stage`) and the stage's dataset, as run.py builds them."""
    import lightning as L

    from ablate.data import resolve_data
    from ablate.data.collate import Collator
    from ablate.data.conversation import get_template
    from ablate.data.llava import LlavaDataset
    from ablate.data.tokenizer import build_tokenizer
    from ablate.models.adapt import configure_stage
    from ablate.models.build import build_vlm

    L.seed_everything(seed, verbose=False)
    data = resolve_data(cfg)
    tok = build_tokenizer(cfg)
    vlm = build_vlm(cfg, tok)
    configure_stage(vlm, "align", cfg)
    if stage == "instruct":
        vlm = configure_stage(vlm, "instruct", cfg)
    if cfg.trainer.get("fused_gelu", True):       # what run_stage does before training
        from ablate.train.fused import fuse_gelu

        fuse_gelu(vlm)
    align = stage == "align"
    ds = LlavaDataset(data["align_json" if align else "instruct_json"], data["image_folder"], tok,
                      get_template("plain" if align else cfg.lm.template), stage, resolution=int(cfg.resolution),
                      image_mean=list(cfg.encoder.image_mean), image_std=list(cfg.encoder.image_std),
                      max_length=int(cfg.data.get("max_length", 2048)))
    return Cell(cfg, tok, vlm, ds, Collator(tok.pad_token_id, "right"), stage)


def batches_in_order(cell: Cell, n_batches: int, micro: int, seed: int = 0, length_grouping: bool = False,
                     dataset=None, collator=None) -> list[dict]:
    """The first `n_batches` collated batches in the training order ResumableSampler gives."""
    from ablate.train.sampler import ResumableSampler

    ds = dataset if dataset is not None else cell.dataset
    lengths = ds.lengths if length_grouping else None
    order = list(ResumableSampler(len(ds), n_batches * micro, seed, lengths=lengths, group_size=micro))
    col = collator or cell.collator
    return [col([ds[i] for i in order[k:k + micro]]) for k in range(0, len(order), micro)]


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k in MODEL_KEYS}


def lm_tokens(batch: dict, image_tokens: int) -> int:
    """Real (unpadded) LM positions of a batch: text tokens plus image tokens in place of each placeholder."""
    n_img = int(batch["has_image"].sum()) if "has_image" in batch else 0
    return int(batch["attention_mask"].sum()) + n_img * (image_tokens - 1)


def train_step_fn(vlm, lr: float = 1e-3, clip: float = 1.0, labelled_logits_only: bool = True
                  ) -> Callable[[dict], float]:
    """A plain PyTorch training step (AdamW, grad clipping) on `vlm`'s trainable parameters, with the forward
    ablate's training module uses."""
    params = [p for p in vlm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, foreach=True)
    vlm.train()

    def step(batch: dict) -> float:
        loss = vlm(**model_inputs(batch), labelled_logits_only=labelled_logits_only).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def interleaved(arms: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each arm, alternating arms (ABAB...) so load changes hit both alike."""
    for _ in range(warmup):
        for fn in arms.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in arms}
    names = list(arms)
    for r in range(repeats):
        # alternate which arm goes first, so neither always runs on a warmer cache
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def ratio(baseline: float, candidate: float) -> float:
    return float(candidate / baseline) if baseline else float("nan")
