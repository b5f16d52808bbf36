"""A deterministic, resumable sampler: the data order depends only on (seed, step), never on restarts."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Yields `num_samples` indices: successive seeded permutations of the dataset, from `start` on.

    Resuming at sample k yields exactly what an uninterrupted run yields after its first k samples, so an
    interrupted cell trains on the same data in the same order. With several ranks each rank takes every
    `world_size`-th index of the same global order (the global batch is the same as on one process).

    Length grouping (`lengths` given): each epoch's permutation is cut into mega-chunks of `mega_groups`
    groups of `group_size` (the samples of one optimizer step, all ranks and micro-batches together); a chunk
    is sorted by length and cut into groups, and the groups are shuffled. Each step's micro-batches then hold
    similar lengths (less padding), while the order stays a function of (seed, epoch) alone: still resumable.
    """

    def __init__(self, dataset_len: int, num_samples: int, seed: int, start: int = 0,
                 rank: int = 0, world_size: int = 1, lengths: Sequence[int] | None = None,
                 group_size: int = 1, mega_groups: int = 50):
        if dataset_len <= 0:
            raise ValueError("the training set is empty: check the data config (data.*) and its JSON file")
        if lengths is not None and len(lengths) != dataset_len:
            raise ValueError(f"{len(lengths)} lengths for a dataset of {dataset_len} samples")
        self.n, self.total, self.seed = dataset_len, num_samples, seed
        self.start, self.rank, self.world = start, rank, world_size
        self.lengths = None if lengths is None else torch.as_tensor(list(lengths), dtype=torch.long)
        self.group, self.mega = max(1, int(group_size)), max(1, int(mega_groups))

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = torch.randperm(self.n, generator=g)
        if self.lengths is None:
            return perm
        chunks = []
        for chunk in perm.split(self.group * self.mega):
            # stable sort, longest first: ties keep their random order
            chunk = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            groups = list(chunk.split(self.group))
            # a short last group stays last, so the full groups keep lining up with the steps
            full = len(groups) - (len(groups[-1]) < self.group)
            order = torch.randperm(full, generator=g).tolist() + list(range(full, len(groups)))
            chunks += [groups[i] for i in order]
        return torch.cat(chunks)

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
