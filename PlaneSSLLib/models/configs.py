"""Network configurations (torch-free): what a manifest's ``architecture.config`` holds.

``UNetConfig`` (``models.unet.PlaneSSLNet``) and ``ExamClassifierConfig``
(``models.exam_classifier.ExamClassifier``) live here so that a manifest can be validated and a
network run by ``inference.unet_numpy`` without importing torch (``planessl predict seg``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["LOCATION_GRID", "LOCATION_POOLINGS", "MAX_CHANNELS", "MAX_DEEPEST_FILTERS", "MAX_LEVELS", "POOLINGS",
           "SPATIAL_POOLINGS", "ExamClassifierConfig", "UNetConfig"]


#: Upper bounds of a network's size (the paper's network: 5 levels, 1024 filters at the deepest):
#: a config or manifest beyond them is refused before any allocation.
MAX_LEVELS = 8
MAX_DEEPEST_FILTERS = 8192
MAX_CHANNELS = 8192
#: the location head's pooling: global average ("mean") or average per cell of a fixed grid ("grid")
LOCATION_POOLINGS = ("mean", "grid")
#: How an exam classifier turns a slice's bottleneck into one feature vector: its mean or its maximum over pixels.
SPATIAL_POOLINGS = ("mean", "max")
LOCATION_GRID = 4

@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    base_filters: int = 16
    levels: int = 4
    line_channels: int = 3
    location_head: bool = True
    location_hidden: int = 128
    norm: str = "batch"  # "batch", "instance" or "none" (encoder and decoder)
    #: views with a heatmap head of their own (``line_channels`` outputs each, in this order); empty: one head
    #: shared by every input view. A channel whose line turns with the input view (the knee's COR line:
    #: vertical in sagittal images, horizontal in axial ones) needs them: one head cannot draw both.
    head_views: tuple[str, ...] = ()
    #: how the location head reads the bottleneck: "mean" (global average, the paper's) or "grid" (average over a
    #: LOCATION_GRID x LOCATION_GRID grid of cells, so where a structure lies is kept, not only that it is there)
    location_pooling: str = "mean"

    def __post_init__(self) -> None:
        if isinstance(self.head_views, list):  # as a manifest's JSON gives it
            object.__setattr__(self, "head_views", tuple(self.head_views))

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

    @property
    def head_outputs(self) -> int:
        """Output channels of the decoder's last convolution: ``line_channels`` per head."""
        return self.line_channels * max(1, len(self.head_views))

    def head_index(self, view: str) -> int:
        """The head an image of ``view`` is read from (0 with one shared head); ValueError for a view without one."""
        if not self.head_views:
            return 0
        if view not in self.head_views:
            raise ValueError(f"the network has heatmap heads for {', '.join(self.head_views)}, not for {view!r}")
        return self.head_views.index(view)

    @property
    def location_features(self) -> int:
        """Inputs of the location head's MLP: the bottleneck's channels, per grid cell with ``grid`` pooling."""
        return self.filters[-1] * (LOCATION_GRID ** 2 if self.location_pooling == "grid" else 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.head_views:
            d["head_views"] = list(self.head_views)
        else:  # one shared head: the record stays as before heads per view existed
            d.pop("head_views")
        if self.location_pooling == "mean":  # likewise for the paper's global average
            d.pop("location_pooling")
        return d

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
        heads = self.head_views
        if not isinstance(heads, tuple) or not all(isinstance(v, str) and v for v in heads) \
                or len(set(heads)) != len(heads):
            raise ValueError(f"head_views must be distinct view names, got {heads!r}")
        if self.head_outputs > MAX_CHANNELS:
            raise ValueError(f"{len(heads)} heads x {self.line_channels} channels is more than {MAX_CHANNELS}")
        if self.location_pooling not in LOCATION_POOLINGS:
            raise ValueError(f"location_pooling must be one of {', '.join(LOCATION_POOLINGS)}, "
                             f"got {self.location_pooling!r}")
        if heads and self.line_channels < 1:
            raise ValueError("head_views needs heatmap channels (line_channels >= 1)")


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
    spatial_pooling: str = "mean"

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        self.encoder.validate()
        if not self.views or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be distinct and non-empty, got {self.views!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.spatial_pooling not in SPATIAL_POOLINGS:
            raise ValueError(f"spatial_pooling must be one of {', '.join(SPATIAL_POOLINGS)}, "
                             f"got {self.spatial_pooling!r}")
        if self.hidden < 1 or self.attention_hidden < 1:
            raise ValueError("hidden and attention_hidden must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def feature_channels(self) -> int:
        return self.encoder.filters[-1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder"] = self.encoder.to_dict()
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
