"""(a) Framework overhead: a training step of ablate's Lightning module against a plain PyTorch loop.

Both arms train identical copies of one VLM on the same collated batch, with the same optimiser and schedule
(the module's own `configure_optimizers`) and gradient clipping; the Lightning arm is the stage runner's own
Trainer (`build_trainer`), without checkpointing. The arms alternate step by step, so load on this shared
machine hits both alike: a callback runs one plain step at the start of each Lightning step and is not
counted in Lightning's time. Lightning's step time is the interval between consecutive step starts, so all
it does between steps (hooks, logging, progress bar, batch transfer) is counted. The two arms' losses must
agree step by step: that checks the comparison is of the same computation.
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import build_cell, median, model_inputs, tiny_cfg


class _Same(Dataset):
    """The identical batch `n` times (DataLoader(batch_size=None) yields items as batches)."""

    def __init__(self, batch: dict, n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.batch


class PlainLoop:
    """The reference: forward, backward, clip, AdamW step, schedule step, zero_grad; nothing else."""

    def __init__(self, vlm, module_for_optim, batch: dict, clip: float | None):
        opt_cfg = module_for_optim.configure_optimizers()
        self.opt, self.sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.vlm, self.inputs, self.clip = vlm, model_inputs(batch), clip
        self.losses: list[float] = []

    def step(self) -> None:
        loss = self.vlm(**self.inputs, labelled_logits_only=True).loss     # what VLMModule.training_step runs
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(loss.item())


class _Interleave(Callback):
    """Runs one plain step at each Lightning step start; records both arms' step times and losses."""

    def __init__(self, plain: PlainLoop):
        self.plain = plain
        self.light_t: list[float] = []
        self.plain_t: list[float] = []
        self.light_losses: list[float] = []
        self._start: float | None = None

    def _lightning_step_ended(self) -> None:
        if self._start is not None:
            self.light_t.append(time.perf_counter() - self._start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._lightning_step_ended()
        torch.manual_seed(batch_idx)          # both arms draw the same dropout masks: equal losses
        t0 = time.perf_counter()
        self.plain.step()
        self.plain_t.append(time.perf_counter() - t0)
        torch.manual_seed(batch_idx)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.light_losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module):
        self._lightning_step_ended()


def run(quick: bool = False) -> dict:
    from ablate.train.stage import build_module, build_trainer

    steps = 8 if quick else 24
    cfg = tiny_cfg("scale.stage2.batch_size=16", "scale.stage2.micro_batch_size=16", "trainer.max_grad_norm=1.0")
    cell = build_cell(cfg, "instruct")
    batch = cell.collator([cell.dataset[i] for i in range(16)])
    plain_vlm = copy.deepcopy(cell.vlm)            # same weights, own optimiser state

    module = build_module(cell.vlm, cell.stage, cfg, cell.dataset, cell.collator)
    module.total_steps, module.accumulate = steps, 1
    module.train_dataloader = lambda: DataLoader(_Same(batch, steps), batch_size=None)
    plain_module = build_module(plain_vlm, cell.stage, cfg, cell.dataset, cell.collator)
    plain_module.total_steps = steps
    plain_vlm.train()
    cb = _Interleave(PlainLoop(plain_vlm, plain_module, batch, float(cfg.trainer.max_grad_norm)))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, steps, 1, Path(tmp), None, [cb])
        t0 = time.perf_counter()
        trainer.fit(module)
        wall = time.perf_counter() - t0
    fixed = wall - sum(cb.light_t) - sum(cb.plain_t)
    # the first step of each arm warms up allocators and caches
    light, plain = cb.light_t[1:], cb.plain_t[1:]
    per_step = [a / b for a, b in zip(light, plain)]
    max_loss_diff = max(abs(a - b) for a, b in zip(cb.light_losses, cb.plain.losses))
    return {
        "name": "framework_overhead",
        "what": "tiny cell stage 2 (train_both), micro-batch 16, 224 px: s/step of ablate's Lightning module "
                "vs a plain PyTorch loop, alternating step by step",
        "plain_s_per_step": median(plain), "lightning_s_per_step": median(light),
        "ratio": median(light) / median(plain), "ratio_median_of_pairs": median(per_step),
        "overhead_ms_per_step_median_of_pairs": 1e3 * median([a - b for a, b in zip(light, plain)]),
        "target": "<= 1.05",
        "lightning_fit_fixed_s": fixed,
        "steps_timed": len(light),
        "max_abs_loss_diff": max_loss_diff,
    }
