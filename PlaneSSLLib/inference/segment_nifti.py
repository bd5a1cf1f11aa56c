"""Cardiac segmentation of a NIfTI SAX volume: the label map on the input's own voxel grid.

A NIfTI SAX volume (ACDC's ``patientNNN_frameNN.nii.gz``, M&Ms-2's ``NNN_SA_ED.nii.gz``, or any
``(x, y, slices)`` volume) or a 4D cine ``(x, y, slices, time)`` is read with its affine; each
slice's plane comes from the affine (``dicom.nifti.planes_from_affine_ras``), so the slices are
prepared, segmented and mapped back exactly as DICOM slices are (``inference.segment.segment_images``).
The result has the input's shape (3D; 4D for the frames of a cine) and affine, uint8 ACDC labels.

:func:`read_sax_nifti` refuses, with the file named, what is not a SAX volume: an unreadable or
non-NIfTI file, a 2D image (one slice), a volume of more than four dimensions, and a label map
given as input (a ``_gt`` file, or integer values within the label range only).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..dicom.nifti import planes_from_affine_ras, slice_image
from ..errors import InputError
from .segment import SegModel, segment_images

__all__ = ["NIFTI_SUFFIXES", "SaxNifti", "is_nifti_path", "read_sax_nifti", "segment_nifti", "write_label_like"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


@dataclass
class SaxNifti:
    """A NIfTI SAX volume: ``data`` ``(x, y, slices[, frames])`` in modality values, its affine and header."""

    path: Path
    data: np.ndarray
    affine_ras: np.ndarray
    header: object  # nibabel header of the input (codes and units are carried over)

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[3]) if self.data.ndim == 4 else 1

    def frame(self, t: int) -> np.ndarray:
        return self.data[..., t] if self.data.ndim == 4 else self.data


def read_sax_nifti(path: str | Path) -> SaxNifti:
    """Read and check a NIfTI SAX volume or cine (module docstring); InputError naming the file otherwise."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a file that is not NIfTI
        raise InputError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI volume ({type(img).__name__})")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim < 3 or data.shape[2] < 2:
        raise InputError(f"{path}: a 2D image (shape {data.shape}), not a SAX volume; predict seg needs a stack of "
                         "short-axis slices (x, y, slices) or a cine (x, y, slices, time)")
    if data.ndim > 4:
        raise InputError(f"{path}: {data.ndim} dimensions (shape {data.shape}); expected (x, y, slices) or "
                         "(x, y, slices, time)")
    name = path.name.lower()
    if name.endswith(("_gt.nii.gz", "_gt.nii")) or (
            np.issubdtype(data.dtype, np.integer) and data.size and int(data.min()) >= 0 and int(data.max()) <= 3):
        raise InputError(f"{path}: looks like a label map (integer values 0-{int(data.max())} only), not an image; "
                         "give the image volume it labels")
    try:
        planes_from_affine_ras(img.affine, data.shape)
    except ValueError as exc:
        raise InputError(f"{path}: unusable affine ({exc})") from None
    return SaxNifti(path, data, np.asarray(img.affine, dtype=np.float64), img.header)


def segment_nifti(model: SegModel, volume: SaxNifti, frames: Sequence[int] | None = None, lcc: bool = True,
                  batch_size: int = 16) -> np.ndarray:
    """Labels uint8 on the input grid: ``(x, y, slices)`` for a 3D volume or one frame, else
    ``(x, y, slices, len(frames))`` (default every frame of a cine). InputError for a frame out of range."""
    planes = planes_from_affine_ras(volume.affine_ras, volume.data.shape)
    chosen = list(range(volume.n_frames)) if frames is None else [int(t) for t in frames]
    for t in chosen:
        if not 0 <= t < volume.n_frames:
            raise InputError(f"{volume.path}: frame {t} out of range (the volume has {volume.n_frames})")
    out = []
    for t in chosen:
        vol = np.asarray(volume.frame(t), dtype=np.float32)
        pixels = [slice_image(vol, k) for k in range(vol.shape[2])]
        labels = segment_images(model, pixels, planes, lcc, batch_size)  # (k, rows, cols)
        out.append(np.ascontiguousarray(np.transpose(labels, (2, 1, 0))))  # (cols, rows, k)
    return out[0] if len(out) == 1 and (volume.data.ndim == 3 or frames is not None) else np.stack(out, axis=-1)


def write_label_like(path: str | Path, labels: np.ndarray, volume: SaxNifti) -> Path:
    """Write ``labels`` as a NIfTI file with the input volume's affine (and its qform/sform codes), atomically."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), volume.affine_ras)
    header = volume.header
    qcode = int(header["qform_code"]) if hasattr(header, "__getitem__") else 1
    scode = int(header["sform_code"]) if hasattr(header, "__getitem__") else 1
    img.set_qform(volume.affine_ras, code=qcode or 1)
    img.set_sform(volume.affine_ras, code=scode or 1)
    img.header.set_xyzt_units("mm")
    data = img.to_bytes()
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
    return Path(path)
