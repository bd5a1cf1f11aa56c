"""Plain torch networks: encoder, decoders, heads (no MONAI here); their configs without torch.

``UNetConfig`` comes from ``models.configs`` (torch-free); the torch modules are imported on first
use (``from PlaneSSLLib.models import PlaneSSLNet``), so that reading a config imports no torch.
"""

from __future__ import annotations

from typing import Any

from .configs import UNetConfig

__all__ = ["Decoder", "Encoder", "LocationHead", "PlaneSSLNet", "UNetConfig"]


def __getattr__(name: str) -> Any:
    if name in ("Decoder", "Encoder", "LocationHead", "PlaneSSLNet"):
        from . import unet

        return getattr(unet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
