"""Writing MR images as real DICOM files (MR Image Storage), for synthetic cohorts and tests.

Every file written here is meant to pass ``dciodvfy`` without errors. UIDs are derived
deterministically from caller-given keys (``uid_from``) so that a cohort written twice with the
same seed is byte-identical.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

from ..geometry.planes import ImagePlane

__all__ = ["StudyInfo", "SeriesInfo", "uid_from", "build_mr_dataset", "write_dataset_atomic", "write_mr_image"]

#: Organisation root for the deterministic UIDs of synthetic data (2.25 = UUID-derived form).
_UID_PREFIX = None  # generate_uid(None, ...) gives 2.25.<uuid-int> from a hash of the keys


def uid_from(*keys: object) -> str:
    """A valid, deterministic DICOM UID derived from ``keys`` (2.25.<uuid> form)."""
    return generate_uid(prefix=_UID_PREFIX, entropy_srcs=[str(k) for k in keys])


@dataclass
class StudyInfo:
    """Patient and study level attributes shared by every series of a study (synthetic)."""

    patient_id: str
    patient_name: str
    study_uid: str
    frame_of_reference_uid: str
    study_date: str = "20260101"
    study_time: str = "080000"
    study_id: str = "1"
    accession_number: str = ""
    patient_sex: str = "O"
    patient_birth_date: str = ""
    patient_age: str = ""
    study_description: str = ""
    body_part: str = ""
    laterality: str = ""  # "R"/"L" for a paired body part (knee); empty for the heart


@dataclass
class SeriesInfo:
    """Series level attributes (synthetic MR acquisition)."""

    series_uid: str
    series_number: int
    description: str
    protocol_name: str = ""
    scanning_sequence: str = "GR"  # bSSFP: gradient recalled
    sequence_variant: str = "SS"  # steady state
    scan_options: str = ""
    acquisition_type: str = "2D"
    repetition_time_ms: float = 3.0
    echo_time_ms: float = 1.5
    flip_angle_deg: float = 50.0
    field_strength_t: float = 1.5
    cardiac: bool = False  # adds ECG-gating attributes (cine)
    extra: dict = field(default_factory=dict)  # keyword -> value, set on every instance


def build_mr_dataset(
    pixels: np.ndarray,
    plane: ImagePlane,
    study: StudyInfo,
    series: SeriesInfo,
    instance_number: int,
    sop_instance_uid: str,
    slice_thickness_mm: float,
    trigger_time_ms: float | None = None,
    cardiac_phases: int | None = None,
    temporal_position: int | None = None,
    window: tuple[float, float] | None = None,
) -> Dataset:
    """One MR Image Storage instance with ``pixels`` (rows × cols, uint16) at ``plane``."""
    px = np.asarray(pixels)
    if px.shape != plane.shape_px:
        raise ValueError(f"pixel array shape {px.shape} does not match plane shape {plane.shape_px}")
    if px.dtype != np.uint16:
        raise ValueError(f"pixels must be uint16, got {px.dtype}")

    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PLANESSL_010"
    ds.file_meta = meta

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = study.study_date
    ds.SeriesDate = study.study_date
    ds.ContentDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesTime = study.study_time
    ds.ContentTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.Modality = "MR"
    ds.Manufacturer = "PlaneSSL"
    ds.ManufacturerModelName = "Synthetic phantom"
    ds.InstitutionName = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.study_description
    ds.SeriesDescription = series.description
    ds.ProtocolName = series.protocol_name or series.description
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    if study.patient_age:
        ds.PatientAge = study.patient_age
    if study.body_part:
        ds.BodyPartExamined = study.body_part
    ds.ScanningSequence = series.scanning_sequence
    ds.SequenceVariant = series.sequence_variant
    # Cine is ECG-gated: scan option CG makes TriggerTime required (MR Image module).
    ds.ScanOptions = series.scan_options or ("CG" if series.cardiac else "")
    ds.MRAcquisitionType = series.acquisition_type
    ds.SliceThickness = _ds(slice_thickness_mm)
    ds.RepetitionTime = _ds(series.repetition_time_ms)
    ds.EchoTime = _ds(series.echo_time_ms)
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = _ds(series.field_strength_t)
    ds.FlipAngle = _ds(series.flip_angle_deg)
    ds.PatientPosition = "HFS" if series.cardiac else "FFS"
    if series.cardiac:
        ds.TriggerTime = _ds(trigger_time_ms if trigger_time_ms is not None else 0.0)
        if cardiac_phases is not None:
            ds.CardiacNumberOfImages = int(cardiac_phases)
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = int(series.series_number)
    ds.InstanceNumber = int(instance_number)
    if study.laterality or not study.body_part:
        # Type 2C: a value for a paired body part (knee), absent for a named unpaired one.
        ds.Laterality = study.laterality
    if temporal_position is not None:
        ds.TemporalPositionIdentifier = int(temporal_position)
    ds.ImagePositionPatient = [_ds(v) for v in plane.image_position_patient]
    ds.ImageOrientationPatient = [_ds(v, 8) for v in plane.image_orientation_patient]
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(plane.slice_location_mm())
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = plane.shape_px
    ds.PixelSpacing = [_ds(v, 8) for v in plane.pixel_spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter = _ds(window[0])
        ds.WindowWidth = _ds(max(window[1], 1.0))
    for keyword, value in series.extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(px, dtype="<u2").tobytes()
    return ds


def write_dataset_atomic(ds: Dataset, path: str | os.PathLike, transfer_syntax: str | None = None) -> Path:
    """Write ``ds`` to ``path`` through a temporary file and rename, so no half file is left.

    ``transfer_syntax``: None or Explicit VR Little Endian writes as built; Explicit VR Big
    Endian byte-swaps the pixel data; a compressed syntax is encoded with pydicom's encoders
    (RLE, JPEG 2000, JPEG-LS where the plugin is installed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if transfer_syntax and transfer_syntax != ds.file_meta.TransferSyntaxUID:
        ds = _transcode(ds, transfer_syntax)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        little = ds.file_meta.TransferSyntaxUID != ExplicitVRBigEndian
        ds.save_as(tmp, enforce_file_format=True, little_endian=little, implicit_vr=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_mr_image(path: str | os.PathLike, transfer_syntax: str | None = None, **kwargs) -> Path:
    """``build_mr_dataset(**kwargs)`` written atomically to ``path``."""
    return write_dataset_atomic(build_mr_dataset(**kwargs), path, transfer_syntax)


def _transcode(ds: Dataset, transfer_syntax: str) -> Dataset:
    ds = copy.deepcopy(ds)  # keep the caller's dataset untouched
    if transfer_syntax == ExplicitVRBigEndian:
        arr = np.frombuffer(ds.PixelData, dtype="<u2")
        ds.PixelData = arr.astype(">u2").tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        return ds
    ds.compress(transfer_syntax, encoding_plugin="")
    return ds


def _ds(value: float, digits: int = 6) -> str:
    """A DICOM DS string (at most 16 characters) for ``value``."""
    v = float(value)
    if abs(v) < 10 ** (-digits):
        v = 0.0
    for d in range(digits, -1, -1):
        s = f"{v:.{d}f}".rstrip("0").rstrip(".") if d > 0 else f"{v:.0f}"
        if s == "-0":
            s = "0"
        if len(s) <= 16:
            return s
    raise ValueError(f"cannot write {value} as a DICOM decimal string")
