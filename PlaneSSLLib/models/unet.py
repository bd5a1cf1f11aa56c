"""The PlaneSSL network: a U-Net-style shared encoder, a heatmap decoder and a location head.

Plain torch, no MONAI (docs/conventions.md, 'Layers'). The reference configuration of the paper is
``UNetConfig.reference()``: 5 levels, 64 → 1024 filters, BatchNorm in the encoder.

Shapes: input ``(B, in_channels, H, W)`` with H and W divisible by ``2 ** (levels - 1)``;
``lines`` output ``(B, line_channels, H, W)`` (one heatmap per partner view); ``location``
output ``(B,)`` (relative slice location, trained towards [0, 1]). A network with ``head_views`` has one
set of ``line_channels`` heatmaps per listed view and reads each image's from the head of its view
(``forward(x, heads=...)``, indices from ``UNetConfig.head_index``).
"""

from __future__ import annotations

import torch
from torch import nn

from .configs import LOCATION_GRID, MAX_CHANNELS, MAX_DEEPEST_FILTERS, MAX_LEVELS, UNetConfig

__all__ = ["MAX_CHANNELS", "MAX_DEEPEST_FILTERS", "MAX_LEVELS", "UNetConfig", "PlaneSSLNet", "Encoder", "Decoder",
           "LocationHead", "select_heads"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none"),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
        )


class Encoder(nn.Module):
    """Returns the feature map of every level, finest first; the last is the bottleneck."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        f = config.filters
        self.blocks = nn.ModuleList(
            [DoubleConv(config.in_channels if i == 0 else f[i - 1], f[i], config.norm) for i in range(config.levels)]
        )
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        return features


class Decoder(nn.Module):
    """Up-sampling path with skip connections; ``head`` is the last (task-specific) layer."""

    def __init__(self, config: UNetConfig, out_channels: int) -> None:
        super().__init__()
        f = config.filters
        coarse_to_fine = range(config.levels - 1, 0, -1)
        self.ups = nn.ModuleList([nn.ConvTranspose2d(f[i], f[i - 1], 2, stride=2) for i in coarse_to_fine])
        self.blocks = nn.ModuleList([DoubleConv(2 * f[i - 1], f[i - 1], config.norm) for i in coarse_to_fine])
        self.head = nn.Conv2d(f[0], out_channels, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(features[:-1]), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class LocationHead(nn.Module):
    """Pool the bottleneck (global average, or average per cell of a ``LOCATION_GRID`` grid) → MLP → one number
    per image."""

    def __init__(self, channels: int, hidden: int, pooling: str = "mean") -> None:
        super().__init__()
        self.pooling = pooling
        features = channels * (LOCATION_GRID ** 2 if pooling == "grid" else 1)
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        if self.pooling == "grid":
            pooled = nn.functional.adaptive_avg_pool2d(bottleneck, LOCATION_GRID).flatten(1)
        else:
            pooled = bottleneck.mean(dim=(2, 3))
        return self.mlp(pooled).squeeze(1)


def select_heads(maps: torch.Tensor, heads: torch.Tensor | None, config: UNetConfig) -> torch.Tensor:
    """``(B, line_channels, H, W)``: each image's heatmaps from its own head of ``maps`` ``(B, heads x C, H, W)``."""
    if not config.head_views:
        return maps
    if heads is None or heads.shape != maps.shape[:1]:
        raise ValueError(f"a network with heatmap heads per view ({', '.join(config.head_views)}) needs each "
                         "image's head index (forward(x, heads=...))")
    b, _, h, w = maps.shape
    per_head = maps.reshape(b, len(config.head_views), config.line_channels, h, w)
    return per_head[torch.arange(b, device=maps.device), heads.to(maps.device)]


class PlaneSSLNet(nn.Module):
    """Shared encoder + heatmap decoder (``lines``) + location head (``location``)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config, config.head_outputs) if config.line_channels > 0 else None
        self.location = (LocationHead(config.filters[-1], config.location_hidden, config.location_pooling)
                         if config.location_head else None)

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``heads``: ``(B,)`` int64, the head of each image (``UNetConfig.head_index`` of its view); required
        when the config has ``head_views``."""
        m = self.config.size_multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {m}")
        features = self.encoder(x)
        out: dict[str, torch.Tensor] = {}
        if self.decoder is not None:
            out["lines"] = select_heads(self.decoder(features), heads, self.config)
        if self.location is not None:
            out["location"] = self.location(features[-1])
        return out
