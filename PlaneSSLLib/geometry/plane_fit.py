"""One plane through lines found in parallel slices: the long-axis views planned from a short-axis stack.

Every long-axis view (2CH, 3CH, 4CH) cuts each short-axis (SAX) slice along a line; taken over the
stack, those lines lie in the view's plane. :func:`fit_plane_to_lines` recovers that plane from
one line per slice (patient LPS, mm) with a confidence, robustly: apical and basal slices, where
the lines are least reliable, must not pull the plane.

Each line enters as a segment of ``2·half_length_mm`` centred on its point nearest a reference
axis (the LV centre line, :func:`stack_axis_points_lps`); a plane holds a line exactly when it holds
both ends, so the fit is a weighted total-least-squares plane through the segment ends. A slice's
residual is the RMS distance (mm) of its two ends from the plane. Robustness:

1. initial plane: of the planes through every pair of slices' segments, the one with the lowest
   confidence-weighted Tukey loss of all slices' residuals (a RANSAC over all pairs; stacks
   hold at most a few tens of slices);
2. iteratively reweighted least squares with Tukey's biweight, scale ``max(1.4826·MAD,
   scale_floor_mm)``: a slice whose residual exceeds ``tukey_c`` scales gets weight 0.

Numpy only (docs/conventions.md, 'Layers').
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .planes import ImagePlane, angle_between_normals_deg, unit

__all__ = [
    "SliceLine",
    "PlaneFit",
    "fit_plane_to_lines",
    "stack_axis_points_lps",
    "proposed_view_plane",
    "long_axis_from_planes",
    "fit_axis_line",
    "fit_plane_about_axis",
]

#: Tukey's biweight constant (in scales): 95 % efficiency on Gaussian residuals.
TUKEY_C = 4.685


@dataclass(frozen=True)
class SliceLine:
    """A line in one slice, in patient coordinates: a point on it, its unit direction, a confidence in [0, 1]."""

    slice_index: int
    point_lps: np.ndarray
    direction_lps: np.ndarray
    confidence: float = 1.0


@dataclass
class PlaneFit:
    """A fitted plane: a point on it (LPS mm), its unit normal, and per input line the slice, the
    RMS distance of its segment from the plane (mm), its final weight and whether it counted (weight > 0)."""

    point_lps: np.ndarray
    normal_lps: np.ndarray
    slice_indices: list[int]
    residuals_mm: np.ndarray
    weights: np.ndarray
    iterations: int
    scale: float  # the robust scale of the last iteration: mm (fit_plane_to_lines) or degrees (fit_plane_about_axis)
    notes: list[str] = field(default_factory=list)

    @property
    def inliers(self) -> np.ndarray:
        return self.weights > 0

    def distance_mm(self, points_lps: np.ndarray) -> np.ndarray:
        """Signed distance of points ``(..., 3)`` from the plane along ``normal_lps`` (mm)."""
        return (np.asarray(points_lps, np.float64) - self.point_lps) @ self.normal_lps

    def angle_to_deg(self, normal_lps: np.ndarray) -> float:
        """Angle between this plane and a plane of normal ``normal_lps`` (degrees, [0, 90])."""
        return angle_between_normals_deg(self.normal_lps, normal_lps)


def _tls_plane(points: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted total-least-squares plane (centroid, unit normal) of points ``(n, 3)``."""
    w = weights / weights.sum()
    centroid = w @ points
    d = points - centroid
    cov = (d * w[:, None]).T @ d
    _, evecs = np.linalg.eigh(cov)
    return centroid, unit(evecs[:, 0])


def _segment_ends(lines: Sequence[SliceLine], axis_points: np.ndarray | None, half_length_mm: float) -> np.ndarray:
    """``(n, 2, 3)`` segment ends of each line, centred on its point nearest the line's axis point."""
    ends = np.zeros((len(lines), 2, 3))
    for i, line in enumerate(lines):
        p, d = np.asarray(line.point_lps, np.float64), unit(line.direction_lps)
        if axis_points is not None:
            p = p + float((axis_points[i] - p) @ d) * d
        ends[i] = (p - half_length_mm * d, p + half_length_mm * d)
    return ends


