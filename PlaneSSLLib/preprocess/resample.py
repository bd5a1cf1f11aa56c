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

Orientation (``sax_orientation``): ``stored`` keeps the file's orientation as above; ``canonical``
resamples a SAX slice onto the standard display orientation instead (:func:`canonical_sax_plane`:
seen from the apex, the patient's left towards +column), because sites store their images rotated
by any angle or mirrored and only the geometry says how. Then the pixel map is a general in-plane
affine map (rotation, reflection and scale), still one ``affine_transform``, with an isotropic
anti-aliasing Gaussian.

Intensity (per image, before resampling): values are clipped to the ``clip_percentiles``
(default 0.5 and 99.5) of the image, then either scaled to ``[0, 1]`` (``"minmax"``, default) or
z-scored with the clipped image's mean and standard deviation (``"zscore"``). Pixels of the
prepared grid outside the source field of view get the normalised value of the low clip
percentile (0 for ``"minmax"``): the background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..dicom.views import APEX_PRIOR_LPS
from ..geometry.planes import ImagePlane, unit
from ..geometry.stacks import stack_normal_lps

__all__ = ["NORMALISATIONS", "SAX_ORIENTATIONS", "prepared_plane", "canonical_sax_plane", "sax_apex_direction_lps",
           "pixel_map", "normalise_intensity", "resample_to_plane", "prepare_image"]

NORMALISATIONS = ("minmax", "zscore")
#: how a prepared SAX slice is oriented: as the file stores it, or in the standard display orientation
SAX_ORIENTATIONS = ("stored", "canonical")


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


def sax_apex_direction_lps(planes: list[ImagePlane]) -> np.ndarray:
    """The unit normal of a SAX stack pointing from base to apex: the stack normal's sign chosen towards
    the usual direction of the LV long axis (left, anterior, inferior: ``dicom.views.APEX_PRIOR_LPS``)."""
    n = unit(stack_normal_lps(list(planes)))
    return n if float(n @ APEX_PRIOR_LPS) >= 0 else -n


def canonical_sax_plane(source: ImagePlane, apex_direction_lps: np.ndarray, spacing_mm: float,
                        size_px: int) -> ImagePlane:
    """The prepared grid of a SAX slice in the standard display orientation, whatever the stored one:
    seen from the apex (the grid's normal, columns × rows, points from the apex towards the base),
    columns along the patient's left (L, +x of LPS) projected into the slice, rows along
    ``columns × apex``. Centred on the slice's centre, square ``spacing_mm`` pixels, ``size_px``²."""
    w = unit(apex_direction_lps)
    left = np.array([1.0, 0.0, 0.0])
    x = left - float(left @ w) * w
    if np.linalg.norm(x) < 1e-6:  # a slice normal along L: the patient's posterior takes its place
        x = np.array([0.0, 1.0, 0.0]) - float(w[1]) * w
    x = unit(x)
    y = unit(np.cross(x, w))
    return ImagePlane.centred(source.centre_lps, x, y, (float(spacing_mm), float(spacing_mm)),
                              (int(size_px), int(size_px)))


def pixel_map(source: ImagePlane, target: ImagePlane) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, offset)`` for ``scipy.ndimage.affine_transform``: source ``(row, col)`` of each target
    ``(row, col)``. Two parallel planes; ``matrix`` is the diagonal (2,) when their axes are aligned (up to
    sign), else the full (2, 2) in-plane map (rotation, reflection, scale)."""
    (dr_s, dc_s), (dr_t, dc_t) = source.spacing_mm, target.spacing_mm
    offset_xy, _ = source.lps_to_pixel(target.origin_lps)
    offset = np.array([offset_xy[1], offset_xy[0]])
    xx, yy = float(source.x_dir_lps @ target.x_dir_lps), float(source.y_dir_lps @ target.y_dir_lps)
    if abs(xx) >= 1 - 1e-6 and abs(yy) >= 1 - 1e-6:
        return np.array([dr_t / dr_s * yy, dc_t / dc_s * xx]), offset
    return np.array([
        [dr_t / dr_s * yy, dc_t / dr_s * float(source.y_dir_lps @ target.x_dir_lps)],
        [dr_t / dc_s * float(source.x_dir_lps @ target.y_dir_lps), dc_t / dc_s * xx],
    ]), offset


def resample_to_plane(
    pixels: np.ndarray, source: ImagePlane, target: ImagePlane, antialias: bool = True, cval: float = 0.0
) -> np.ndarray:
    """Resample ``pixels`` (rows × cols on ``source``) onto ``target``, a parallel plane (its own in-plane
    orientation, spacing and matrix).

    Linear interpolation; ``cval`` outside the source. Returns float32 ``target.shape_px``.
    """
    img = np.asarray(pixels, dtype=np.float32)
    if img.shape != source.shape_px:
        raise ValueError(f"pixel array {img.shape} does not match the plane's shape {source.shape_px}")
    matrix, offset = pixel_map(source, target)
    if antialias:
        if matrix.ndim == 1:  # per axis (the module docstring)
            sigma = (max(0.0, (abs(matrix[0]) - 1) / 2), max(0.0, (abs(matrix[1]) - 1) / 2))
        else:  # rotated: one isotropic sigma from the larger step
            step = float(max(np.linalg.norm(matrix[:, 0]), np.linalg.norm(matrix[:, 1])))
            sigma = (max(0.0, (step - 1) / 2),) * 2
        if sigma[0] > 0 or sigma[1] > 0:
            img = ndimage.gaussian_filter(img, sigma=sigma, mode="nearest", truncate=3.0)
    return ndimage.affine_transform(
        img, matrix=matrix, offset=offset,
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
    target: ImagePlane | None = None,
) -> tuple[np.ndarray, ImagePlane]:
    """Normalise, then resample ``pixels`` onto ``target`` (default ``prepared_plane(source, spacing_mm,
    size_px)``; e.g. :func:`canonical_sax_plane`).

    Returns ``(float32 (size_px, size_px) image, prepared plane)``.
    """
    target = target if target is not None else prepared_plane(source, spacing_mm, size_px)
    img, background = normalise_intensity(pixels, normalisation, clip_percentiles)
    return resample_to_plane(img, source, target, antialias=antialias, cval=background), target
