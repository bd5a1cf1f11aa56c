"""From tissue maps to MR-like pixels: partial volume, point spread, bias field, Rician noise.

A phantom describes its anatomy as integer tissue codes at patient points (LPS, mm). An image
is rendered by sampling the tissue at the pixel centres of its plane (``ImagePlane.pixel_grid_lps``)
and at a few offsets along the plane normal inside the slice thickness (partial volume),
mapping codes to relative signal with a look-up table, averaging, blurring slightly (point
spread), multiplying by a smooth receive-coil bias field and adding Rician noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ..geometry.planes import ImagePlane

__all__ = [
    "slice_offsets_mm",
    "slice_points_lps",
    "BiasField",
    "random_bias_field",
    "signal_from_codes",
    "finish_image",
    "display_window",
    "ImageLook",
    "random_look",
]


def slice_offsets_mm(thickness_mm: float, n_sub: int = 3) -> np.ndarray:
    """Offsets (mm) along the plane normal of ``n_sub`` sub-samples spread over the slice thickness.

    Symmetric about 0 (an odd ``n_sub`` contains 0, the slice centre), each at the centre of an
    equal share of the slab ``[-thickness/2, thickness/2]``.
    """
    if n_sub < 1:
        raise ValueError("need at least one sub-sample")
    k = np.arange(n_sub, dtype=np.float64)
    return ((k + 0.5) / n_sub - 0.5) * float(thickness_mm)


def slice_points_lps(plane: ImagePlane, offsets_mm: np.ndarray) -> np.ndarray:
    """Patient points (LPS, mm) of every pixel centre shifted by each offset along the normal.

    Shape ``(len(offsets_mm), rows, cols, 3)``.
    """
    grid = plane.pixel_grid_lps()
    n = plane.normal_lps
    return grid[None, ...] + np.asarray(offsets_mm, np.float64)[:, None, None, None] * n


@dataclass(frozen=True)
class BiasField:
    """Smooth multiplicative receive field ``exp(Σ a_i cos(k_i · (p - centre) + φ_i))`` over LPS mm."""

    centre_lps: np.ndarray
    wavevectors_per_mm: np.ndarray  # (n, 3) radians per mm
    amplitudes: np.ndarray  # (n,)
    phases_rad: np.ndarray  # (n,)

    def __call__(self, points_lps: np.ndarray) -> np.ndarray:
        p = np.asarray(points_lps, np.float64)
        total = np.zeros(p.shape[:-1])
        # Element-wise sums (no BLAS) so that the result is bit-reproducible.
        for k, amp, phase in zip(self.wavevectors_per_mm, self.amplitudes, self.phases_rad, strict=True):
            arg = phase + sum((p[..., i] - self.centre_lps[i]) * k[i] for i in range(3))
            total += amp * np.cos(arg)
        return np.exp(total)


def random_bias_field(
    rng: np.random.Generator, centre_lps: np.ndarray, wavelength_mm: tuple[float, float] = (350.0, 700.0),
    strength: float = 0.12, n_terms: int = 3,
) -> BiasField:
    """A random smooth bias field varying by roughly ±``strength`` (relative) over a body-sized field."""
    dirs = rng.normal(size=(n_terms, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    k = dirs * (2 * np.pi / rng.uniform(*wavelength_mm, size=(n_terms, 1)))
    amps = rng.uniform(0.3, 1.0, size=n_terms) * strength / np.sqrt(n_terms)
    return BiasField(np.asarray(centre_lps, np.float64), k, amps, rng.uniform(0, 2 * np.pi, size=n_terms))


def signal_from_codes(codes: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Relative signal (float32) of tissue codes ``(n_sub, rows, cols)`` averaged over the sub-samples."""
    return lut.astype(np.float32)[codes].mean(axis=0)


def finish_image(
    signal: np.ndarray,
    plane: ImagePlane,
    rng: np.random.Generator,
    bias: BiasField,
    noise_sigma: float,
    scale: float,
    psf_mm: float = 0.6,
    max_value: int = 4095,
) -> np.ndarray:
    """Relative signal (rows, cols) → uint16 pixels: point spread, bias, Rician noise, scaling.

    ``psf_mm`` is the Gaussian blur sigma in millimetres (converted per axis with the pixel
    spacing, so non-square pixels blur isotropically in the patient); ``noise_sigma`` is
    relative to the signal of blood/fluid (1.0); ``scale`` maps relative signal 1.0 to a pixel value.
    """
    dr, dc = plane.spacing_mm
    img = gaussian_filter(signal.astype(np.float32), sigma=(psf_mm / dr, psf_mm / dc), mode="nearest")
    # Bias on a coarse grid is enough (it is smooth): evaluate at every 8th pixel and interpolate.
    img *= _bias_on_plane(bias, plane).astype(np.float32)
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    mag = np.sqrt((img + noise_sigma * n1) ** 2 + (noise_sigma * n2) ** 2)
    out = np.rint(mag * np.float32(scale))
    np.clip(out, 0, max_value, out=out)
    return out.astype(np.uint16)


def _bias_on_plane(bias: BiasField, plane: ImagePlane, step: int = 8) -> np.ndarray:
    rows, cols = plane.shape_px
    r = np.arange(0, rows + step, step, dtype=np.float64)
    c = np.arange(0, cols + step, step, dtype=np.float64)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    coarse = bias(plane.pixel_to_lps(np.stack([cc, rr], axis=-1)))
    # Bilinear interpolation of the coarse grid back to every pixel.
    ri = np.arange(rows) / step
    ci = np.arange(cols) / step
    r0 = np.floor(ri).astype(int)
    c0 = np.floor(ci).astype(int)
    fr = (ri - r0)[:, None]
    fc = (ci - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def display_window(pixels: np.ndarray) -> tuple[float, float]:
    """(centre, width) of a display window covering the 1st–99.5th percentile of the pixel values."""
    lo, hi = np.percentile(pixels, [1.0, 99.5])
    width = max(float(hi - lo), 1.0)
    return float(round((lo + hi) / 2)), float(round(width))


@dataclass(frozen=True)
class ImageLook:
    """Per-subject acquisition look: bias field, noise level and pixel scale (see ``finish_image``)."""

    bias: BiasField
    noise_sigma: float
    scale: float
    n_sub: int = 3  # sub-samples across the slice thickness (partial volume)
    psf_mm: float = 0.6


def random_look(
    rng: np.random.Generator, centre_lps: np.ndarray, noise: tuple[float, float] = (0.025, 0.045),
    scale: tuple[float, float] = (900.0, 1400.0), psf_mm: float = 0.6,
) -> ImageLook:
    """A random ``ImageLook`` for one subject (bias field centred on ``centre_lps``)."""
    bias = random_bias_field(rng, centre_lps)
    return ImageLook(bias, float(rng.uniform(*noise)), float(rng.uniform(*scale)), psf_mm=psf_mm)