def _residuals_mm(ends: np.ndarray, centroid: np.ndarray, normal: np.ndarray) -> np.ndarray:
    dist = (ends - centroid) @ normal
    return np.sqrt(np.mean(dist**2, axis=1))


def _tukey_weights(r: np.ndarray, c: float) -> np.ndarray:
    u = r / c
    return np.where(np.abs(u) < 1.0, (1.0 - u**2) ** 2, 0.0)


def _tukey_loss(r: np.ndarray, c: float) -> np.ndarray:
    u = np.minimum(np.abs(r) / c, 1.0)
    return (c**2 / 6.0) * (1.0 - (1.0 - u**2) ** 3)


def fit_plane_to_lines(
    lines: Sequence[SliceLine],
    axis_points_lps: Sequence[np.ndarray] | np.ndarray | None = None,
    half_length_mm: float = 40.0,
    scale_floor_mm: float = 1.0,
    tukey_c: float = TUKEY_C,
    max_iterations: int = 50,
) -> PlaneFit:
    """The plane holding lines of parallel slices, robust to outlier slices (module docstring).

    ``axis_points_lps``: per line, a point (the slice's LV centre) its segment is centred on;
    None centres each segment on the line's own point. Lines of confidence 0 are ignored.
    Raises ValueError when fewer than two slices carry a line.
    """
    keep = [i for i, line in enumerate(lines) if line.confidence > 0]
    if len({lines[i].slice_index for i in keep}) < 2:
        raise ValueError(f"a plane needs lines in at least two slices ({len(keep)} line(s) with a confidence)")
    used = [lines[i] for i in keep]
    axis = None if axis_points_lps is None else np.asarray(axis_points_lps, np.float64)[keep]
    ends = _segment_ends(used, axis, half_length_mm)
    conf = np.array([min(max(float(line.confidence), 0.0), 1.0) for line in used])
    n = len(used)
    pts = ends.reshape(-1, 3)

    # 1. RANSAC over every pair of slices: the pair plane with the lowest weighted Tukey loss.
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    c0 = tukey_c * max(scale_floor_mm, 1e-9) * 3.0  # a generous first cut-off (mm)
    for i, j in combinations(range(n), 2):
        if used[i].slice_index == used[j].slice_index:
            continue
        c, nrm = _tls_plane(np.concatenate([ends[i], ends[j]]), np.ones(4))
        loss = float(conf @ _tukey_loss(_residuals_mm(ends, c, nrm), c0))
        if best is None or loss < best[0]:
            best = (loss, c, nrm)
    assert best is not None
    _, centroid, normal = best

    # 2. IRLS with Tukey's biweight around it.
    weights = conf.copy()
    scale = scale_floor_mm
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        r = _residuals_mm(ends, centroid, normal)
        mad = float(np.median(np.abs(r[conf > 0])))
        scale = max(1.4826 * mad, scale_floor_mm)
        new_weights = conf * _tukey_weights(r, tukey_c * scale)
        if new_weights.sum() <= 0 or np.count_nonzero(new_weights) < 2:
            break
        new_centroid, new_normal = _tls_plane(pts, np.repeat(new_weights, 2))
        if new_normal @ normal < 0:
            new_normal = -new_normal
        moved = float(np.linalg.norm(new_normal - normal)) + float(abs((new_centroid - centroid) @ new_normal)) / 100
        centroid, normal, weights = new_centroid, new_normal, new_weights
        if moved < 1e-10:
            break
    residuals = _residuals_mm(ends, centroid, normal)
    # Report every input line (ignored ones with weight 0 and their residual).
    all_res = np.full(len(lines), np.nan)
    all_w = np.zeros(len(lines))
    for k, i in enumerate(keep):
        all_res[i], all_w[i] = residuals[k], weights[k]
    notes = []
    dropped = [lines[i].slice_index for i in keep if all_w[i] == 0]
    if dropped:
        notes.append(f"slices {dropped} left out as outliers")
    return PlaneFit(centroid, normal, [line.slice_index for line in lines], all_res, all_w, iterations, scale, notes)


