"""The SAX stack resampled on a proposed long-axis plane: the planned 2CH/3CH/4CH images.

Each pixel of the target plane is a patient point (LPS mm); its position along the stack normal
picks the two SAX slices around it (linear between them; within half a slice spacing beyond the
first and last slice the end slice is used, farther out the pixel is 0) and within each slice the
point's projection is sampled bilinearly (``ImagePlane.lps_to_pixel``, so slices with their own
in-plane offsets are handled). Written as a one-slice NIfTI volume (voxel ``(i, j, 0)`` = (column,
row), affine voxel → RAS as docs/conventions.md, 'Segmentation labels'), gzip without timestamp.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..atomic import atomic_write_bytes
from ..dicom.pixels import read_frame_pixels
from ..dicom.records import Frame
from ..dicom.stacks import SaxStack
from ..errors import InputError
from ..geometry.frames import affine_lps_to_ras
from ..geometry.planes import ImagePlane, unit
from ..geometry.stacks import stack_normal_lps

if TYPE_CHECKING:
    from .plan_views import StudyPlan

__all__ = ["reformat_stack", "write_plane_nifti", "write_reformatted_dicom", "write_reformatted_views"]


def reformat_stack(pixels: Sequence[np.ndarray], planes: Sequence[ImagePlane], target: ImagePlane) -> np.ndarray:
    """The stack ``pixels[k]`` on ``planes[k]`` (parallel slices) resampled on ``target``: float32 ``(rows, cols)``."""
    n = unit(stack_normal_lps(list(planes)))
    s = np.array([float(n @ p.origin_lps) for p in planes])
    order = np.argsort(s)
    s = s[order]
    points = target.pixel_grid_lps().reshape(-1, 3)
    samples = np.zeros((len(planes), len(points)), np.float32)
    for row, k in enumerate(order):
        xy, _ = planes[k].lps_to_pixel(points)
        samples[row] = ndimage.map_coordinates(np.asarray(pixels[k], np.float32), [xy[:, 1], xy[:, 0]], order=1,
                                               mode="constant", cval=0.0, prefilter=False)
    sp = points @ n
    half = float(np.median(np.diff(s))) / 2 if len(s) > 1 else 1.0
    f = np.interp(sp, s, np.arange(len(s), dtype=np.float64))
    lo = np.floor(f).astype(int)
    hi = np.minimum(lo + 1, len(s) - 1)
    t = (f - lo).astype(np.float32)
    idx = np.arange(len(points))
    out = (1 - t) * samples[lo, idx] + t * samples[hi, idx]
    out[(sp < s[0] - half) | (sp > s[-1] + half)] = 0.0
    return out.reshape(target.shape_px).astype(np.float32)


def write_plane_nifti(path: str | Path, image: np.ndarray, plane: ImagePlane) -> Path:
    """One image ``(rows, cols)`` on ``plane`` as a one-slice .nii.gz (float32), written atomically."""
    affine = affine_lps_to_ras(plane.affine_pixel_to_lps())
    img = nib.Nifti1Image(np.asarray(image, np.float32).T[:, :, None], affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return atomic_write_bytes(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


def write_reformatted_views(stack: SaxStack, plan: StudyPlan, phase: int, out_dir: str | Path,
                            dicom: bool = False) -> dict[str, dict[str, str]]:
    """Per proposed view, ``OUT/<VIEW>_proposed.nii.gz`` and with ``dicom`` a derived MR image
    ``OUT/<VIEW>_proposed.dcm`` (:func:`write_reformatted_dicom`); returns ``{view: {"nifti": name[, "dicom":
    name]}}``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = [read_frame_pixels(pos.frames[phase]) for pos in stack.positions]
    frames = [pos.frames[phase] for pos in stack.positions]
    trigger = frames[0].trigger_time_ms
    written: dict[str, dict[str, str]] = {}
    for number, (view, vp) in enumerate(plan.views.items()):
        image = reformat_stack(pixels, stack.planes, vp.proposed)
        name = f"{view}_proposed.nii.gz"
        write_plane_nifti(Path(out_dir) / name, image, vp.proposed)
        written[view] = {"nifti": name}
        if dicom:
            dcm = f"{view}_proposed.dcm"
            write_reformatted_dicom(Path(out_dir) / dcm, image, vp.proposed, view, frames, trigger,
                                    950 + number, plan.meta.get("model_id"))
            written[view]["dicom"] = dcm
    return written


