"""Image planes from DICOM headers: classic single-frame and enhanced multi-frame objects."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from ..errors import PlaneSSLError
from ..geometry.planes import ImagePlane

__all__ = ["GeometryError", "number_of_frames", "plane_from_dataset"]


class GeometryError(PlaneSSLError, ValueError):
    """A DICOM object lacks usable plane geometry; the message says which attribute."""


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _first(seq: Sequence[Dataset] | None) -> Dataset | None:
    return seq[0] if seq else None


def _functional_attr(ds: Dataset, frame: int, sequence: str, attr: str):
    """Look up ``sequence > attr`` in the per-frame, then the shared functional groups."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        item = _first(per_frame[frame].get(sequence))
        if item is not None and attr in item:
            return item.get(attr)
    shared = _first(ds.get("SharedFunctionalGroupsSequence"))
    if shared is not None:
        item = _first(shared.get(sequence))
        if item is not None and attr in item:
            return item.get(attr)
    return None


def plane_from_dataset(ds: Dataset, frame: int = 0) -> ImagePlane:
    """The plane of frame ``frame`` (0-based) of a DICOM image.

    Classic images carry ImagePositionPatient / ImageOrientationPatient / PixelSpacing at the
    top level; enhanced multi-frame images carry them in the Plane Position, Plane Orientation
    and Pixel Measures functional groups (per-frame or shared). Raises GeometryError naming the
    missing or invalid attribute.
    """
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise GeometryError("Rows/Columns missing")
    n_frames = number_of_frames(ds)
    if not 0 <= frame < n_frames:
        raise GeometryError(f"frame {frame} out of range (NumberOfFrames = {n_frames})")
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        ipp = _functional_attr(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
        iop = _functional_attr(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps = _functional_attr(ds, frame, "PixelMeasuresSequence", "PixelSpacing")
    else:
        ipp, iop, ps = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
    if ipp is None:
        raise GeometryError("ImagePositionPatient missing")
    if iop is None:
        raise GeometryError("ImageOrientationPatient missing")
    if ps is None:
        # ImagerPixelSpacing is at the detector, not the patient: wrong for MR geometry.
        raise GeometryError("PixelSpacing missing")
    try:
        return ImagePlane.from_dicom(ipp, iop, ps, int(rows), int(cols))
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"invalid plane geometry: {exc}") from exc
