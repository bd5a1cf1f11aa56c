"""The NIfTI label-map codec: label maps of a stack of parallel DICOM slices, aligned with its geometry.

Used to write phantom labels (``phantoms.cohort``) and predicted segmentations (``planessl predict seg``),
and to read them back.

Voxel ``(i, j, k)`` = (column, row, slice); the slices are ordered along the stack's DICOM
normal (increasing ``s = n̂ · o``), so the affine is right-handed and equals
``affine_lps_to_ras(first.affine_pixel_to_lps(spacing))`` for the first slice in that order.
Files are gzip-compressed without a timestamp or file name, so they are byte-reproducible.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from ..atomic import atomic_write_bytes
from ..geometry.frames import affine_lps_to_ras, affine_ras_to_lps
from ..geometry.planes import ImagePlane
from ..geometry.stacks import are_parallel, slice_locations_mm

__all__ = ["stack_affine_ras", "stack_order", "write_label_nifti", "read_label_nifti", "planes_from_affine_ras",
           "read_nifti_frames", "slice_image"]


def stack_order(planes: Sequence[ImagePlane]) -> np.ndarray:
    """Indices of ``planes`` sorted by increasing location along the first plane's normal."""
    return np.argsort(slice_locations_mm(planes, planes[0].normal_lps), kind="stable")


def stack_affine_ras(planes: Sequence[ImagePlane], tol_mm: float = 1e-3) -> np.ndarray:
    """4×4 voxel (column, row, slice) → RAS mm affine of an equally spaced stack of parallel planes.

    Raises ValueError when the planes are not parallel, not equally spaced, or differ in shape
    or pixel spacing.
    """
    if len(planes) < 1:
        raise ValueError("empty stack")
    first = planes[0]
    for p in planes[1:]:
        if not are_parallel(first, p) or p.shape_px != first.shape_px or p.spacing_mm != first.spacing_mm:
            raise ValueError("the stack's planes differ in orientation, shape or pixel spacing")
    ordered = [planes[i] for i in stack_order(planes)]
    s = slice_locations_mm(ordered, first.normal_lps)
    gap = float(np.median(np.diff(s))) if len(s) > 1 else 1.0
    if len(s) > 1 and np.max(np.abs(np.diff(s) - gap)) > tol_mm:
        raise ValueError("the stack's slices are not equally spaced")
    affine_lps = ordered[0].affine_pixel_to_lps(gap)
    # The slices must lie on the stack line through the first origin (no in-plane shifts).
    for k, p in enumerate(ordered):
        expect = affine_lps @ np.array([0.0, 0.0, k, 1.0])
        if np.linalg.norm(expect[:3] - p.origin_lps) > 10 * tol_mm:
            raise ValueError("the stack's slices are shifted in-plane against each other")
    return affine_lps_to_ras(affine_lps)


def write_label_nifti(path: str | os.PathLike, labels: Sequence[np.ndarray], planes: Sequence[ImagePlane]) -> Path:
    """Write per-slice label images ``(rows, cols)`` of ``planes`` as one .nii.gz volume (uint8).

    ``labels[i]`` belongs to ``planes[i]`` (any order); the file holds them ordered along the
    normal with the affine of ``stack_affine_ras``. Written atomically.
    """
    if len(labels) != len(planes):
        raise ValueError("one label image per plane is needed")
    affine = stack_affine_ras(planes)
    order = stack_order(planes)
    vol = np.stack([np.asarray(labels[i], dtype=np.uint8).T for i in order], axis=-1)  # (cols, rows, k)
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    data = gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
    return Path(path)


def read_label_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(labels ``(cols, rows, k)`` uint8, voxel → RAS affine) of a label file written here."""
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.uint8), np.asarray(img.affine, dtype=np.float64)


def planes_from_affine_ras(affine_ras: np.ndarray, shape: Sequence[int]) -> list[ImagePlane]:
    """One :class:`ImagePlane` per slice ``k`` of a NIfTI volume ``(cols, rows, slices[, ...])``.

    The inverse of :func:`stack_affine_ras`: the affine (voxel → RAS mm, as NIfTI stores it) is
    turned into LPS; voxel ``(i, j, k)`` is (column, row, slice), so slice ``k``'s image is
    ``volume[:, :, k].T`` (:func:`slice_image`) with origin ``A·(0, 0, k)``, column direction
    ``A[:, 0]`` and row direction ``A[:, 1]`` (normalised; their lengths are the pixel spacing).
    Raises ValueError for a degenerate or sheared affine (the plane checks name the problem).
    """
    if len(shape) < 3:
        raise ValueError(f"a volume of at least 3 dimensions is needed, got shape {tuple(shape)}")
    a = affine_ras_to_lps(np.asarray(affine_ras, dtype=np.float64))
    col, row = a[:3, 0], a[:3, 1]
    dc, dr = float(np.linalg.norm(col)), float(np.linalg.norm(row))
    if not (np.isfinite(dc) and np.isfinite(dr)) or dc <= 0 or dr <= 0:
        raise ValueError(f"the affine's in-plane voxel size is not positive ({dc:.4g}, {dr:.4g} mm)")
    planes = []
    for k in range(int(shape[2])):
        origin = (a @ np.array([0.0, 0.0, float(k), 1.0]))[:3]
        planes.append(ImagePlane(origin, col / dc, row / dr, (dr, dc), (int(shape[1]), int(shape[0]))))
    return planes


def read_nifti_frames(path: str | os.PathLike, frame_indices: Sequence[int]) -> list[np.ndarray]:
    """Frames of a NIfTI volume ``(cols, rows, slices[, phases])``, each float32 ``(rows, cols)``.

    ``frame_index = phase * slices + slice`` (``dicom.containers``); scaling (scl_slope/inter) applied.
    Raises ValueError for an index out of range or a volume of fewer than 3 dimensions.
    """
    img = nib.load(str(path))
    shape = img.shape
    if len(shape) < 3:
        raise ValueError(f"a volume of at least 3 dimensions is needed, got shape {tuple(shape)}")
    n_slices = int(shape[2])
    n_phases = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    # a gzip stream cannot seek: slicing it frame by frame inflates it again each time, so several
    # frames are cut from the volume read once
    source = np.asanyarray(img.dataobj) if len(frame_indices) > 1 else img.dataobj
    out = []
    for f in frame_indices:
        k, t = int(f) % n_slices, int(f) // n_slices
        if not 0 <= t < n_phases:
            raise ValueError(f"frame {f} out of range ({n_slices} slices x {n_phases} phases)")
        extra = tuple(int(v) for v in np.unravel_index(t, shape[3:])) if len(shape) > 3 else ()
        index = (slice(None), slice(None), k) + extra
        out.append(np.asarray(source[index], dtype=np.float32).T)
    return out


def slice_image(volume: np.ndarray, k: int) -> np.ndarray:
    """Slice ``k`` of a ``(cols, rows, slices)`` NIfTI volume as a ``(rows, cols)`` image."""
    return np.asarray(volume[:, :, k]).T
