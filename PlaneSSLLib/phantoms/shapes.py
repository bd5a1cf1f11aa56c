"""Implicit shapes and small frame helpers for the phantoms (vectorised numpy, millimetres).

Shapes are evaluated on points given as three coordinate arrays ``(a, b, c)`` of one frame
(patient LPS or an organ frame); every function works element-wise on arrays of any shape and
never loops over points. Organ frames are given by an origin in LPS and three unit axes in LPS;
``to_frame`` maps LPS points into such a frame once, so the shapes of an organ can be written in
the organ's own coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import numpy as np

from ..geometry.planes import unit

__all__ = [
    "Coords",
    "to_frame",
    "ellipsoid_r2",
    "inside_ellipsoid",
    "segment_distance2",
    "inside_capsule",
    "polyline_distance2",
    "rotation_matrix",
    "perturb_direction",
    "orthonormal_in_plane",
    "plane_axes",
    "rotate_in_plane",
]

#: Three coordinate arrays of equal shape (mm), one per axis of a frame.
Coords = tuple[np.ndarray, np.ndarray, np.ndarray]


def to_frame(points_lps: np.ndarray, origin_lps: np.ndarray, axes_lps: np.ndarray) -> Coords:
    """Coordinates (mm) of LPS points ``(..., 3)`` along the rows of ``axes_lps`` (3, 3) from ``origin_lps``.

    The result is float32 (shape evaluation needs no more than 0.01 mm), computed element-wise so it
    is bit-reproducible.
    """
    p = np.asarray(points_lps, dtype=np.float64)
    o = np.asarray(origin_lps, dtype=np.float64)
    ax = np.asarray(axes_lps, dtype=np.float64)
    d = [(p[..., i] - o[i]).astype(np.float32) for i in range(3)]
    # Element-wise products rather than a BLAS matrix product: BLAS results may depend on
    # threading and memory alignment, and a last-bit difference could flip a tissue boundary
    # between two runs (the files must be byte-identical for a seed).
    out = []
    for row in ax.astype(np.float32):
        out.append(d[0] * row[0] + d[1] * row[1] + d[2] * row[2])
    return out[0], out[1], out[2]


def ellipsoid_r2(q: Coords, centre: Sequence[float], semi_mm: Sequence[float]) -> np.ndarray:
    """Normalised squared radius ``Σ ((q_i - c_i)/s_i)²``: < 1 inside the ellipsoid (axis-aligned)."""
    r2 = ((q[0] - np.float32(centre[0])) * np.float32(1.0 / semi_mm[0])) ** 2
    r2 += ((q[1] - np.float32(centre[1])) * np.float32(1.0 / semi_mm[1])) ** 2
    r2 += ((q[2] - np.float32(centre[2])) * np.float32(1.0 / semi_mm[2])) ** 2
    return r2


def inside_ellipsoid(q: Coords, centre: Sequence[float], semi_mm: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points inside an axis-aligned ellipsoid (frame of ``q``)."""
    return ellipsoid_r2(q, centre, semi_mm) <= 1.0


def segment_distance2(q: Coords, p0: Sequence[float], p1: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance (mm²) from each point to the segment p0→p1, and the segment parameter t ∈ [0, 1]."""
    d = np.asarray(p1, np.float64) - np.asarray(p0, np.float64)
    dd = float(d @ d)
    r = (q[0] - np.float32(p0[0]), q[1] - np.float32(p0[1]), q[2] - np.float32(p0[2]))
    t = (r[0] * np.float32(d[0]) + r[1] * np.float32(d[1]) + r[2] * np.float32(d[2])) * np.float32(1.0 / dd)
    np.clip(t, 0.0, 1.0, out=t)
    dist2 = (r[0] - t * np.float32(d[0])) ** 2
    dist2 += (r[1] - t * np.float32(d[1])) ** 2
    dist2 += (r[2] - t * np.float32(d[2])) ** 2
    return dist2, t


def inside_capsule(q: Coords, p0: Sequence[float], p1: Sequence[float], radius_mm: float) -> np.ndarray:
    """Boolean mask of the points within ``radius_mm`` of the segment p0→p1."""
    return segment_distance2(q, p0, p1)[0] <= radius_mm * radius_mm


def polyline_distance2(q: Coords, points: Sequence[Sequence[float]]) -> np.ndarray:
    """Squared distance (mm²) from each point to a polyline through ``points``."""
    best = None
    for p0, p1 in zip(points[:-1], points[1:], strict=True):
        d2 = segment_distance2(q, p0, p1)[0]
        best = d2 if best is None else np.minimum(best, d2, out=best)
    if best is None:
        raise ValueError("a polyline needs at least two points")
    return best


def rotation_matrix(axis: Sequence[float], angle_rad: float) -> np.ndarray:
    """3×3 rotation by ``angle_rad`` about ``axis`` (right-hand rule), Rodrigues' formula."""
    k = unit(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * kx + (1 - np.cos(angle_rad)) * (kx @ kx)


def perturb_direction(rng: np.random.Generator, direction: Sequence[float], max_deg: float) -> np.ndarray:
    """``direction`` tilted by a random angle up to ``max_deg`` about a random perpendicular axis."""
    d = unit(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    p1 = unit(np.cross(d, helper))
    p2 = np.cross(d, p1)
    phi = rng.uniform(0, 2 * np.pi)
    axis = np.cos(phi) * p1 + np.sin(phi) * p2
    angle = np.radians(max_deg) * np.sqrt(rng.uniform(0, 1))
    return unit(rotation_matrix(axis, angle) @ d)


def orthonormal_in_plane(vector: Sequence[float], normal: Sequence[float]) -> np.ndarray:
    """Unit projection of ``vector`` onto the plane perpendicular to ``normal``."""
    n = unit(normal)
    v = np.asarray(vector, np.float64)
    return unit(v - (v @ n) * n)


def plane_axes(
    normal: Sequence[float], x_hint: Sequence[float], y_hint: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Row/column directions (x_dir, y_dir) of an image plane with the given plane normal (either sign).

    ``x_dir`` is ``x_hint`` projected into the plane; ``y_dir`` is the in-plane perpendicular
    closest to ``y_hint``. The DICOM normal ``x_dir × y_dir`` is then ``±normal``, as a scanner
    planning "anterior up, patient left on the right" would choose it.
    """
    x = orthonormal_in_plane(x_hint, normal)
    y = unit(np.cross(unit(normal), x))
    if float(y @ np.asarray(y_hint, np.float64)) < 0:
        y = -y
    return x, y


def rotate_in_plane(x_dir: np.ndarray, y_dir: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Both in-plane axes turned by ``angle_deg`` about the plane normal (x towards y)."""
    a = np.radians(angle_deg)
    x = np.cos(a) * x_dir + np.sin(a) * y_dir
    y = -np.sin(a) * x_dir + np.cos(a) * y_dir
    return unit(x), unit(y)


def extended_tissues(name: str, base: type[IntEnum], extra: dict[str, int], doc: str) -> type[IntEnum]:
    """A tissue-code enum holding every code of ``base`` (same names and values) and then ``extra``: a
    phantom's richer look keeps its simpler look's codes, so both render through one look-up table."""
    clash = sorted(set(extra) & {t.name for t in base} | {str(v) for v in extra.values()} & {str(int(t)) for t in base})
    if clash:
        raise ValueError(f"{name}: codes {clash} already in {base.__name__}")
    tissues = IntEnum(name, [(t.name, int(t)) for t in base] + list(extra.items()), module=base.__module__)
    tissues.__doc__ = doc
    return tissues
