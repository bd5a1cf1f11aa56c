"""Resampling one image onto the prepared grid: target in-plane spacing, centred crop/pad, intensity.

The prepared image keeps the source image's orientation (``x_dir_lps``, ``y_dir_lps``) and the
patient position of its centre; only the pixel spacing (square, ``spacing_mm``) and the matrix
(``size_px × size_px``) change. So the prepared pixel ``(x', y')`` lies at the source pixel

    x = (x' − cx') · s / Δc + cx,     y = (y' − cy') · s / Δr + cy

(``c`` = the middle of each rectangle, ``(cols − 1)/2``, ``(rows − 1)/2``; ``s`` = target spacing,
``Δr, Δc`` = source row and column spacing in mm) — an axis-aligned scale and shift, done by
``scipy.ndimage.affine_transform`` with linear interpolation (vectorised C, no Python loop).

Anti-aliasing: when an axis is downsampled by ``f = s/Δ > 1``, the source is first smoothed with
a Gaussian of ``σ = (f − 1)/2`` source pixels along that axis (scikit-image's rule).

Intensity (per image, before resampling): values are clipped to the ``clip_percentiles``
(default 0.5 and 99.5) of the image, then either scaled to ``[0, 1]`` (``"minmax"``, default) or
z-scored with the clipped image's mean and standard deviation (``"zscore"``). Pixels of the
prepared grid outside the source field of view get the normalised value of the low clip
percentile (0 for ``"minmax"``): the background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..geometry.planes import ImagePlane

__all__ = ["NORMALISATIONS", "prepared_plane", "normalise_intensity", "resample_to_plane", "prepare_image"]

NORMALISATIONS = ("minmax", "zscore")


def prepared_plane(source: ImagePlane, spacing_mm: float, size_px: int) -> ImagePlane:
    """The prepared grid of ``source``: same orientation and centre, ``spacing_mm`` square pixels, ``size_px``²."""
    return ImagePlane.centred(
        source.centre_lps, source.x_dir_lps, source.y_dir_lps, (float(spacing_mm), float(spacing_mm)),
        (int(size_px), int(size_px)),
    )


def normalise_intensity(
    pixels: np.ndarray, method: str = "minmax", clip_percentiles: tuple[float, float] = (0.5, 99.5)
) -> tuple[np.ndarray, float]:
    """Clip to the image's percentiles and normalise; returns ``(float32 image, background value)``.

    ``background`` is the normalised low clip value (what pixels outside the field of view get).
    A constant image comes out all zeros.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown intensity normalisation {method!r} (choose from {', '.join(NORMALISATIONS)})")
    img = np.asarray(pixels, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(img, clip_percentiles))
    if not hi > lo:
        return np.zeros_like(img), 0.0
    img = np.clip(img, lo, hi)
    if method == "minmax":
        scale = np.float32(1.0 / (hi - lo))
        return (img - np.float32(lo)) * scale, 0.0
    mean, std = float(img.mean()), float(img.std())
    std = std if std > 1e-12 else 1.0
    return (img - np.float32(mean)) * np.float32(1.0 / std), (lo - mean) / std


def resample_to_plane(
    pixels: np.ndarray, source: ImagePlane, target: ImagePlane, antialias: bool = True, cval: float = 0.0
) -> np.ndarray:
    """Resample ``pixels`` (rows × cols on ``source``) onto ``target``, which must share its orientation.

    Linear interpolation; ``cval`` outside the source. Returns float32 ``target.shape_px``.
    """
    img = np.asarray(pixels, dtype=np.float32)
    if img.shape != source.shape_px:
        raise ValueError(f"pixel array {img.shape} does not match the plane's shape {source.shape_px}")
    same_x = abs(float(source.x_dir_lps @ target.x_dir_lps)) >= 1 - 1e-6
    if not (same_x and abs(float(source.y_dir_lps @ target.y_dir_lps)) >= 1 - 1e-6):
        raise ValueError("resample_to_plane needs a target with the source's orientation")
    dr_s, dc_s = source.spacing_mm
    dr_t, dc_t = target.spacing_mm
    # Row/column of the source for target pixel (0, 0), and per target pixel step (source pixels).
    offset_xy, _ = source.lps_to_pixel(target.origin_lps)
    step_x = dc_t / dc_s * float(source.x_dir_lps @ target.x_dir_lps)
    step_y = dr_t / dr_s * float(source.y_dir_lps @ target.y_dir_lps)
    if antialias:
        sigma = (max(0.0, (abs(step_y) - 1) / 2), max(0.0, (abs(step_x) - 1) / 2))
        if sigma[0] > 0 or sigma[1] > 0:
            img = ndimage.gaussian_filter(img, sigma=sigma, mode="nearest", truncate=3.0)
    return ndimage.affine_transform(
        img, matrix=np.array([step_y, step_x]), offset=np.array([offset_xy[1], offset_xy[0]]),
        output_shape=target.shape_px, order=1, mode="constant", cval=float(cval), prefilter=False,
    ).astype(np.float32, copy=False)


def prepare_image(
    pixels: np.ndarray,
    source: ImagePlane,
    spacing_mm: float,
    size_px: int,
    normalisation: str = "minmax",
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
    antialias: bool = True,
) -> tuple[np.ndarray, ImagePlane]:
    """Normalise, then resample ``pixels`` onto ``prepared_plane(source, spacing_mm, size_px)``.

    Returns ``(float32 (size_px, size_px) image, prepared plane)``.
    """
    target = prepared_plane(source, spacing_mm, size_px)
    img, background = normalise_intensity(pixels, normalisation, clip_percentiles)
    return resample_to_plane(img, source, target, antialias=antialias, cval=background), target
