"""Image planes in patient coordinates (DICOM LPS, millimetres).

Conventions (docs/conventions.md, 'Image planes and pixels'):

- ``origin_lps`` is ImagePositionPatient: the centre of the pixel in row 0, column 0.
- ``x_dir_lps`` is ImageOrientationPatient[0:3], the direction of increasing column index.
- ``y_dir_lps`` is ImageOrientationPatient[3:6], the direction of increasing row index.
- ``spacing_mm`` is PixelSpacing as DICOM stores it: ``(row spacing, column spacing)``, i.e.
  ``(Δr, Δc)``: the distance between the centres of adjacent rows, then of adjacent columns.
- Pixel coordinates are ``(x = column, y = row)``, 0-based, integers at pixel centres.
  The centre of pixel (c, r) lies at ``o + c·Δc·x + r·Δr·y``.
- The image rectangle in pixel coordinates is ``[-0.5, cols-0.5] × [-0.5, rows-0.5]``.

This module is numpy only: no torch, no pydicom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ImagePlane", "MAX_PIXEL_SPACING_MM", "MIN_PIXEL_SPACING_MM", "unit", "orthonormal_tolerance"]

#: How far ImageOrientationPatient may be from orthonormal before a plane is refused.
orthonormal_tolerance = 1e-3


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length (float64); raises ValueError for a zero vector."""
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"cannot normalise vector {v!r}")
    return v / n


#: Pixel spacings an image may have (mm): beyond them no scanner wrote it, and resampling to the
#: prepared grid (anti-aliasing with a kernel of target / source spacing) would allocate without bound.
MIN_PIXEL_SPACING_MM = 1e-3
MAX_PIXEL_SPACING_MM = 1e3

