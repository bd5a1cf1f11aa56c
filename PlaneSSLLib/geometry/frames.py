"""Patient coordinate frames: DICOM LPS and Slicer/NIfTI RAS (both millimetres).

LPS: +x towards the patient's Left, +y Posterior, +z Superior (DICOM).
RAS: +x Right, +y Anterior, +z Superior (Slicer, NIfTI). The two differ by a sign on x and y.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LPS_TO_RAS", "lps_to_ras", "ras_to_lps", "affine_lps_to_ras", "affine_ras_to_lps"]

#: 4×4 homogeneous matrix flipping x and y; it is its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(points_lps: np.ndarray) -> np.ndarray:
    """Points or directions ``(..., 3)`` from LPS to RAS."""
    p = np.array(points_lps, dtype=np.float64)
    p[..., :2] *= -1
    return p


def ras_to_lps(points_ras: np.ndarray) -> np.ndarray:
    """Points or directions ``(..., 3)`` from RAS to LPS."""
    return lps_to_ras(points_ras)


def affine_lps_to_ras(affine_to_lps: np.ndarray) -> np.ndarray:
    """A 4×4 map *into* LPS (e.g. IJK→LPS) turned into the same map into RAS (IJK→RAS)."""
    return LPS_TO_RAS @ np.asarray(affine_to_lps, dtype=np.float64)


def affine_ras_to_lps(affine_to_ras: np.ndarray) -> np.ndarray:
    """A 4×4 map into RAS turned into the same map into LPS."""
    return LPS_TO_RAS @ np.asarray(affine_to_ras, dtype=np.float64)
