"""A tiny synthetic pretext dataset for tests and benchmarks (``data.source: synthetic``).

Each subject has ``slices`` parallel slices. An item is drawn deterministically from
``(seed, subject, slice)``: ``channels`` bright straight lines (channel ``c`` drawn with its own
intensity, so channels are distinguishable) whose implicit coefficients ``(a, b, d)`` are the
line targets, some channels randomly missing (masked, not drawn), and a bright square whose
brightness encodes the relative slice location. It follows the data interface of the training
loop: ``image`` (1, H, W) float32, ``lines`` (C, 3) float32, ``line_valid`` (C,) bool,
``location`` () float32, ``location_valid`` () bool, ``subject`` int.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SyntheticPlanesDataset"]


class SyntheticPlanesDataset(Dataset):
    """``subjects`` × ``slices`` items of size ``size_hw`` with ``channels`` line channels."""

    def __init__(self, subject_ids: list[int], slices: int, size_hw: tuple[int, int], channels: int = 3,
                 seed: int = 0, missing_probability: float = 0.15) -> None:
        self.subject_ids = list(subject_ids)
        self.slices = slices
        self.size_hw = size_hw
        self.channels = channels
        self.seed = seed
        self.missing_probability = missing_probability
        #: subject position (0..len(subject_ids)-1) of every item, for the epoch sampler
        self.subject_of_item = [i for i in range(len(self.subject_ids)) for _ in range(slices)]

    def __len__(self) -> int:
        return len(self.subject_ids) * self.slices

    def fingerprint(self) -> str:
        text = f"synthetic:{self.subject_ids}:{self.slices}:{self.size_hw}:{self.channels}:{self.seed}"
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        pos, k = divmod(index, self.slices)
        subject = self.subject_ids[pos]
        rng = np.random.default_rng([self.seed, subject, k])
        h, w = self.size_hw
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        image = 0.05 * rng.standard_normal((h, w))
        lines = np.zeros((self.channels, 3), dtype=np.float64)
        valid = rng.random(self.channels) >= self.missing_probability
        for c in range(self.channels):
            theta = rng.uniform(0, np.pi)
            a, b = np.cos(theta), np.sin(theta)
            px, py = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
            d = -(a * px + b * py)
            lines[c] = (a, b, d)
            if valid[c]:
                dist = a * x + b * y + d
                image += (0.5 + 0.5 * (c + 1) / self.channels) * np.exp(-(dist**2) / (2 * 1.5**2))
        location = k / (self.slices - 1) if self.slices > 1 else 0.0
        side = max(2, min(h, w) // 8)
        image[:side, :side] += 0.3 + location
        image = (image - image.mean()) / (image.std() + 1e-6)
        return {
            "image": torch.from_numpy(image.astype(np.float32)).unsqueeze(0),
            "lines": torch.from_numpy(lines.astype(np.float32)),
            "line_valid": torch.from_numpy(valid),
            "location": torch.tensor(location, dtype=torch.float32),
            "location_valid": torch.tensor(self.slices > 1),
            "subject": subject,
        }
