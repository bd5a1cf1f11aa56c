"""Where one imaging plane cuts another: plane∩plane lines in 3D and in each image.

A line in an image is kept in implicit form ``a·x + b·y + d = 0`` over pixel coordinates
(x = column, y = row; 0-based, integer at pixel centres), normalised so that ``a² + b² = 1``;
``|a·x + b·y + d|`` is then the perpendicular distance in pixels, which is what the
heatmap targets of the line pretext task need (docs/conventions.md, 'Pretext targets').

Note on non-square pixels: plane B cuts image A where
``n_B · (o_A + x·Δc·x_A + y·Δr·y_A − o_B) = 0``, so the pixel-space coefficients carry Δc on
the column term and Δr on the row term. Swapping them (as the reference code does) moves the
line whenever Δr ≠ Δc.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .planes import ImagePlane, angle_between_normals_deg, unit

__all__ = [
    "PARALLEL_TOLERANCE_DEG",
    "ImageLine",
    "Segment2D",
    "PlanePairLines",
    "image_line",
    "intersection_line_lps",
    "clip_line_to_rect",
    "intersect_images",
    "distance_to_line_px",
]

#: Planes whose normals lie within this angle are treated as parallel (docs/conventions.md, 'Lines JSON').
PARALLEL_TOLERANCE_DEG = 0.1


@dataclass(frozen=True)
class ImageLine:
    """An infinite line ``a·x + b·y + d = 0`` in pixel coordinates with ``a² + b² = 1``."""

    a: float
    b: float
    d: float

    @property
    def normal_px(self) -> np.ndarray:
        return np.array([self.a, self.b])

    @property
    def direction_px(self) -> np.ndarray:
        """Unit direction along the line, (dx, dy) in pixel coordinates."""
        return np.array([-self.b, self.a])

    @property
    def foot_px(self) -> np.ndarray:
        """Point of the line closest to the pixel-coordinate origin."""
        return -self.d * self.normal_px

    def signed_distance_px(self, xy_px: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy_px, dtype=np.float64)
        return xy[..., 0] * self.a + xy[..., 1] * self.b + self.d

    @classmethod
    def through_points(cls, p0: np.ndarray, p1: np.ndarray) -> ImageLine:
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        t = unit(p1 - p0)
        a, b = -t[1], t[0]
        return cls(float(a), float(b), float(-(a * p0[0] + b * p0[1])))


@dataclass(frozen=True)
class Segment2D:
    """A line segment in pixel coordinates (x = column, y = row)."""

    p0: tuple[float, float]
    p1: tuple[float, float]

    def as_dict(self) -> dict[str, list[float]]:
        return {"p0": [float(self.p0[0]), float(self.p0[1])], "p1": [float(self.p1[0]), float(self.p1[1])]}

    @property
    def length_px(self) -> float:
        return float(np.hypot(self.p1[0] - self.p0[0], self.p1[1] - self.p0[1]))


@dataclass(frozen=True)
class PlanePairLines:
    """The relation of two images: the contract of ``planessl lines`` (docs/conventions.md, 'Lines JSON')."""

    parallel: bool
    angle_deg: float
    in_a: Segment2D | None
    in_b: Segment2D | None

    def as_dict(self) -> dict:
        return {
            "parallel": bool(self.parallel),
            "angle_deg": float(self.angle_deg),
            "in_a": None if self.in_a is None else self.in_a.as_dict(),
            "in_b": None if self.in_b is None else self.in_b.as_dict(),
        }


def image_line(image: ImagePlane, cutting: ImagePlane, tol_deg: float = PARALLEL_TOLERANCE_DEG) -> ImageLine | None:
    """The line along which plane ``cutting`` crosses ``image``, in ``image``'s pixel coordinates.

    Returns None when the two planes are parallel within ``tol_deg``.
    """
    if angle_between_normals_deg(image.normal_lps, cutting.normal_lps) <= tol_deg:
        return None
    n_b = cutting.normal_lps
    dr, dc = image.spacing_mm
    a = dc * float(n_b @ image.x_dir_lps)
    b = dr * float(n_b @ image.y_dir_lps)
    d = float(n_b @ (image.origin_lps - cutting.origin_lps))
    norm = float(np.hypot(a, b))
    if norm < 1e-15:  # pragma: no cover - only reachable with tol_deg == 0
        return None
    return ImageLine(a / norm, b / norm, d / norm)


def intersection_line_lps(
    plane_a: ImagePlane, plane_b: ImagePlane, tol_deg: float = PARALLEL_TOLERANCE_DEG
) -> tuple[np.ndarray, np.ndarray] | None:
    """The 3D line shared by two planes: ``(point_lps, unit_direction_lps)``, or None if parallel.

    The point returned is the one closest to the midpoint of the two image centres.
    """
    n1, n2 = plane_a.normal_lps, plane_b.normal_lps
    if angle_between_normals_deg(n1, n2) <= tol_deg:
        return None
    direction = unit(np.cross(n1, n2))
    # Solve for the point on both planes nearest to a reference point q: minimise |p - q|²
    # subject to n1·p = h1, n2·p = h2 (3 unknowns + 2 multipliers), closed form via
    # projection onto the line's orthogonal complement.
    q = (plane_a.centre_lps + plane_b.centre_lps) / 2
    h1, h2 = float(n1 @ plane_a.origin_lps), float(n2 @ plane_b.origin_lps)
    m = np.array([n1, n2, direction])
    rhs = np.array([h1, h2, float(direction @ q)])
    point = np.linalg.solve(m, rhs)
    return point, direction


def clip_line_to_rect(
    line: ImageLine, shape_px: tuple[int, int], margin_px: float = 0.5
) -> Segment2D | None:
    """Clip an infinite line to the image rectangle ``[-m, cols-1+m] × [-m, rows-1+m]``.

    With the default ``margin_px = 0.5`` that is the image rectangle (docs/conventions.md, 'Image planes and
    pixels'). Returns None when the line misses the rectangle (or only touches a corner).
    """
    rows, cols = shape_px
    xmin, xmax = -margin_px, cols - 1 + margin_px
    ymin, ymax = -margin_px, rows - 1 + margin_px
    p = line.foot_px
    t = line.direction_px
    # Liang–Barsky on an infinite parameter range.
    lo, hi = -np.inf, np.inf
    for p_i, t_i, vmin, vmax in ((p[0], t[0], xmin, xmax), (p[1], t[1], ymin, ymax)):
        if abs(t_i) < 1e-15:
            if p_i < vmin or p_i > vmax:
                return None
            continue
        s0, s1 = (vmin - p_i) / t_i, (vmax - p_i) / t_i
        if s0 > s1:
            s0, s1 = s1, s0
        lo, hi = max(lo, s0), min(hi, s1)
    if not (hi - lo > 1e-9):
        return None
    q0, q1 = p + lo * t, p + hi * t
    # A stable order: p0 -> p1 runs towards +x along mostly horizontal lines and towards +y
    # along mostly vertical ones (ordering by x alone flips on rounding for vertical lines).
    d = q1 - q0
    if (d[0] < 0) if abs(d[0]) >= abs(d[1]) else (d[1] < 0):
        q0, q1 = q1, q0
    return Segment2D((float(q0[0]), float(q0[1])), (float(q1[0]), float(q1[1])))


def intersect_images(
    plane_a: ImagePlane, plane_b: ImagePlane, tol_deg: float = PARALLEL_TOLERANCE_DEG
) -> PlanePairLines:
    """Angle between two images and their intersection line clipped to each image."""
    angle = angle_between_normals_deg(plane_a.normal_lps, plane_b.normal_lps)
    if angle <= tol_deg:
        return PlanePairLines(True, angle, None, None)
    line_a = image_line(plane_a, plane_b, tol_deg)
    line_b = image_line(plane_b, plane_a, tol_deg)
    seg_a = None if line_a is None else clip_line_to_rect(line_a, plane_a.shape_px)
    seg_b = None if line_b is None else clip_line_to_rect(line_b, plane_b.shape_px)
    return PlanePairLines(False, angle, seg_a, seg_b)


def distance_to_line_px(line: ImageLine, shape_px: tuple[int, int]) -> np.ndarray:
    """Perpendicular distance (pixels) from every pixel centre to ``line``, shape ``(rows, cols)``."""
    rows, cols = shape_px
    x = np.arange(cols, dtype=np.float64)[None, :]
    y = np.arange(rows, dtype=np.float64)[:, None]
    return np.abs(line.a * x + line.b * y + line.d)
