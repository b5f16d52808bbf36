"""(d) Data loading against what a training step consumes: samples/s of each, per stage.

The loader is the stage's own DataLoader set-up (LlavaDataset, Collator, ResumableSampler, batch 16) with
0 and 2 worker processes, and for stage 1 also reading the feature cache. The step rate is the plain training
step on pre-collated batches. Blocks of loading and of stepping alternate. A loader/step ratio above 1 means
loading keeps up once it overlaps the step (num_workers > 0); with num_workers=0 it adds to every step.
"""
from __future__ import annotations

import tempfile
import time

from torch.utils.data import DataLoader

from benchmarks.common import batches_in_order, build_cell, median, tiny_cfg, train_step_fn


def _loader_rate(dataset, collator, n_batches: int, workers: int) -> float:
    from ablate.train.sampler import ResumableSampler

    loader = DataLoader(dataset, batch_size=16, sampler=ResumableSampler(len(dataset), (n_batches + 1) * 16, 0),
                        collate_fn=collator, num_workers=workers)
    it = iter(loader)
    next(it)                                   # worker start-up is paid once per stage, not per batch
    t0 = time.perf_counter()
    n = sum(1 for _ in it)
    return n * 16 / (time.perf_counter() - t0)


def run(quick: bool = False) -> dict:
    from ablate.train.feature_cache import use_feature_cache

    n, repeats = (3, 1) if quick else (6, 2)
    out = {"name": "data_loading_vs_step", "what": "tiny cell, 224 px, batch 16: loader samples/s (workers 0 and 2, "
           "stage 1 also from the feature cache) vs training-step samples/s"}
    for stage in ("align", "instruct"):
        cell = build_cell(tiny_cfg(), stage)
        step = train_step_fn(cell.vlm)
        batches = batches_in_order(cell, n, 16)
        step(batches[0])
        rates: dict[str, list[float]] = {"loader_w0": [], "loader_w2": [], "step": []}
        cached = None
        with tempfile.TemporaryDirectory() as tmp:
            if stage == "align":
                cell.cfg.paths.root = tmp
                from benchmarks.train_opts import _Head

                cached = use_feature_cache(cell.vlm, cell.cfg, _Head(cell.dataset, (n + 1) * 16), cell.collator,
                                           device="cpu", bf16=False)
                rates["loader_cached_w0"] = []
            for _ in range(repeats):
                rates["loader_w0"].append(_loader_rate(cell.dataset, cell.collator, n, 0))
                rates["loader_w2"].append(_loader_rate(cell.dataset, cell.collator, n, 2))
                if cached:
                    rates["loader_cached_w0"].append(_loader_rate(*cached, n, 0))
                t0 = time.perf_counter()
                for b in batches:
                    step(b)
                rates["step"].append(len(batches) * 16 / (time.perf_counter() - t0))
        r = {k: median(v) for k, v in rates.items()}
        out[stage] = {**{f"{k}_samples_per_s": v for k, v in r.items()},
                      **{f"{k}_over_step": v / r["step"] for k, v in r.items() if k != "step"}}
    out["ratio"] = min(out[s]["loader_w2_over_step"] for s in ("align", "instruct"))
    return out
