"""The PlaneSSL network: a U-Net-style shared encoder, a heatmap decoder and a location head.

Plain torch, no MONAI (docs/conventions.md, 'Layers'). The reference configuration of the paper is
``UNetConfig.reference()``: 5 levels, 64 → 1024 filters, BatchNorm in the encoder.

Shapes: input ``(B, in_channels, H, W)`` with H and W divisible by ``2 ** (levels - 1)``;
``lines`` output ``(B, line_channels, H, W)`` (one heatmap per partner view); ``location``
output ``(B,)`` (relative slice location, trained towards [0, 1]).
"""

from __future__ import annotations

import torch
from torch import nn

from .configs import MAX_CHANNELS, MAX_DEEPEST_FILTERS, MAX_LEVELS, UNetConfig

__all__ = ["MAX_CHANNELS", "MAX_DEEPEST_FILTERS", "MAX_LEVELS", "UNetConfig", "PlaneSSLNet", "Encoder", "Decoder",
           "LocationHead"]


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
    """Global average pool of the bottleneck → MLP → one number per image."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.mlp(bottleneck.mean(dim=(2, 3))).squeeze(1)


class PlaneSSLNet(nn.Module):
    """Shared encoder + heatmap decoder (``lines``) + location head (``location``)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config, config.line_channels) if config.line_channels > 0 else None
        self.location = LocationHead(config.filters[-1], config.location_hidden) if config.location_head else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.config.size_multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {m}")
        features = self.encoder(x)
        out: dict[str, torch.Tensor] = {}
        if self.decoder is not None:
            out["lines"] = self.decoder(features)
        if self.location is not None:
            out["location"] = self.location(features[-1])
        return out
