"""Pretext losses: ``alpha * L_lines + beta * L_location`` with masking, DDP-exact normalisation.

``L_lines`` is :func:`PlaneSSLLib.data.targets.masked_heatmap_mse` (mean over the valid
channels' pixels); ``L_location`` is :func:`masked_location_mse` (mean over the images whose
location is valid). Under DDP each rank's mean is rescaled by ``world * local_count /
global_count`` so that the gradient DDP averages over ranks is exactly the gradient of the
global-batch loss, however the valid channels fall across ranks.
"""

from __future__ import annotations

import torch

from PlaneSSLLib.data.targets import line_heatmaps, masked_heatmap_mse

__all__ = ["masked_location_mse", "LossTerms", "pretext_terms", "combine_terms"]


def masked_location_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid entries only; zero (with gradient) when none is valid."""
    mask = valid.to(pred.dtype)
    return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


class LossTerms(dict):
    """``{"lines": (mean, count), "location": (mean, count)}`` for the tasks that are trained."""


def pretext_terms(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], task: str,
                  sigma_px: float) -> LossTerms:
    """Per-task means (float32) and their counts (valid channel-pixels / valid images) for a batch."""
    terms = LossTerms()
    if task in ("lines", "both"):
        pred = outputs["lines"].float()
        lines, valid = batch["lines"].float(), batch["line_valid"].bool()
        if pred.shape[1] != lines.shape[1]:
            raise ValueError(
                f"the network predicts {pred.shape[1]} line channels but the data gives {lines.shape[1]} "
                "(model.line_channels must match the partner views)"
            )
        heat = line_heatmaps(lines, valid, (pred.shape[-2], pred.shape[-1]), sigma_px)
        count = valid.sum().to(torch.float64) * pred.shape[-1] * pred.shape[-2]
        terms["lines"] = (masked_heatmap_mse(pred, heat, valid), count)
    if task in ("location", "both"):
        pred = outputs["location"].float()
        valid = batch["location_valid"].bool().reshape(pred.shape)
        target = batch["location"].float().reshape(pred.shape)
        terms["location"] = (masked_location_mse(pred, target, valid), valid.sum().to(torch.float64))
    return terms


def combine_terms(terms: LossTerms, alpha: float, beta: float,
                  global_counts: dict[str, torch.Tensor] | None = None, world: int = 1) -> torch.Tensor:
    """``alpha * lines + beta * location``; with ``global_counts`` (DDP) each term is rescaled so
    that the mean over ranks equals the global-batch mean."""
    weights = {"lines": alpha, "location": beta}
    total = None
    for name, (mean, count) in terms.items():
        value = mean
        if global_counts is not None and world > 1:
            factor = (world * count.clamp_min(1.0) / global_counts[name].clamp_min(1.0)).to(mean.dtype)
            value = mean * factor
        value = weights[name] * value
        total = value if total is None else total + value
    if total is None:
        raise ValueError("no loss term: the task trains nothing")
    return total