def _text(ds: object, keyword: str, default: str = "") -> str:
    value = getattr(ds, keyword, None)
    return default if value is None else str(value)


def _number(ds: object, keyword: str, default: float) -> float:
    try:
        return float(getattr(ds, keyword))
    except (AttributeError, TypeError, ValueError):
        return default


def write_reformatted_dicom(path: str | Path, image: np.ndarray, plane: ImagePlane, view: str,
                            source_frames: Sequence[Frame], phase_trigger_ms: float | None = None,
                            series_number: int = 950, model_id: str | None = None) -> Path:
    """The reformatted view as a derived MR image (one file, MR Image Storage, ImageType DERIVED\\SECONDARY):
    the patient and study of the SAX images it was computed from (a PACS files it with the study), a new
    series and instance whose UIDs are derived from the sources' and the view (the same inputs give the
    same file), the proposed plane's geometry, and the SAX images listed in SourceImageSequence.
    Pixel values are the resampled modality values, rounded and clipped to 0–65535."""
    import pydicom

    from ..dicom.write import SeriesInfo, StudyInfo, build_mr_dataset, uid_from, write_dataset_atomic

    paths = list(dict.fromkeys(f.path for f in source_frames))  # an enhanced multi-frame file once
    try:
        sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    except Exception as exc:  # noqa: BLE001 - pydicom raises several types for bad files
        raise InputError(f"cannot read the SAX images for the derived DICOM series ({exc})") from None
    first = sources[0]
    key = "|".join(_text(ds, "SOPInstanceUID") for ds in sources)
    study = StudyInfo(
        patient_id=_text(first, "PatientID"), patient_name=_text(first, "PatientName"),
        study_uid=_text(first, "StudyInstanceUID") or uid_from("planessl-plan-study", key),
        frame_of_reference_uid=_text(first, "FrameOfReferenceUID") or uid_from("planessl-plan-for", key),
        study_date=_text(first, "StudyDate"), study_time=_text(first, "StudyTime"), study_id=_text(first, "StudyID"),
        accession_number=_text(first, "AccessionNumber"), patient_sex=_text(first, "PatientSex"),
        patient_birth_date=_text(first, "PatientBirthDate"), patient_age=_text(first, "PatientAge"),
        study_description=_text(first, "StudyDescription"), body_part=_text(first, "BodyPartExamined"),
        laterality=_text(first, "Laterality"),
    )
    cardiac = phase_trigger_ms is not None
    series = SeriesInfo(
        series_uid=uid_from("planessl-plan-series", key, view, model_id), series_number=series_number,
        description=f"PlaneSSL proposed {view} (reformatted SAX)", protocol_name=_text(first, "ProtocolName"),
        scanning_sequence=_text(first, "ScanningSequence", "GR"),
        sequence_variant=_text(first, "SequenceVariant", "SS"),
        acquisition_type=_text(first, "MRAcquisitionType", "2D"),
        repetition_time_ms=_number(first, "RepetitionTime", 3.0), echo_time_ms=_number(first, "EchoTime", 1.5),
        flip_angle_deg=_number(first, "FlipAngle", 50.0), field_strength_t=_number(first, "MagneticFieldStrength", 1.5),
        cardiac=cardiac,
    )
    pixels = np.clip(np.rint(np.asarray(image, np.float64)), 0, 65535).astype(np.uint16)
    lo, hi = np.percentile(pixels, [0.5, 99.5]) if pixels.any() else (0.0, 1.0)
    sop_uid = uid_from("planessl-plan-image", key, view, model_id)
    ds = build_mr_dataset(pixels, plane, study, series, 1, sop_uid, _number(first, "SliceThickness", 8.0),
                          trigger_time_ms=phase_trigger_ms, window=((lo + hi) / 2, hi - lo))
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.Manufacturer = _text(first, "Manufacturer")
    ds.ManufacturerModelName = _text(first, "ManufacturerModelName")
    ds.InstitutionName = _text(first, "InstitutionName")
    ds.PatientPosition = _text(first, "PatientPosition", ds.PatientPosition)
    ds.DerivationDescription = (f"SAX stack resampled (linear) on the {view} plane proposed by PlaneSSL view "
                                f"planning{f' (model {model_id})' if model_id else ''}")[:1024]
    refs = []
    for src in sources:
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = src.SOPClassUID
        item.ReferencedSOPInstanceUID = src.SOPInstanceUID
        refs.append(item)
    ds.SourceImageSequence = refs
    return write_dataset_atomic(ds, path)
