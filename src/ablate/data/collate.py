"""Batching: pad token ids, labels and attention masks to the batch's longest sample; a seeded length-grouped sampler."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler

from ablate.data import IGNORE_INDEX


class Collator:
    """Turns a list of LlavaDataset samples into a batch.

    Returns input_ids (B, T) long, labels (B, T) long (IGNORE_INDEX on padding), attention_mask (B, T) long,
    pixel_values (B, 3, R, R) float (zeros for text-only samples) and has_image (B,) bool.
    Left padding is what batched generation needs (every prompt ends at the same position); right padding is
    the usual choice for training.
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}: use 'left' or 'right'")
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: set tokenizer.pad_token (build_tokenizer does)")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        if not batch:
            raise ValueError("cannot collate an empty batch")
        lengths = [len(s["input_ids"]) for s in batch]
        B, T = len(batch), max(lengths)
        input_ids = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.long)
        for i, (s, n) in enumerate(zip(batch, lengths)):
            sl = slice(0, n) if self.padding_side == "right" else slice(T - n, T)
            input_ids[i, sl] = torch.as_tensor(s["input_ids"], dtype=torch.long)
            lab = s.get("labels")
            if lab is not None:
                labels[i, sl] = torch.as_tensor(lab, dtype=torch.long)
            attention_mask[i, sl] = 1
        out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
               "pixel_values": torch.stack([s["pixel_values"] for s in batch]),
               "has_image": torch.tensor([bool(s["has_image"]) for s in batch], dtype=torch.bool)}
        return out


class LengthGroupedSampler(Sampler[int]):
    """Shuffled indices where each run of ``batch_size`` has similar lengths (less padding, faster steps).

    Indices are shuffled with a seeded generator (seed + epoch), cut into mega-batches of ``batch_size *
    mega_batch_mult``, and each mega-batch is sorted by length, longest first; so batches stay random in
    content while padding shrinks. Call ``set_epoch`` for a new order each epoch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, mega_batch_mult: int = 50):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = batch_size * max(1, mega_batch_mult)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        for start in range(0, len(perm), self.mega):
            chunk = perm[start:start + self.mega]
            yield from sorted(chunk, key=lambda i: -self.lengths[i])
