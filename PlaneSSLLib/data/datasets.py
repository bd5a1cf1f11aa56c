"""``PretextDataset``: prepared slices with their line and location targets (torch Dataset).

Items (one prepared slice each)::

    "image"          float32 (1, H, W)   prepared intensities (``meta["normalisation"]``)
    "lines"          float32 (C, 3)      (a, b, d), a² + b² = 1, pixel coords of the image
                                         (x = column, y = row); channel layout in ``data.pairs``
    "line_valid"     bool (C,)           False: masked (not a partner, missing, parallel, off-image)
    "location"       float32 ()          relative slice location in [0, 1] (0 = base / fixed end)
    "location_valid" bool ()             False for stacks of < 2 positions
    "subject"        int64 ()            subject index of the cache
    "view"           int64 ()            ``codes.VIEW_CODES``
    "index"          int64 ()            row of the cache

Line coefficients are computed once for all slices at construction (``pairs.line_targets``,
vectorised numpy); heatmaps are made on the training device by ``targets.line_heatmaps``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..preprocess.codes import ANATOMIES, VIEW_CODES, anatomy_code
from .cache import SliceCache
from .pairs import PairConfig, line_targets, partner_summary

__all__ = ["PretextDataset", "NoPartnerWarning"]

log = logging.getLogger(__name__)


class NoPartnerWarning(UserWarning):
    """Some slices have no valid line channel at all (their view has no partner in the study)."""


class PretextDataset(Dataset):
    """The pretext-task view of a cache.

    Args:
        cache: an opened ``SliceCache`` of content "slices".
        subjects: subject indices to keep (default: all).
        pairs: partner configuration (default ``PairConfig()``).
        anatomy: "heart" or "knee"; required only when the cache holds both.
        views: view labels to keep as inputs (default: all of the anatomy).
    """

    def __init__(
        self,
        cache: SliceCache,
        subjects: Iterable[int] | None = None,
        pairs: PairConfig | None = None,
        anatomy: str | None = None,
        views: Iterable[str] | None = None,
    ) -> None:
        self.cache = cache
        self.pairs = pairs or PairConfig()
        present = cache.anatomies()
        if anatomy is None:
            if len(present) != 1:
                raise ValueError(f"{cache.path}: the cache holds {present or 'no slices'}; pass anatomy=")
            anatomy = present[0]
        if anatomy not in ANATOMIES:
            raise ValueError(f"unknown anatomy {anatomy!r}")
        self.anatomy = anatomy
        self.channels = self.pairs.channels(anatomy)
        index = cache.index
        keep = index["anatomy"] == anatomy_code(anatomy)
        if subjects is not None:
            keep &= np.isin(index["subject"], np.fromiter((int(s) for s in subjects), dtype=np.int64))
        if views is not None:
            keep &= np.isin(index["view"], [VIEW_CODES[v] for v in views])
        self.rows = np.flatnonzero(keep)
        lines, valid, reason = line_targets(index, self.rows, anatomy, self.pairs)
        self.lines = torch.from_numpy(lines)
        self.line_valid = torch.from_numpy(valid)
        self.line_reason = reason
        loc = index["location"][self.rows].astype(np.float32)
        self.location_valid = torch.from_numpy(np.isfinite(loc))
        self.location = torch.from_numpy(np.nan_to_num(loc, nan=0.0))
        self.subject = torch.from_numpy(index["subject"][self.rows].astype(np.int64))
        self.view = torch.from_numpy(index["view"][self.rows].astype(np.int64))
        self.summary, self.warnings = partner_summary(index, self.rows, anatomy, valid, reason, self.pairs)
        for w in self.warnings:
            log.warning("%s", w)
            warnings.warn(w, NoPartnerWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.cache.image_shape

    def subject_items(self) -> dict[int, np.ndarray]:
        """Dataset positions of each subject's slices, ``{subject: sorted int64 array}``."""
        subj = self.subject.numpy()
        order = np.argsort(subj, kind="stable")
        uniq, starts = np.unique(subj[order], return_index=True)
        return {int(s): part for s, part in zip(uniq.tolist(), np.split(order, starts[1:]), strict=True)}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[i])
        image = torch.from_numpy(np.array(self.cache.images[row], dtype=np.float32)).unsqueeze(0)
        return {
            "image": image,
            "lines": self.lines[i],
            "line_valid": self.line_valid[i],
            "location": self.location[i],
            "location_valid": self.location_valid[i],
            "subject": self.subject[i],
            "view": self.view[i],
            "index": torch.tensor(row, dtype=torch.int64),
        }

