"""The LightningModule that trains one stage of a VLM: loss, AdamW, cosine schedule with warmup."""
from __future__ import annotations

import math

import lightning as L
import torch
from torch.utils.data import DataLoader

from ablate.train.sampler import ResumableSampler


def cosine_with_warmup(warmup: int, total: int):
    """LR multiplier: linear warmup to 1, then cosine decay to 0 at `total` (LLaVA's schedule)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes: frozen weights are rebuilt from config/checkpoint, not saved again."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


class VLMModule(L.LightningModule):
    """Trains the parameters of `vlm` that require grad; the stage runner decides which those are."""

    def __init__(self, vlm, stage: str, *, lr: float, weight_decay: float, warmup_ratio: float,
                 total_steps: int, micro_batch_size: int, accumulate: int, seed: int,
                 dataset, collator, num_workers: int = 0, image_tokens: int = 1,
                 length_grouping: bool = False, log_every_n_steps: int = 1, flops_counter=None):
        super().__init__()
        self.vlm = vlm
        self.stage = stage
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.total_steps, self.micro, self.accumulate = total_steps, micro_batch_size, accumulate
        self.seed, self.dataset, self.collator, self.num_workers = seed, dataset, collator, num_workers
        self.image_tokens = image_tokens
        self.length_grouping, self.log_every = length_grouping, max(1, int(log_every_n_steps))
        self.flops_counter = flops_counter   # batch -> model FLOPs of its forward + backward (train/flops.py)
        # What training consumed: LM positions (text tokens + image tokens), images, model FLOPs. Each process
        # counts its own batches (`_local`); the totals over all ranks are summed when a checkpoint is written
        # and when training ends, on top of the totals a resumed run restores (`_restored`).
        self._restored = torch.zeros(3, dtype=torch.float64)
        self._local = torch.zeros(3, dtype=torch.float64)
        # what the stage reports: the totals when training ends (the restored ones if nothing was left to train)
        self._reported = torch.zeros(3, dtype=torch.float64)
        # Frozen weights are not in the checkpoint (see on_save_checkpoint), so loading must not be strict.
        self.strict_loading = False

    # ---- data ------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size
        per_step = self.micro * world * self.accumulate
        # global_step is restored from the checkpoint before the loader is built: skip what was consumed.
        # Length grouping keeps the order a function of (seed, epoch), so resuming still skips exactly.
        lengths = self.dataset.lengths if self.length_grouping else None
        sampler = ResumableSampler(len(self.dataset), self.total_steps * per_step, self.seed,
                                   start=self.trainer.global_step * per_step,
                                   rank=self.trainer.global_rank, world_size=world,
                                   lengths=lengths, group_size=per_step)
        return DataLoader(self.dataset, batch_size=self.micro, sampler=sampler, collate_fn=self.collator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    # ---- step ------------------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch, dataloader_idx):
        # Counted here, on the CPU copy: counting the device copy would make the CPU wait for the GPU
        # (an .item() sync) every step.
        n_img = int(batch["has_image"].sum()) if "has_image" in batch else 0
        # the <image> placeholder becomes L_img positions in the LM
        self._local[0] += int(batch["attention_mask"].sum()) + n_img * (self.image_tokens - 1)
        self._local[1] += n_img
        if self.flops_counter is not None:
            self._local[2] += self.flops_counter(batch)
        return batch

    def _totals(self) -> torch.Tensor:
        """(tokens, images, FLOPs) consumed so far by every rank. A collective under DDP: every rank calls it
        (Lightning dumps checkpoints on all ranks and runs on_train_end on all ranks)."""
        local = self._local
        if self.trainer.world_size > 1:
            # a copy: all_reduce works in place, and on a CPU .to() would hand over _local itself
            local = self.trainer.strategy.reduce(local.to(self.device, copy=True), reduce_op="sum").cpu()
        return self._restored + local

    def on_train_end(self):
        self._reported = self._totals()

    @property
    def tokens_seen(self) -> int:
        return int(self._reported[0])

    @property
    def images_seen(self) -> int:
        return int(self._reported[1])

    @property
    def flops_seen(self) -> float:
        return float(self._reported[2])

    def training_step(self, batch, batch_idx):
        # the LM head only where a label is predicted: same loss, less compute and memory
        out = self.vlm(**{k: v for k, v in batch.items() if k in _MODEL_KEYS}, labelled_logits_only=True)
        # Only on the steps the logger writes (and the last, whose loss the row reports): a logged value
        # reaches the progress bar as a Python float, which costs a GPU sync per step.
        step = self.trainer.global_step + 1
        if step % self.log_every == 0 or step >= self.total_steps:
            self.log(f"train/{self.stage}/loss", out.loss.detach(), prog_bar=True, on_step=True,
                     batch_size=self.micro)
        return out.loss

    def configure_optimizers(self):
        decay, no_decay = [], []
        for n, p in self.vlm.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # fused: one kernel for the whole update on GPU (the optimizer pass over fp32 states is memory-bound)
        fused = all(p.is_cuda for g in groups for p in g["params"])
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr, betas=(0.9, 0.999),
                                **({"fused": True} if fused else {"foreach": True}))
        warmup = int(round(self.warmup_ratio * self.total_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(warmup, self.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- checkpoints: trainable weights + RNG, so a resumed run continues bit for bit --------------
    def on_save_checkpoint(self, checkpoint):
        keep = {f"vlm.{k}" for k in trainable_state(self.vlm)}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["ablate_rng"] = {"torch": torch.get_rng_state(),
                                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        tokens, images, flops = self._totals().tolist()
        checkpoint["ablate_tokens_seen"], checkpoint["ablate_images_seen"] = int(tokens), int(images)
        checkpoint["ablate_flops_seen"] = float(flops)

    def on_load_checkpoint(self, checkpoint):
        # The RNG state is applied just before the first resumed batch, not here: creating the DataLoader
        # iterator after this hook draws from the global RNG, which the uninterrupted run did at step 0.
        self._resume_rng = checkpoint.get("ablate_rng")
        self._restored = torch.tensor([checkpoint.get("ablate_tokens_seen", 0), checkpoint.get("ablate_images_seen", 0),
                                       checkpoint.get("ablate_flops_seen", 0.0)], dtype=torch.float64)
        self._local.zero_()
        self._reported = self._restored.clone()     # on_train_end does not run if nothing is left to train

    def on_train_batch_start(self, batch, batch_idx):
        rng, self._resume_rng = getattr(self, "_resume_rng", None), None
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])


_MODEL_KEYS = ("input_ids", "attention_mask", "pixel_values", "labels", "image_features")
