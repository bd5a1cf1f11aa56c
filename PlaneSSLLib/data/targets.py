"""Pretext targets computed on the fly, in batches, on the training device (torch).

Lines are kept as implicit coefficients ``(a, b, d)`` over pixel coordinates of the network
input (x = column, y = row, integer at pixel centres) with ``a² + b² = 1`` (see
``PlaneSSLLib.geometry.lines``); heatmap value ``exp(-dist² / (2σ²))`` with ``dist`` in pixels
(docs/conventions.md, 'Pretext targets'). A channel whose partner view is missing or parallel is *masked*: its
target is zero and it contributes nothing to the loss.
"""

from __future__ import annotations

import torch

__all__ = ["line_heatmaps", "transform_lines", "masked_heatmap_mse", "pixel_affine"]


def line_heatmaps(
    lines: torch.Tensor, valid: torch.Tensor, size_hw: tuple[int, int], sigma_px: float
) -> torch.Tensor:
    """Gaussian line heatmaps.

    Args:
        lines: ``(B, C, 3)`` coefficients ``(a, b, d)`` with ``a² + b² = 1``, pixel units.
        valid: ``(B, C)`` bool; invalid channels come out all zero.
        size_hw: output ``(H, W)``.
        sigma_px: Gaussian width in pixels.
    Returns:
        ``(B, C, H, W)`` in the dtype of ``lines``.
    """
    h, w = size_hw
    x = torch.arange(w, device=lines.device, dtype=lines.dtype).view(1, 1, 1, w)
    y = torch.arange(h, device=lines.device, dtype=lines.dtype).view(1, 1, h, 1)
    a, b, d = (lines[..., i].unsqueeze(-1).unsqueeze(-1) for i in range(3))
    dist = a * x + b * y + d
    heat = torch.exp(-(dist * dist) / (2.0 * sigma_px * sigma_px))
    return heat * valid.to(heat.dtype).unsqueeze(-1).unsqueeze(-1)


def transform_lines(lines: torch.Tensor, affine_px: torch.Tensor) -> torch.Tensor:
    """Lines after the image is warped by ``p' = M p`` (homogeneous 3×3 pixel map, ``(B, 3, 3)``).

    A point on the old line satisfies ``l · p = 0``; then ``(l M⁻¹) · p' = 0``. The result is
    renormalised so ``a² + b² = 1`` again, i.e. distances are in pixels of the warped image.
    """
    inv = torch.linalg.inv(affine_px.to(torch.float64))
    new = torch.einsum("bci,bij->bcj", lines.to(torch.float64), inv)
    norm = torch.linalg.vector_norm(new[..., :2], dim=-1, keepdim=True).clamp_min(1e-12)
    return (new / norm).to(lines.dtype)


def pixel_affine(
    scale_xy: torch.Tensor, rotation_rad: torch.Tensor, centre_in_xy: torch.Tensor, centre_out_xy: torch.Tensor,
    flip_x: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, 3, 3)`` pixel maps: about ``centre_in`` scale per axis, optionally flip x, rotate, move to ``centre_out``.

    ``p' = c_out + R · F · S · (p − c_in)``; all inputs are batched ``(B,)`` or ``(B, 2)``.
    """
    bsz = scale_xy.shape[0]
    dtype, dev = scale_xy.dtype, scale_xy.device
    s = torch.zeros(bsz, 3, 3, dtype=dtype, device=dev)
    s[:, 0, 0], s[:, 1, 1], s[:, 2, 2] = scale_xy[:, 0], scale_xy[:, 1], 1
    if flip_x is not None:
        s[:, 0, 0] = torch.where(flip_x, -s[:, 0, 0], s[:, 0, 0])
    c, si = torch.cos(rotation_rad), torch.sin(rotation_rad)
    r = torch.zeros_like(s)
    r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1], r[:, 2, 2] = c, -si, si, c, 1
    t_in = torch.eye(3, dtype=dtype, device=dev).repeat(bsz, 1, 1)
    t_in[:, :2, 2] = -centre_in_xy
    t_out = torch.eye(3, dtype=dtype, device=dev).repeat(bsz, 1, 1)
    t_out[:, :2, 2] = centre_out_xy
    return t_out @ r @ s @ t_in


def masked_heatmap_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid channels only; zero (with gradient) when none is valid."""
    mask = valid.to(pred.dtype).unsqueeze(-1).unsqueeze(-1)
    per_pixel = (pred - target) ** 2 * mask
    count = mask.sum() * pred.shape[-1] * pred.shape[-2]
    return per_pixel.sum() / count.clamp_min(1.0)
