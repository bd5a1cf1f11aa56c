"""Heatmap heads per input view (``UNetConfig.head_views``): which head each image of a batch is read from,
by its view code (``preprocess.codes.VIEW_CODES``, the ``view`` field of the pretext datasets)."""

from __future__ import annotations

import torch

from ..models import UNetConfig
from ..preprocess.codes import VIEW_CODES, VIEW_NAMES

__all__ = ["head_lookup", "batch_heads"]


def head_lookup(config: UNetConfig) -> torch.Tensor | None:
    """View code (``preprocess.codes.VIEW_CODES``) -> head index of ``config`` (-1: no head); None: one head."""
    if not config.head_views:
        return None
    lookup = torch.full((len(VIEW_CODES),), -1, dtype=torch.int64)
    for view in config.head_views:
        lookup[VIEW_CODES[view]] = config.head_index(view)
    return lookup


def batch_heads(lookup: torch.Tensor | None, views: torch.Tensor | None) -> torch.Tensor | None:
    """The head index of each image of a batch (its ``view`` codes; None without heads per view, or for data
    without views such as the synthetic shapes); ValueError for a view without a head."""
    if lookup is None:
        return None
    if views is None:
        raise ValueError("a network with a heatmap head per view needs each image's view; the data gives none")
    heads = lookup.to(views.device)[views]
    if bool((heads < 0).any()):
        missing = sorted({VIEW_NAMES[int(v)] for v in views[heads < 0]})
        raise ValueError(f"images of view(s) {', '.join(missing)} have no heatmap head in this network")
    return heads