@dataclass(frozen=True, eq=False)
class ImagePlane:
    """One 2D image's geometry in patient LPS millimetres.

    Attributes:
        origin_lps: (3,) centre of pixel (column 0, row 0), mm.
        x_dir_lps: (3,) unit vector of increasing column index.
        y_dir_lps: (3,) unit vector of increasing row index.
        spacing_mm: (row spacing Δr, column spacing Δc), as DICOM PixelSpacing.
        shape_px: (rows, columns).
    """

    origin_lps: np.ndarray
    x_dir_lps: np.ndarray
    y_dir_lps: np.ndarray
    spacing_mm: tuple[float, float]
    shape_px: tuple[int, int]

    def __post_init__(self) -> None:
        # Plain-float arithmetic: planes are built once per frame while scanning thousands of
        # files, and numpy's per-call overhead on 3-vectors dominated that cost.
        try:
            o = [float(v) for v in np.ravel(self.origin_lps)]
            x = [float(v) for v in np.ravel(self.x_dir_lps)]
            y = [float(v) for v in np.ravel(self.y_dir_lps)]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"plane position/orientation is not numeric: {exc}") from exc
        if len(o) != 3 or len(x) != 3 or len(y) != 3:
            raise ValueError("plane position and orientation vectors need 3 values each")
        if not all(math.isfinite(v) for v in (*o, *x, *y)):
            raise ValueError("plane has non-finite position or orientation")
        nx = math.sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2])
        ny = math.sqrt(y[0] * y[0] + y[1] * y[1] + y[2] * y[2])
        if abs(nx - 1) > 0.01 or abs(ny - 1) > 0.01:
            raise ValueError(f"orientation vectors are not unit length (|x|={nx:.4f}, |y|={ny:.4f})")
        x = [v / nx for v in x]
        y = [v / ny for v in y]
        xy = x[0] * y[0] + x[1] * y[1] + x[2] * y[2]
        if abs(xy) > 0.01:
            raise ValueError(f"orientation vectors are not orthogonal (x·y={xy:.4f})")
        # Re-orthogonalise y against x so that tiny rounding in the header cannot bias lines.
        y = [yi - xy * xi for xi, yi in zip(x, y, strict=True)]
        ny = math.sqrt(y[0] * y[0] + y[1] * y[1] + y[2] * y[2])
        y = [v / ny for v in y]
        dr, dc = (float(v) for v in self.spacing_mm)
        if not (dr > 0 and dc > 0 and math.isfinite(dr) and math.isfinite(dc)):
            raise ValueError(f"pixel spacing must be positive, got {self.spacing_mm!r}")
        low, high = MIN_PIXEL_SPACING_MM, MAX_PIXEL_SPACING_MM
        if not (low <= dr <= high and low <= dc <= high):
            raise ValueError(f"pixel spacing {dr:g} x {dc:g} mm is outside {low:g}..{high:g} mm "
                             f"(resampling such an image would allocate without bound)")
        rows, cols = (int(v) for v in self.shape_px)
        if rows < 1 or cols < 1:
            raise ValueError(f"image shape must be positive, got {self.shape_px!r}")
        normal = [x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]]
        for name, value in (("origin_lps", o), ("x_dir_lps", x), ("y_dir_lps", y), ("_normal", normal)):
            arr = np.array(value, dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "spacing_mm", (dr, dc))
        object.__setattr__(self, "shape_px", (rows, cols))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dicom(
        cls,
        image_position_patient: Sequence[float],
        image_orientation_patient: Sequence[float],
        pixel_spacing: Sequence[float],
        rows: int,
        columns: int,
    ) -> ImagePlane:
        """Plane from the DICOM attributes (IPP, IOP, PixelSpacing = [Δr, Δc], Rows, Columns)."""
        iop = np.asarray([float(v) for v in image_orientation_patient], dtype=np.float64)
        if iop.shape != (6,):
            raise ValueError(f"ImageOrientationPatient needs 6 values, got {len(iop)}")
        ipp = np.asarray([float(v) for v in image_position_patient], dtype=np.float64)
        if ipp.shape != (3,):
            raise ValueError(f"ImagePositionPatient needs 3 values, got {len(ipp)}")
        ps = [float(v) for v in pixel_spacing]
        if len(ps) != 2:
            raise ValueError(f"PixelSpacing needs 2 values, got {len(ps)}")
        return cls(ipp, iop[:3], iop[3:], (ps[0], ps[1]), (int(rows), int(columns)))

    @classmethod
    def centred(
        cls,
        centre_lps: Sequence[float],
        x_dir_lps: Sequence[float],
        y_dir_lps: Sequence[float],
        spacing_mm: tuple[float, float],
        shape_px: tuple[int, int],
    ) -> ImagePlane:
        """Plane whose image centre (the middle of the rectangle) lies at ``centre_lps``."""
        x, y = unit(x_dir_lps), unit(y_dir_lps)
        rows, cols = shape_px
        dr, dc = spacing_mm
        origin = np.asarray(centre_lps, float) - (cols - 1) / 2 * dc * x - (rows - 1) / 2 * dr * y
        return cls(origin, x, y, spacing_mm, shape_px)

    # ------------------------------------------------------------------ derived geometry
    @property
    def normal_lps(self) -> np.ndarray:
        """Unit normal ``n = x × y`` (LPS), read-only."""
        return self._normal

    @property
    def rows(self) -> int:
        return self.shape_px[0]

    @property
    def columns(self) -> int:
        return self.shape_px[1]

    @property
    def centre_lps(self) -> np.ndarray:
        """Patient position of the centre of the image rectangle (mm)."""
        return self.pixel_to_lps(np.array([(self.columns - 1) / 2, (self.rows - 1) / 2]))

    @property
    def image_orientation_patient(self) -> list[float]:
        return [float(v) for v in (*self.x_dir_lps, *self.y_dir_lps)]

    @property
    def image_position_patient(self) -> list[float]:
        return [float(v) for v in self.origin_lps]

    @property
    def pixel_spacing(self) -> list[float]:
        """DICOM PixelSpacing: [row spacing Δr, column spacing Δc] (mm)."""
        return [self.spacing_mm[0], self.spacing_mm[1]]

    def pixel_to_lps(self, xy_px: np.ndarray) -> np.ndarray:
        """Map pixel coordinates ``(..., 2)`` as (column, row) to patient LPS ``(..., 3)`` mm."""
        xy = np.asarray(xy_px, dtype=np.float64)
        dr, dc = self.spacing_mm
        return (
            self.origin_lps
            + xy[..., 0:1] * (dc * self.x_dir_lps)
            + xy[..., 1:2] * (dr * self.y_dir_lps)
        )

    def lps_to_pixel(self, points_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project patient points ``(..., 3)`` into the image.

        Returns ``(xy_px, offset_mm)``: pixel coordinates (column, row) of the orthogonal
        projection, and the signed distance from the plane along ``normal_lps``.
        """
        d = np.asarray(points_lps, dtype=np.float64) - self.origin_lps
        dr, dc = self.spacing_mm
        col = d @ self.x_dir_lps / dc
        row = d @ self.y_dir_lps / dr
        return np.stack([col, row], axis=-1), d @ self.normal_lps

    def pixel_grid_lps(self) -> np.ndarray:
        """Patient position of every pixel centre, shape ``(rows, cols, 3)`` (mm)."""
        r, c = np.meshgrid(np.arange(self.rows), np.arange(self.columns), indexing="ij")
        return self.pixel_to_lps(np.stack([c, r], axis=-1))

    def corners_lps(self) -> np.ndarray:
        """The four corners of the image rectangle (pixel edges, not centres), (4, 3) mm."""
        c, r = self.columns - 0.5, self.rows - 0.5
        return self.pixel_to_lps(np.array([[-0.5, -0.5], [c, -0.5], [c, r], [-0.5, r]]))

    def affine_pixel_to_lps(self, slice_spacing_mm: float | None = None) -> np.ndarray:
        """4×4 matrix mapping (column, row, slice, 1) to (L, P, S, 1).

        The third axis runs along ``normal_lps`` with ``slice_spacing_mm`` (default: the
        mean in-plane spacing, for a single image).
        """
        dr, dc = self.spacing_mm
        dz = float(slice_spacing_mm) if slice_spacing_mm is not None else (dr + dc) / 2
        m = np.eye(4)
        m[:3, 0] = self.x_dir_lps * dc
        m[:3, 1] = self.y_dir_lps * dr
        m[:3, 2] = self.normal_lps * dz
        m[:3, 3] = self.origin_lps
        return m

    def signed_distance_mm(self, points_lps: np.ndarray) -> np.ndarray:
        """Signed distance of points ``(..., 3)`` from the plane along ``normal_lps`` (mm)."""
        return (np.asarray(points_lps, dtype=np.float64) - self.origin_lps) @ self.normal_lps

    def slice_location_mm(self, stack_normal_lps: np.ndarray | None = None) -> float:
        """``s = n̂ · o``: position along a stack normal (default: this plane's normal)."""
        n = self.normal_lps if stack_normal_lps is None else unit(stack_normal_lps)
        return float(n @ self.origin_lps)

    def is_same_plane(self, other: ImagePlane, tol_mm: float = 1e-3, tol_deg: float = 0.1) -> bool:
        """True when both images lie in the same plane (orientation and position)."""
        if angle_between_normals_deg(self.normal_lps, other.normal_lps) > tol_deg:
            return False
        return abs(float(self.normal_lps @ (other.origin_lps - self.origin_lps))) <= tol_mm

    def __repr__(self) -> str:
        o = ", ".join(f"{v:.2f}" for v in self.origin_lps)
        n = ", ".join(f"{v:.3f}" for v in self.normal_lps)
        return (
            f"ImagePlane(origin_lps=[{o}], normal_lps=[{n}], "
            f"spacing_mm={self.spacing_mm}, shape_px={self.shape_px})"
        )


def angle_between_normals_deg(n_a: np.ndarray, n_b: np.ndarray) -> float:
    """Unsigned angle between two planes given their normals, in degrees in [0, 90]."""
    c = abs(float(unit(n_a) @ unit(n_b)))
    # arccos is ill-conditioned near 1; use the cross-product norm for small angles.
    s = float(np.linalg.norm(np.cross(unit(n_a), unit(n_b))))
    return float(np.degrees(np.arctan2(s, c)))
