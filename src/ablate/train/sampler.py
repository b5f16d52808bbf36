"""A deterministic, resumable sampler: the data order depends only on (seed, step), never on restarts."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Yields `num_samples` indices: successive seeded permutations of the dataset, from `start` on.

    Resuming at sample k yields exactly what an uninterrupted run yields after its first k samples, so an
    interrupted cell trains on the same data in the same order. With several ranks each rank takes every
    `world_size`-th index of the same global order (the global batch is the same as on one process).
    """

    def __init__(self, dataset_len: int, num_samples: int, seed: int, start: int = 0,
                 rank: int = 0, world_size: int = 1):
        if dataset_len <= 0:
            raise ValueError("the training set is empty: check the data config (data.*) and its JSON file")
        self.n, self.total, self.seed = dataset_len, num_samples, seed
        self.start, self.rank, self.world = start, rank, world_size

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def global_order(self):
        """Global sample indices from `start` to `total`, across epoch boundaries."""
        pos = self.start
        while pos < self.total:
            epoch, offset = divmod(pos, self.n)
            perm = self._perm(epoch)
            take = min(self.n - offset, self.total - pos)
            yield from perm[offset:offset + take].tolist()
            pos += take

    def __iter__(self):
        for i, idx in enumerate(self.global_order()):
            if i % self.world == self.rank:
                yield idx

    def __len__(self) -> int:
        # Counted from sample 0, not from `start`: on resume Lightning restores how many batches of the epoch
        # it has seen and ends the epoch when that count reaches len(loader). Counting only the rest would end
        # it early and re-iterate this sampler from `start`, training on the wrong samples.
        return (self.total - self.rank + self.world - 1) // self.world if self.total > self.rank else 0
