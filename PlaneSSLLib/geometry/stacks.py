"""Stacks of parallel planes: common normal, slice locations, relative position, spacing.

``s = n̂ · o`` is a slice's location (mm) along the stack's unit normal ``n̂`` (docs/conventions.md,
'Plane and line geometry'); the relative location target is ``(s − s_min)/(s_max − s_min)`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .lines import PARALLEL_TOLERANCE_DEG
from .planes import ImagePlane, angle_between_normals_deg, unit

__all__ = [
    "are_parallel",
    "stack_normal_lps",
    "slice_locations_mm",
    "relative_locations",
    "order_along_normal",
    "slice_spacing_mm",
    "group_parallel",
]


def are_parallel(a: ImagePlane, b: ImagePlane, tol_deg: float = PARALLEL_TOLERANCE_DEG) -> bool:
    return angle_between_normals_deg(a.normal_lps, b.normal_lps) <= tol_deg


def stack_normal_lps(planes: Sequence[ImagePlane]) -> np.ndarray:
    """Mean unit normal of (nearly) parallel planes, signs aligned to the first plane's."""
    if not planes:
        raise ValueError("empty stack")
    ref = planes[0].normal_lps
    acc = np.zeros(3)
    for p in planes:
        n = p.normal_lps
        acc += n if float(n @ ref) >= 0 else -n
    return unit(acc)


def slice_locations_mm(planes: Sequence[ImagePlane], normal_lps: np.ndarray | None = None) -> np.ndarray:
    """``s = n̂ · o`` of every plane along ``normal_lps`` (default: the stack's mean normal)."""
    n = stack_normal_lps(planes) if normal_lps is None else unit(normal_lps)
    return np.array([float(n @ p.origin_lps) for p in planes])


def relative_locations(locations_mm: np.ndarray) -> np.ndarray:
    """``(s − s_min)/(s_max − s_min)``; raises ValueError for fewer than two distinct locations."""
    s = np.asarray(locations_mm, dtype=np.float64)
    if s.size < 2:
        raise ValueError("a relative location needs a stack of at least two slices")
    span = float(s.max() - s.min())
    if span <= 1e-6:
        raise ValueError("all slices of the stack lie at the same location")
    return (s - s.min()) / span


def order_along_normal(planes: Sequence[ImagePlane], normal_lps: np.ndarray | None = None) -> np.ndarray:
    """Indices sorting ``planes`` by increasing location along the normal (stable)."""
    return np.argsort(slice_locations_mm(planes, normal_lps), kind="stable")


def slice_spacing_mm(planes: Sequence[ImagePlane], normal_lps: np.ndarray | None = None) -> float | None:
    """Median gap between consecutive distinct slice locations; None for a single location."""
    s = np.unique(np.round(slice_locations_mm(planes, normal_lps), 4))
    if s.size < 2:
        return None
    return float(np.median(np.diff(s)))


def group_parallel(planes: Sequence[ImagePlane], tol_deg: float = 1.0) -> list[list[int]]:
    """Greedy grouping of plane indices whose normals agree within ``tol_deg`` (sign-free)."""
    groups: list[list[int]] = []
    refs: list[np.ndarray] = []
    for i, p in enumerate(planes):
        n = p.normal_lps
        for g, ref in zip(groups, refs, strict=True):
            if angle_between_normals_deg(n, ref) <= tol_deg:
                g.append(i)
                break
        else:
            groups.append([i])
            refs.append(n)
    return groups