def stack_axis_points_lps(slice_lines: Sequence[Sequence[SliceLine]], planes: Sequence[ImagePlane]) -> np.ndarray:
    """Per slice, the point nearest (least squares, confidence-weighted) to all of its lines: where the
    long-axis views cross, the LV centre. ``(k, 3)``. Slices with fewer than two crossing lines get the
    median in-plane position of the others (or the image centre when no slice has one)."""
    k = len(planes)
    points = np.full((k, 3), np.nan)
    for i, (lines, plane) in enumerate(zip(slice_lines, planes, strict=True)):
        good = [line for line in lines if line.confidence > 0]
        if len(good) < 2:
            continue
        a = np.zeros((3, 3))
        b = np.zeros(3)
        for line in good:
            d = unit(line.direction_lps)
            proj = np.eye(3) - np.outer(d, d)
            a += line.confidence * proj
            b += line.confidence * proj @ np.asarray(line.point_lps, np.float64)
        n = plane.normal_lps
        a += np.outer(n, n)  # stay in the slice
        b += np.outer(n, n) @ plane.centre_lps
        if np.linalg.cond(a) > 1e6:  # parallel lines: no crossing
            continue
        points[i] = np.linalg.solve(a, b)
    found = ~np.isnan(points[:, 0])
    if not found.any():
        return np.stack([p.centre_lps for p in planes])
    # In-plane offsets from each image centre; fill the rest with the median offset.
    offsets = np.stack([points[i] - planes[i].centre_lps for i in range(k) if found[i]])
    median = np.median(offsets, axis=0)
    for i in range(k):
        if not found[i]:
            n = planes[i].normal_lps
            points[i] = planes[i].centre_lps + median - float(median @ n) * n
    return points


def long_axis_from_planes(normal_a_lps: np.ndarray, normal_b_lps: np.ndarray,
                          towards_lps: np.ndarray | None = None) -> np.ndarray:
    """Unit direction of the line where two planes meet (the LV long axis from the 2CH and 4CH
    planes), turned towards ``towards_lps`` when given."""
    d = unit(np.cross(normal_a_lps, normal_b_lps))
    if towards_lps is not None and d @ np.asarray(towards_lps, np.float64) < 0:
        d = -d
    return d


