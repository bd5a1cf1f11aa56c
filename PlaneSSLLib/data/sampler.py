"""``SubjectEpochSampler``: per epoch, a random slice and cine frame of every subject (reference).

Deterministic as a function of ``(seed, epoch)`` (call ``set_epoch`` before each epoch), and
sharded across DDP ranks: the epoch's list is padded (by repeating its head) to a multiple of
``world_size`` and rank ``r`` takes items ``r, r + world_size, ...``; so every rank yields the
same number of items and the union over ranks covers every subject.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from .datasets import PretextDataset

__all__ = ["SubjectEpochSampler"]


class SubjectEpochSampler(Sampler[int]):
    """Sample ``slices_per_subject`` dataset items per subject per epoch.

    Args:
        dataset: a ``PretextDataset`` (anything with ``subject_items() -> {subject: positions}``).
        seed: base seed; the epoch's draw uses ``np.random.default_rng([seed, epoch])``.
        slices_per_subject: items drawn per subject (without replacement while the subject has enough).
        rank, world_size: DDP shard.
        shuffle: shuffle the order of subjects each epoch (else subject order).
        balance: "slice" (every slice and frame of the subject equally likely, reference) or
            "view" (first a view uniformly, then a slice of it).
    """

    def __init__(
        self,
        dataset: PretextDataset,
        seed: int = 0,
        slices_per_subject: int = 1,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        balance: str = "slice",
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if slices_per_subject < 1:
            raise ValueError(f"slices_per_subject must be >= 1, got {slices_per_subject}")
        if balance not in ("slice", "view"):
            raise ValueError(f"balance must be 'slice' or 'view', got {balance!r}")
        self.groups = dataset.subject_items()
        if not self.groups:
            raise ValueError("the dataset holds no subject")
        views = getattr(dataset, "view", None)
        self.views = np.asarray(views) if views is not None else None
        self.seed, self.k, self.rank, self.world_size = int(seed), int(slices_per_subject), rank, world_size
        self.shuffle, self.balance = shuffle, balance
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def total_size(self) -> int:
        return math.ceil(len(self.groups) * self.k / self.world_size) * self.world_size

    def __len__(self) -> int:
        return self.total_size // self.world_size

    def epoch_indices(self) -> list[int]:
        """All ranks' items of the current epoch (before padding and sharding)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        subjects = sorted(self.groups)
        if self.shuffle:
            subjects = [subjects[i] for i in rng.permutation(len(subjects))]
        out: list[int] = []
        for s in subjects:
            items = self.groups[s]
            if self.balance == "view" and self.views is not None:
                v = self.views[items]
                kinds = np.unique(v)
                chosen = [int(rng.choice(items[v == kinds[rng.integers(len(kinds))]])) for _ in range(self.k)]
            else:
                chosen = rng.choice(items, size=self.k, replace=len(items) < self.k).tolist()
            out.extend(int(c) for c in chosen)
        return out

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices()
        pad = self.total_size - len(indices)
        indices += (indices * (pad // max(1, len(indices)) + 1))[:pad]
        return iter(indices[self.rank : self.total_size : self.world_size])
