"""Weight transfer from a pretrained export into a segmentation network (the paper's fine-tuning protocol).

Modes:

- ``"encoder+decoder"`` (the paper's reference): every tensor of the encoder and the decoder is
  copied — weights, biases and BatchNorm running statistics — *except the last layer*, the 1×1
  output convolution ``decoder.head`` (its channels are the pretext heatmaps, not the classes).
- ``"encoder"``: only the encoder's tensors.

The location head is never transferred. Every tensor to copy must exist in the pretrained
weights with the same shape; otherwise :class:`TransferError` names the weights and the first
mismatches (e.g. a different ``base_filters`` or ``levels``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import PlaneSSLError
from ..inference.weights import WeightsError, load_exported
from ..models import PlaneSSLNet

__all__ = ["TRANSFER_MODES", "TransferError", "TransferReport", "transfer_keys", "transfer_state", "load_pretrained"]

TRANSFER_MODES = ("encoder+decoder", "encoder")
#: The last layer of the decoder: never transferred.
HEAD_PREFIX = "decoder.head."


class TransferError(PlaneSSLError, ValueError):
    """Pretrained weights that do not fit the segmentation network; names the weights."""


@dataclass
class TransferReport:
    """What was copied (``copied``) and what kept its fresh initialisation (``kept``)."""

    source: str
    mode: str
    copied: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    pretrained_task: str | None = None
    pretrained_input: dict[str, Any] | None = None  #: the manifest's input (size_hw, spacing_mm)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "mode": self.mode, "copied_tensors": len(self.copied),
                "kept_tensors": len(self.kept), "kept": self.kept, "pretrained_task": self.pretrained_task}


def transfer_keys(state_keys: list[str], mode: str) -> list[str]:
    """The state-dict keys a mode transfers (module docstring)."""
    if mode not in TRANSFER_MODES:
        raise ValueError(f"transfer mode must be one of {', '.join(TRANSFER_MODES)}, got {mode!r}")
    prefixes = ("encoder.",) if mode == "encoder" else ("encoder.", "decoder.")
    return [k for k in state_keys if k.startswith(prefixes) and not k.startswith(HEAD_PREFIX)]


def transfer_state(target: PlaneSSLNet, source_state: dict[str, torch.Tensor], mode: str,
                   source: str = "pretrained weights") -> TransferReport:
    """Copy the mode's tensors of ``source_state`` into ``target`` in place; TransferError on any mismatch."""
    own = target.state_dict()
    keys = transfer_keys(list(own), mode)
    if mode == "encoder+decoder" and not any(k.startswith("decoder.") for k in source_state):
        raise TransferError(f"{source}: the pretrained network has no decoder (a location-only pretraining); "
                            "use --transfer encoder")
    missing = [k for k in keys if k not in source_state]
    wrong = [f"{k} {tuple(source_state[k].shape)} vs {tuple(own[k].shape)}" for k in keys
             if k in source_state and source_state[k].shape != own[k].shape]
    if missing or wrong:
        detail = []
        if wrong:
            detail.append(f"shape mismatch (pretrained vs fine-tuned): {'; '.join(wrong[:3])}"
                          + ("..." if len(wrong) > 3 else ""))
        if missing:
            detail.append(f"missing: {', '.join(missing[:3])}" + ("..." if len(missing) > 3 else ""))
        raise TransferError(f"{source}: does not fit the segmentation network ({'; '.join(detail)}); the "
                            "architecture (model.base_filters, model.levels, model.norm, model.in_channels) must "
                            "match the pretraining's")
    with torch.no_grad():
        for k in keys:
            own[k].copy_(source_state[k].to(own[k].dtype))
    target.load_state_dict(own, strict=True)
    return TransferReport(source, mode, copied=keys, kept=[k for k in own if k not in set(keys)])


def load_pretrained(target: PlaneSSLNet, weights: str | Path, mode: str = "encoder+decoder") -> TransferReport:
    """Transfer from an exported weights directory or ``.zip`` (``inference.weights``); TransferError names it."""
    try:
        source_net, manifest = load_exported(weights)
    except WeightsError as exc:
        raise TransferError(str(exc)) from None
    cfg_src, cfg_dst = source_net.config, target.config
    diffs = [f"{name} {getattr(cfg_src, name)!r} vs {getattr(cfg_dst, name)!r}"
             for name in ("in_channels", "base_filters", "levels", "norm")
             if getattr(cfg_src, name) != getattr(cfg_dst, name)]
    if diffs:
        raise TransferError(f"{weights}: pretrained architecture differs from the segmentation network "
                            f"({'; '.join(diffs)}; pretrained vs fine-tuned): set model.* to the pretraining's values")
    report = transfer_state(target, source_net.state_dict(), mode, str(weights))
    report.pretrained_task = manifest.get("task")
    report.pretrained_input = manifest.get("input")
    return report