def proposed_view_plane(point_lps: np.ndarray, normal_lps: np.ndarray, apex_direction_lps: np.ndarray,
                        spacing_mm: float, fov_mm: float) -> ImagePlane:
    """An image plane a scanner could acquire: centred on ``point_lps``, square field of view
    ``fov_mm`` at ``spacing_mm``, the apex up (rows run from the apex towards the base along the
    long axis ``apex_direction_lps`` projected into the plane), ``x × y`` = ``normal_lps``."""
    n = unit(normal_lps)
    y = -np.asarray(apex_direction_lps, np.float64)
    y = y - float(y @ n) * n
    if np.linalg.norm(y) < 1e-6:  # the plane is perpendicular to the long axis: any in-plane direction
        y = np.cross(n, [1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.cross(n, [0.0, 1.0, 0.0])
    y = unit(y)
    x = unit(np.cross(y, n))
    size = max(int(np.ceil(fov_mm / spacing_mm)), 1)
    return ImagePlane.centred(point_lps, x, y, (spacing_mm, spacing_mm), (size, size))


# ---------------------------------------------------------------------- views sharing the LV long axis
def fit_axis_line(points_lps: np.ndarray, weights: np.ndarray | None = None, scale_floor_mm: float = 1.0,
                  tukey_c: float = TUKEY_C, max_iterations: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A robust 3D line through points ``(k, 3)`` (the LV centres of the SAX slices): ``(point, unit direction,
    final weights)``; Tukey IRLS on the points' distances to the line, scale ``max(1.4826·MAD, floor)``."""
    pts = np.asarray(points_lps, np.float64)
    w0 = np.ones(len(pts)) if weights is None else np.asarray(weights, np.float64)
    if np.count_nonzero(w0 > 0) < 2:
        raise ValueError("a line needs at least two points")
    w = w0.copy()
    centre, direction = pts[0], unit(pts[-1] - pts[0]) if len(pts) > 1 else np.array([0.0, 0.0, 1.0])
    for _ in range(max_iterations):
        ww = w / w.sum()
        centre = ww @ pts
        d = pts - centre
        _, evecs = np.linalg.eigh((d * ww[:, None]).T @ d)
        new_dir = evecs[:, -1]
        off = d - np.outer(d @ new_dir, new_dir)
        r = np.linalg.norm(off, axis=1)
        scale = max(1.4826 * float(np.median(r[w0 > 0])), scale_floor_mm)
        new_w = w0 * _tukey_weights(r, tukey_c * scale)
        converged = abs(abs(float(new_dir @ direction)) - 1.0) < 1e-12 and np.allclose(new_w, w)
        direction = new_dir
        if np.count_nonzero(new_w) < 2:
            break
        w = new_w
        if converged:
            break
    return centre, unit(direction), w


def fit_plane_about_axis(lines: Sequence[SliceLine], axis_point_lps: np.ndarray, axis_direction_lps: np.ndarray,
                         axis_points_lps: Sequence[np.ndarray] | np.ndarray | None = None,
                         half_length_mm: float = 40.0, scale_floor_deg: float = 1.0, tukey_c: float = TUKEY_C,
                         max_iterations: int = 50) -> PlaneFit:
    """The plane that holds a given axis (the LV long axis) and best follows the lines' directions.

    One unknown, the angle about the axis: each line's direction, projected perpendicular to the
    axis, votes for the plane through the axis along it (doubled-angle mean, weighted by confidence;
    Tukey IRLS on the angular residuals, scale ``max(1.4826·MAD, scale_floor_deg)``). The residuals
    reported are, as in :func:`fit_plane_to_lines`, the RMS distance (mm) of each line's segment ends
    from the plane.
    """
    keep = [i for i, line in enumerate(lines) if line.confidence > 0]
    if len({lines[i].slice_index for i in keep}) < 2:
        raise ValueError(f"a plane needs lines in at least two slices ({len(keep)} line(s) with a confidence)")
    a = unit(axis_direction_lps)
    b1 = unit(np.cross(a, [1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.cross(a, [0.0, 1.0, 0.0]))
    b2 = np.cross(a, b1)
    used = [lines[i] for i in keep]
    conf = np.array([min(max(float(line.confidence), 0.0), 1.0) for line in used])
    theta = np.empty(len(used))
    for k, line in enumerate(used):
        d = unit(line.direction_lps)
        theta[k] = np.arctan2(float(d @ b2), float(d @ b1))  # direction of the line about the axis
    w = conf.copy()
    phi = 0.0
    scale = np.radians(scale_floor_deg)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        phi_new = 0.5 * float(np.arctan2(w @ np.sin(2 * theta), w @ np.cos(2 * theta)))
        r = np.abs(np.angle(np.exp(2j * (theta - phi_new)))) / 2  # in [0, π/2]
        scale = max(1.4826 * float(np.median(r)), np.radians(scale_floor_deg))
        new_w = conf * _tukey_weights(r, tukey_c * scale)
        done = abs(phi_new - phi) < 1e-12
        phi = phi_new
        if np.count_nonzero(new_w) < 1:
            break
        w = new_w
        if done:
            break
    in_plane = np.cos(phi) * b1 + np.sin(phi) * b2
    normal = unit(np.cross(a, in_plane))
    axis = None if axis_points_lps is None else np.asarray(axis_points_lps, np.float64)[keep]
    ends = _segment_ends(used, axis, half_length_mm)
    point = np.asarray(axis_point_lps, np.float64)
    residuals = _residuals_mm(ends, point, normal)
    all_res = np.full(len(lines), np.nan)
    all_w = np.zeros(len(lines))
    for k, i in enumerate(keep):
        all_res[i], all_w[i] = residuals[k], w[k]
    notes = []
    dropped = [lines[i].slice_index for i in keep if all_w[i] == 0]
    if dropped:
        notes.append(f"slices {dropped} left out as outliers")
    return PlaneFit(point, normal, [line.slice_index for line in lines], all_res, all_w, iterations,
                    float(np.degrees(scale)), notes)
