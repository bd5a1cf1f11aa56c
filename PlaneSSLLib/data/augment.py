"""Batched augmentation on the training device, with line targets warped by the same pixel map.

Geometric: about the image centre, isotropic scale ``s ~ U(scale_range)``, optional horizontal
flip, rotation ``θ ~ U(±rotation_deg)``: the pixel map ``p' = M p`` of ``targets.pixel_affine``
(pixel coordinates x = column, y = row, integer at pixel centres). The image is resampled with
``F.grid_sample`` (bilinear, ``align_corners=False``) at ``M⁻¹ p'``; line coefficients go
through ``targets.transform_lines(lines, M)`` — the same map, so heatmaps drawn after
augmentation sit on the warped anatomy. Pixels brought in from outside get the image's minimum
(background). A line pushed off the image is masked (``line_valid`` False). ``location`` is
unchanged (in-plane transforms do not move the slice).

Convention bridge: with ``align_corners=False`` a normalised coordinate ``u ∈ [-1, 1]`` and the
pixel coordinate ``x`` of a W-pixel axis satisfy ``u = (2x + 1)/W − 1``; call that map ``N``.
``affine_grid``'s ``theta`` maps output normalised coordinates to input ones, so
``theta = N · M⁻¹ · N⁻¹`` (top two rows).

Intensity (per image): gamma ``γ`` (log-uniform in ``gamma_range``) applied to the image rescaled
to [0, 1] by its own min/max and mapped back, then ``x · a + b`` with ``a ~ U(intensity_scale)``,
``b ~ U(intensity_shift)``, then Gaussian noise of standard deviation ``~ U(noise_std)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .targets import pixel_affine, transform_lines

__all__ = ["AugmentConfig", "augment_batch", "normalised_from_pixel", "lines_cross_image"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges (reference: rotation ±15°, scale 0.9–1.1)."""

    rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    flip_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.8, 1.25)
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_shift: tuple[float, float] = (-0.05, 0.05)
    noise_std: tuple[float, float] = (0.0, 0.02)
    geometric: bool = True
    intensity: bool = True

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(geometric=False, intensity=False)


def normalised_from_pixel(height: int, width: int, dtype: torch.dtype = torch.float64,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """3×3 map ``N`` from pixel (x, y) to ``grid_sample`` coordinates (``align_corners=False``)."""
    n = torch.zeros(3, 3, dtype=dtype, device=device)
    n[0, 0], n[0, 2] = 2.0 / width, 1.0 / width - 1.0
    n[1, 1], n[1, 2] = 2.0 / height, 1.0 / height - 1.0
    n[2, 2] = 1.0
    return n


def lines_cross_image(lines: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, C)`` bool: does each line cross the rectangle ``[-0.5, W-0.5] × [-0.5, H-0.5]``."""
    cx = torch.tensor([-0.5, width - 0.5, width - 0.5, -0.5], dtype=lines.dtype, device=lines.device)
    cy = torch.tensor([-0.5, -0.5, height - 0.5, height - 0.5], dtype=lines.dtype, device=lines.device)
    dist = lines[..., 0:1] * cx + lines[..., 1:2] * cy + lines[..., 2:3]
    return (dist.amin(-1) <= 0) & (dist.amax(-1) >= 0)


def _uniform(generator: torch.Generator, n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    r = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
    return (lo + (hi - lo) * r).to(device)


def augment_batch(batch: dict[str, torch.Tensor], generator: torch.Generator, config: AugmentConfig) -> dict:
    """Augmented copy of a collated batch (``"image"`` (B, 1, H, W), ``"lines"`` (B, C, 3), ``"line_valid"``).

    Random numbers come from ``generator`` (on CPU or on the batch's device); the same generator
    state gives the same result. Other keys are passed through. Also adds ``"affine_px"``
    (B, 3, 3): the pixel map applied.
    """
    out = dict(batch)
    image = batch["image"]
    b, _, h, w = image.shape
    dev = image.device
    if config.geometric:
        scale = _uniform(generator, b, *config.scale_range, dev)
        angle = _uniform(generator, b, -config.rotation_deg, config.rotation_deg, dev) * (math.pi / 180.0)
        flip = _uniform(generator, b, 0.0, 1.0, dev) < config.flip_prob
        centre = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=torch.float64, device=dev).expand(b, 2)
        m = pixel_affine(torch.stack([scale, scale], dim=1), angle, centre, centre, flip_x=flip)
        n = normalised_from_pixel(h, w, device=dev)
        theta = (n @ torch.linalg.inv(m) @ torch.linalg.inv(n))[:, :2, :].to(image.dtype)
        grid = F.affine_grid(theta, [b, image.shape[1], h, w], align_corners=False)
        low = image.amin(dim=(1, 2, 3), keepdim=True)
        image = F.grid_sample(image - low, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + low
        out["affine_px"] = m.to(torch.float32)
        if "lines" in batch:
            lines = transform_lines(batch["lines"], m)
            out["lines"] = lines
            if "line_valid" in batch:
                out["line_valid"] = batch["line_valid"] & lines_cross_image(lines, h, w)
    if config.intensity:
        gamma = torch.exp(_uniform(generator, b, math.log(config.gamma_range[0]), math.log(config.gamma_range[1]), dev))
        a = _uniform(generator, b, *config.intensity_scale, dev)
        c = _uniform(generator, b, *config.intensity_shift, dev)
        sd = _uniform(generator, b, *config.noise_std, dev)
        shape = (b, 1, 1, 1)
        lo = image.amin(dim=(1, 2, 3), keepdim=True)
        span = (image.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
        unit = ((image - lo) / span).clamp(0.0, 1.0)
        image = unit ** gamma.to(image.dtype).view(shape) * span + lo
        image = image * a.to(image.dtype).view(shape) + c.to(image.dtype).view(shape)
        noise = torch.randn(image.shape, generator=generator, device=generator.device, dtype=image.dtype).to(dev)
        image = image + noise * sd.to(image.dtype).view(shape)
    out["image"] = image
    return out
