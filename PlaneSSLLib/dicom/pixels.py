"""Reading pixel values of scanned frames as float32 modality values.

Decoding goes through pydicom 3's pixel backend and its plugins: native little/big endian and
implicit/explicit VR, deflated, RLE (pydicom itself or pylibjpeg-rle), JPEG 2000
(pylibjpeg-openjpeg), JPEG-LS (pyjpegls), JPEG lossless process 14 / SV1 and JPEG baseline
(pylibjpeg-libjpeg). Rescale Slope/Intercept are applied (for enhanced multi-frame images,
from each frame's Pixel Value Transformation functional group, else the shared one).

Arrays are indexed ``[row, column]`` (``[y, x]`` in the pixel coordinates of docs/conventions.md,
'Image planes and pixels').
Every failure raises ``PixelReadError`` whose message names the file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array
from pydicom.uid import UID, ImplicitVRLittleEndian

from ..errors import PlaneSSLError
from .containers import is_nifti, is_npy, read_zip_member, zip_member
from .nifti import read_nifti_frames
from .planes import number_of_frames
from .records import Frame, Position, Series
from .scan import functional_item

__all__ = [
    "PixelReadError",
    "read_file_frames",
    "read_frame_pixels",
    "read_position_pixels",
    "read_series_pixels",
    "rescale_for_frame",
]

_PLUGIN_HINT = (
    "install pydicom's pixel plugins: pylibjpeg with pylibjpeg-openjpeg (JPEG 2000), "
    "pylibjpeg-libjpeg (JPEG baseline/lossless), pylibjpeg-rle (RLE), pyjpegls (JPEG-LS)"
)


class PixelReadError(PlaneSSLError, RuntimeError):
    """Pixel data could not be read or decoded; the message names the file and the reason."""


def read_frame_pixels(frame: Frame) -> np.ndarray:
    """Modality values of one frame, float32 ``(rows, cols)``."""
    return read_file_frames(frame.path, [frame.frame_index])[0]


def read_position_pixels(position: Position) -> np.ndarray:
    """All phases of one position, float32 ``(phases, rows, cols)`` in ``position.frames`` order.

    Each file is opened once, however many of the position's frames it holds.
    """
    return _read_frames(position.frames)


def read_series_pixels(series: Series) -> np.ndarray:
    """A whole series, float32 ``(slices, phases, rows, cols)``: positions along the normal.

    Raises PixelReadError when positions differ in phase count or image size (no padding is
    invented). Each file is read once.
    """
    if not series.positions:
        raise PixelReadError(f"{series.folder}: series {series.key} has no positions to read")
    counts = {len(p.frames) for p in series.positions}
    if len(counts) > 1:
        raise PixelReadError(
            f"{series.folder}: series {series.key} has {min(counts)} to {max(counts)} phases per position"
        )
    frames = [f for p in series.positions for f in p.frames]
    shapes = {f.plane.shape_px for f in frames}
    if len(shapes) > 1:
        raise PixelReadError(f"{series.folder}: series {series.key} mixes image sizes {sorted(shapes)}")
    arr = _read_frames(frames)
    return arr.reshape(len(series.positions), counts.pop(), *arr.shape[1:])


def read_file_frames(path: Path, frame_indices: Sequence[int]) -> list[np.ndarray]:
    """Frames ``frame_indices`` (0-based) of the file at ``path``, each float32 ``(rows, cols)``.

    ``path`` may also be a zip member ``ARCHIVE.zip/MEMBER``, a NIfTI volume or a NumPy stack
    (``dicom.containers``: what ``frame_indices`` means there).
    """
    path = Path(path)
    if is_nifti(path) or is_npy(path):
        try:
            return read_nifti_frames(path, frame_indices) if is_nifti(path) else _npy_frames(path, frame_indices)
        except (OSError, ValueError, IndexError, EOFError) as exc:
            raise PixelReadError(f"{path}: cannot read ({type(exc).__name__}: {' '.join(str(exc).split())})") \
                from None
        except Exception as exc:  # noqa: BLE001 - nibabel/numpy raise many types for a damaged file
            raise PixelReadError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    ds = _read_dataset(path)
    n = number_of_frames(ds)
    bad = [i for i in frame_indices if not 0 <= i < n]
    if bad:
        raise PixelReadError(f"{path}: frame {bad[0]} out of range (the file has {n} frames)")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise PixelReadError(f"{path}: colour images (SamplesPerPixel {ds.SamplesPerPixel}) are not supported")
    decoded = _decode(path, ds, sorted(set(frame_indices)), n)
    out = []
    for i in frame_indices:
        slope, intercept = rescale_for_frame(ds, i)
        arr = decoded[i].astype(np.float32)
        if slope != 1.0 or intercept != 0.0:
            arr = arr * np.float32(slope) + np.float32(intercept)
        out.append(arr)
    return out


def rescale_for_frame(ds: Dataset, frame: int) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of ``frame``: per-frame/shared functional group, else top level."""
    item = functional_item(ds, frame, "PixelValueTransformationSequence")
    for source in (item, ds):
        if source is not None and "RescaleSlope" in source:
            try:
                return float(source.RescaleSlope), float(source.get("RescaleIntercept", 0.0) or 0.0)
            except (TypeError, ValueError):
                break
    return 1.0, 0.0


