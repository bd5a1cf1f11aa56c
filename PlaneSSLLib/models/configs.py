"""Network configurations (torch-free): what a manifest's ``architecture.config`` holds.

``UNetConfig`` (``models.unet.PlaneSSLNet``) and ``ExamClassifierConfig``
(``models.exam_classifier.ExamClassifier``) live here so that a manifest can be validated and a
network run by ``inference.unet_numpy`` without importing torch (``planessl predict seg``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["MAX_CHANNELS", "MAX_DEEPEST_FILTERS", "MAX_LEVELS", "POOLINGS", "ExamClassifierConfig", "UNetConfig"]


#: Upper bounds of a network's size (the paper's network: 5 levels, 1024 filters at the deepest):
#: a config or manifest beyond them is refused before any allocation.
MAX_LEVELS = 8
MAX_DEEPEST_FILTERS = 8192
MAX_CHANNELS = 8192

@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    base_filters: int = 16
    levels: int = 4
    line_channels: int = 3
    location_head: bool = True
    location_hidden: int = 128
    norm: str = "batch"  # "batch", "instance" or "none" (encoder and decoder)

    @classmethod
    def reference(cls, line_channels: int = 3) -> UNetConfig:
        """The paper's network: 5 levels, 64 → 1024 filters, BatchNorm."""
        return cls(base_filters=64, levels=5, line_channels=line_channels, location_hidden=512)

    @property
    def filters(self) -> list[int]:
        return [self.base_filters * 2**i for i in range(self.levels)]

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.levels - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """ValueError naming the first field out of range (upper bounds: ``MAX_*`` of this module, so a
        config or manifest naming a huge network is refused before anything is allocated)."""
        if not 2 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must be in 2..{MAX_LEVELS}, got {self.levels}")
        if self.base_filters < 1 or self.in_channels < 1 or self.line_channels < 0:
            raise ValueError("filters and channels must be positive")
        if self.base_filters * 2 ** (self.levels - 1) > MAX_DEEPEST_FILTERS:
            raise ValueError(f"base_filters {self.base_filters} with {self.levels} levels gives "
                             f"{self.base_filters * 2 ** (self.levels - 1)} filters at the deepest level "
                             f"(at most {MAX_DEEPEST_FILTERS})")
        for name in ("in_channels", "line_channels", "location_hidden"):
            if getattr(self, name) > MAX_CHANNELS:
                raise ValueError(f"{name} must be at most {MAX_CHANNELS}, got {getattr(self, name)}")
        if self.norm not in ("batch", "instance", "none"):
            raise ValueError(f"unknown norm {self.norm!r} (batch, instance or none)")


POOLINGS = ("max", "attention")


@dataclass(frozen=True)
class ExamClassifierConfig:
    """Architecture of :class:`ExamClassifier` (stored in the exported manifest)."""

    encoder: UNetConfig = field(default_factory=UNetConfig)
    views: tuple[str, ...] = ("SAG", "COR", "AX")
    pooling: str = "max"
    hidden: int = 64
    attention_hidden: int = 32
    dropout: float = 0.0

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        self.encoder.validate()
        if not self.views or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be distinct and non-empty, got {self.views!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.hidden < 1 or self.attention_hidden < 1:
            raise ValueError("hidden and attention_hidden must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def feature_channels(self) -> int:
        return self.encoder.filters[-1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["views"] = list(self.views)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExamClassifierConfig:
        """Inverse of :meth:`to_dict`; TypeError/ValueError for unknown or bad fields."""
        data = dict(data)
        enc = data.pop("encoder", {})
        enc = enc if isinstance(enc, UNetConfig) else UNetConfig(**enc)
        cfg = cls(encoder=enc, **{k: tuple(v) if k == "views" else v for k, v in data.items()})
        cfg.validate()
        return cfg
