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
from ..geometry.frames import affine_lps_to_ras
from ..geometry.planes import ImagePlane
from ..geometry.stacks import are_parallel, slice_locations_mm

__all__ = ["stack_affine_ras", "stack_order", "write_label_nifti", "read_label_nifti"]


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