# ----------------------------------------------------------------------------- internals
def _read_frames(frames: Sequence[Frame]) -> np.ndarray:
    by_file: dict[Path, list[int]] = {}
    for f in frames:
        by_file.setdefault(f.path, []).append(f.frame_index)
    arrays = {path: dict(zip(idx, read_file_frames(path, idx), strict=True)) for path, idx in by_file.items()}
    return np.stack([arrays[f.path][f.frame_index] for f in frames])


def _npy_frames(path: Path, frame_indices: Sequence[int]) -> list[np.ndarray]:
    """Slices of a ``(slices, rows, cols)`` NumPy stack (MRNet), float32."""
    stack = np.load(path, mmap_mode="r", allow_pickle=False)
    if stack.ndim != 3:
        raise ValueError(f"expected a (slices, rows, cols) array, got shape {stack.shape}")
    return [np.asarray(stack[i], dtype=np.float32) for i in frame_indices]


def _read_dataset(path: Path) -> Dataset:
    source: Path | io.BytesIO = path
    try:
        if zip_member(path) is not None:
            source = io.BytesIO(read_zip_member(path))
        try:
            ds = pydicom.dcmread(source, force=False)
        except InvalidDicomError:
            if isinstance(source, io.BytesIO):
                source.seek(0)
            ds = pydicom.dcmread(source, force=True)  # no preamble: the scanner accepted it
    except FileNotFoundError as exc:
        raise PixelReadError(f"{path}: no such file") from exc
    except Exception as exc:  # noqa: BLE001 - any failure of the reader names the file
        raise PixelReadError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise PixelReadError(f"{path}: no Pixel Data")
    meta = ds.file_meta
    if not meta.get("TransferSyntaxUID"):
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def _decode(path: Path, ds: Dataset, indices: list[int], n_frames: int) -> dict[int, np.ndarray]:
    """Decoded stored values of ``indices`` (whole file at once when most frames are wanted)."""
    ts = UID(ds.file_meta.TransferSyntaxUID)
    try:
        if n_frames == 1 or len(indices) > n_frames // 2:
            arr = pixel_array(ds)
            arr = arr.reshape(n_frames, *arr.shape[-2:])
            return {i: arr[i] for i in indices}
        return {i: pixel_array(ds, index=i) for i in indices}
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; re-raised with the file named
        message = " ".join(str(exc).split())
        hint = f"; {_PLUGIN_HINT}" if "plugin" in message.lower() or isinstance(exc, NotImplementedError) else ""
        raise PixelReadError(f"{path}: cannot decode {ts.name} pixel data ({message}){hint}") from exc
