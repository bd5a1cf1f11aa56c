"""What the adapters share: the error type and small CSV/NIfTI readers that name the file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ...errors import PlaneSSLError

__all__ = ["AdapterError", "read_csv_rows", "require_dir", "require_file", "load_nifti", "check_labels"]


class AdapterError(PlaneSSLError, ValueError):
    """A data set tree that does not follow its layout; the message names the file and the problem."""


def require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise AdapterError(f"{path}: no such directory ({what})")
    return path


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"{path}: missing ({what})")
    return path


def read_csv_rows(path: Path, header: bool = True) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of a CSV (``header`` empty when the file has none); AdapterError names the file."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            rows = [[c.strip() for c in r] for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AdapterError(f"{path}: cannot read ({exc})") from None
    if header:
        if not rows:
            raise AdapterError(f"{path}: empty (a header line was expected)")
        return rows[0], rows[1:]
    return [], rows


def load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """``(array, 4×4 affine, voxel spacing)`` of a NIfTI file (nibabel); AdapterError names the file."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a bad file
        raise AdapterError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    spacing = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    return data, np.asarray(img.affine, dtype=np.float64), spacing


def check_labels(path: Path, labels: np.ndarray, allowed: tuple[int, ...], convention: str) -> np.ndarray:
    """Integer label map with values in ``allowed``; AdapterError naming the file and the odd values."""
    values = np.unique(labels)
    if not np.all(np.isclose(values, np.round(values))):
        raise AdapterError(f"{path}: label map holds non-integer values (expected {convention})")
    odd = sorted(set(np.round(values).astype(np.int64).tolist()) - set(allowed))
    if odd:
        raise AdapterError(f"{path}: label values {odd[:8]} outside the convention ({convention})")
    return np.round(labels).astype(np.uint8)
