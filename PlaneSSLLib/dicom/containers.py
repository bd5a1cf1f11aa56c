"""Where a frame's bytes live when they are not a plain DICOM file: a zip member, a NIfTI volume, a NumPy stack.

A frame keeps one ``path`` (``records.Frame``); for the containers read here it means:

- **zip member**: ``ARCHIVE.zip/MEMBER`` — a path whose part ending in ``.zip`` is a regular file
  (UK Biobank: one zip per subject and field, DICOM members at its root, a ``manifest.csv`` or
  the misspelled ``manifest.cvs`` beside them). :func:`zip_member` splits it; members are read
  into memory, never unpacked to disk.
- **NIfTI volume** (``.nii``, ``.nii.gz``): ``frame_index = phase * n_slices + slice`` over the
  volume ``(cols, rows, slices[, phases])`` (``dicom.nifti.read_nifti_frames``).
- **NumPy stack** (``.npy``, MRNet): ``frame_index`` = the slice of a ``(slices, rows, cols)`` array.

Every failure is reported by the callers with the path (archive/member) named.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

__all__ = ["MANIFEST_NAMES", "is_nifti", "is_npy", "manifest_filenames", "read_zip_member", "zip_member"]

#: The names a UK Biobank zip's manifest goes by (the release misspells many as ``.cvs``).
MANIFEST_NAMES = ("manifest.csv", "manifest.cvs")


def is_nifti(path: Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def is_npy(path: Path) -> bool:
    return Path(path).suffix.lower() == ".npy"


def zip_member(path: Path) -> tuple[Path, str] | None:
    """``(archive, member)`` when ``path`` is ``ARCHIVE.zip/MEMBER`` with ARCHIVE a regular file, else None."""
    path = Path(path)
    if ".zip" not in str(path).lower():
        return None
    for parent in path.parents:
        if parent.suffix.lower() == ".zip" and parent.is_file():
            return parent, path.relative_to(parent).as_posix()
    return None


def read_zip_member(path: Path) -> bytes:
    """The bytes of the zip member ``ARCHIVE.zip/MEMBER``; OSError/BadZipFile/KeyError as zipfile raises them."""
    split = zip_member(path)
    if split is None:
        raise FileNotFoundError(f"{path}: not inside a zip archive")
    archive, member = split
    with zipfile.ZipFile(archive) as zf:
        return zf.read(member)


def manifest_filenames(data: bytes) -> list[str]:
    """The ``filename`` column of a UK Biobank manifest (first column when no header names it).

    The release writes dates as ``Aug 30, 2015`` in unquoted fields, so a row may hold more fields
    than the header; only the file name (the first field) is taken, which that cannot shift.
    """
    text = data.decode("utf-8-sig", errors="replace")
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    column = header.index("filename") if "filename" in header else 0
    body = rows[1:] if "filename" in header else rows
    return [r[column].strip() for r in body if len(r) > column and r[column].strip()]
