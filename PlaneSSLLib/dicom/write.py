"""Writing MR images as real DICOM files (MR Image Storage), for synthetic cohorts and tests.

Every file written here is meant to pass ``dciodvfy`` without errors. UIDs are derived
deterministically from caller-given keys (``uid_from``) so that a cohort written twice with the
same seed is byte-identical.
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from ..atomic import atomic_path
from ..geometry.planes import ImagePlane

__all__ = ["StudyInfo", "SeriesInfo", "uid_from", "build_mr_dataset", "write_dataset_atomic", "write_mr_image"]

def uid_from(*keys: object) -> str:
    """A valid DICOM UID ``2.25.<128-bit integer>`` derived from a hash of ``keys``.

    Same keys, same UID (pydicom's ``generate_uid`` ignores its entropy sources without a
    prefix, so it cannot be used for this).
    """
    digest = hashlib.sha256("\x1f".join(str(k) for k in keys).encode("utf-8")).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


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

    ``transfer_syntax``: None writes as built (Explicit VR Little Endian); Implicit VR Little
    Endian and Deflated Explicit VR re-encode the dataset; Explicit VR Big Endian byte-swaps
    the pixel data; a compressed syntax is encoded with pydicom's encoders (RLE, JPEG 2000,
    JPEG-LS where the plugin is installed). Native pixel data of ``ds`` must be little endian
    (as the builders here make it).
    """
    if transfer_syntax and transfer_syntax != ds.file_meta.TransferSyntaxUID:
        ds = _transcode(ds, transfer_syntax)
    syntax = ds.file_meta.TransferSyntaxUID
    with atomic_path(path) as tmp:
        ds.save_as(
            tmp,
            enforce_file_format=True,
            little_endian=syntax != ExplicitVRBigEndian,
            implicit_vr=syntax == ImplicitVRLittleEndian,
        )
    return Path(path)


def write_mr_image(path: str | os.PathLike, transfer_syntax: str | None = None, **kwargs) -> Path:
    """``build_mr_dataset(**kwargs)`` written atomically to ``path``."""
    return write_dataset_atomic(build_mr_dataset(**kwargs), path, transfer_syntax)


def _transcode(ds: Dataset, transfer_syntax: str) -> Dataset:
    ds = copy.deepcopy(ds)  # keep the caller's dataset untouched
    if transfer_syntax in (ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        return ds
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


# ----------------------------------------------------------------------------- more syntaxes
# ----------------------------------------------------------------------------- enhanced multi-frame
def build_enhanced_mr_dataset(
    frames: np.ndarray,
    planes: list[ImagePlane],
    study: StudyInfo,
    series: SeriesInfo,
    sop_instance_uid: str,
    slice_thickness_mm: float,
    instance_number: int = 1,
    trigger_times_ms: list[float] | None = None,
    temporal_positions: list[int] | None = None,
    stack_positions: list[int] | None = None,
    rescale: tuple[float, float] = (1.0, 0.0),
) -> Dataset:
    """One Enhanced MR Image Storage instance holding ``frames`` (n, rows, cols) uint16.

    Frame ``i`` lies at ``planes[i]``; geometry goes into the per-frame Plane Position and
    Plane Orientation functional groups, pixel spacing and slice thickness (mm) into the shared
    Pixel Measures group. ``trigger_times_ms`` (cine, ms after the R wave) fill the per-frame
    Cardiac Synchronization group; ``temporal_positions`` (1-based) and ``stack_positions``
    (1-based InStackPositionNumber) the Frame Content group. ``rescale`` = (slope, intercept)
    goes into the shared Pixel Value Transformation group.
    """
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import EnhancedMRImageStorage

    px = np.asarray(frames)
    n = px.shape[0]
    if px.ndim != 3 or len(planes) != n:
        raise ValueError(f"need (n, rows, cols) pixels and n planes, got {px.shape} and {len(planes)} planes")
    if any(p.shape_px != px.shape[1:] for p in planes):
        raise ValueError("every plane must have the pixel array's (rows, cols)")
    if px.dtype != np.uint16:
        raise ValueError(f"pixels must be uint16, got {px.dtype}")
    cardiac = trigger_times_ms is not None
    base = build_mr_dataset(
        px[0], planes[0], study, series, instance_number, sop_instance_uid, slice_thickness_mm,
        trigger_time_ms=trigger_times_ms[0] if cardiac else None,
    )
    ds = Dataset()
    ds.file_meta = base.file_meta
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    for keyword in (
        "SpecificCharacterSet", "StudyDate", "SeriesDate", "ContentDate", "StudyTime", "SeriesTime",
        "ContentTime", "AccessionNumber", "Modality", "Manufacturer", "ManufacturerModelName",
        "ReferringPhysicianName", "StudyDescription", "SeriesDescription", "PatientName", "PatientID",
        "PatientBirthDate", "PatientSex", "PatientAge", "BodyPartExamined", "StudyInstanceUID",
        "SeriesInstanceUID", "StudyID", "SeriesNumber", "InstanceNumber", "FrameOfReferenceUID",
        "PositionReferenceIndicator", "Laterality", "SOPInstanceUID", "PatientPosition",
        "MagneticFieldStrength", "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
        "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    ):
        if keyword in base and (keyword != "Laterality" or base.Laterality):
            setattr(ds, keyword, base.data_element(keyword).value)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "PlaneSSL"
    ds.AcquisitionDateTime = f"{study.study_date}{study.study_time}"
    ds.AcquisitionDuration = 0.0
    ds.AcquisitionNumber = 1
    ds.ContentQualification = "RESEARCH"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "T1"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = DicomSequence()
    ds.PulseSequenceName = series.protocol_name or "SYNTHETIC"
    ds.MRAcquisitionType = series.acquisition_type
    ds.EchoPulseSequence = "GRADIENT"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "FREE_PRECESSION" if series.sequence_variant == "SS" else "NONE"
    ds.EchoPlanarPulseSequence = "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.NumberOfKSpaceTrajectories = 1
    if cardiac:
        ds.CardiacSynchronizationTechnique = "RETROSPECTIVE"
        ds.CardiacSignalSource = "ECG"
        ds.CardiacRRIntervalSpecified = 1000.0
        ds.CardiacBeatRejectionTechnique = "NONE"
        ds.LowRRValue = 0
        ds.HighRRValue = 0
        ds.IntervalsAcquired = 0
        ds.IntervalsRejected = 0
        ds.SkipBeats = 0
        ds.CardiacFramingType = "PRO"
    ds.NumberOfFrames = n
    ds.SharedFunctionalGroupsSequence = DicomSequence([_shared_groups(planes[0], series, slice_thickness_mm, rescale)])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(
        [
            _per_frame_groups(
                i,
                planes[i],
                trigger_times_ms[i] if cardiac else None,
                temporal_positions[i] if temporal_positions is not None else None,
                stack_positions[i] if stack_positions is not None else None,
            )
            for i in range(n)
        ]
    )
    dim_uid = uid_from(sop_instance_uid, "dimensions")
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=dim_uid)])
    dims = [("StackID", "FrameContentSequence"), ("InStackPositionNumber", "FrameContentSequence")]
    if temporal_positions is not None:
        dims.append(("TemporalPositionIndex", "FrameContentSequence"))
    ds.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=dim_uid,
                DimensionIndexPointer=pydicom_tag(keyword),
                FunctionalGroupPointer=pydicom_tag(group),
            )
            for keyword, group in dims
        ]
    )
    ds.PixelData = np.ascontiguousarray(px, dtype="<u2").tobytes()
    return ds


def pydicom_tag(keyword: str) -> int:
    """The tag of a DICOM keyword (for attribute-pointer values)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return int(tag)


def _item(**values) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _shared_groups(plane: ImagePlane, series: SeriesInfo, thickness_mm: float, rescale: tuple[float, float]) -> Dataset:
    from pydicom.sequence import Sequence as DicomSequence

    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence(
        [_item(PixelSpacing=[_ds(v, 8) for v in plane.pixel_spacing], SliceThickness=_ds(thickness_mm))]
    )
    shared.PixelValueTransformationSequence = DicomSequence(
        [_item(RescaleIntercept=_ds(rescale[1]), RescaleSlope=_ds(rescale[0]), RescaleType="US")]
    )
    shared.FrameAnatomySequence = DicomSequence(
        [
            _item(
                FrameLaterality="U",
                AnatomicRegionSequence=DicomSequence(
                    [_item(CodeValue="80891009", CodingSchemeDesignator="SCT", CodeMeaning="Heart")]
                    if series.cardiac
                    else [_item(CodeValue="72696002", CodingSchemeDesignator="SCT", CodeMeaning="Knee")]
                ),
            )
        ]
    )
    shared.MRImageFrameTypeSequence = DicomSequence(
        [
            _item(
                FrameType=["ORIGINAL", "PRIMARY", "M", "NONE"],
                PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE",
                ComplexImageComponent="MAGNITUDE",
                AcquisitionContrast="T1",
            )
        ]
    )
    shared.MRTimingAndRelatedParametersSequence = DicomSequence(
        [
            _item(
                RepetitionTime=series.repetition_time_ms,
                FlipAngle=series.flip_angle_deg,
                EchoTrainLength=1,
                RFEchoTrainLength=1,
                GradientEchoTrainLength=1,
                SpecificAbsorptionRateSequence=DicomSequence(
                    [_item(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY", SpecificAbsorptionRateValue=0.1)]
                ),
                GradientOutputType="DB_DT",
                GradientOutput=1.0,
                OperatingModeSequence=DicomSequence(
                    [_item(OperatingModeType="STATIC FIELD", OperatingMode="IEC_NORMAL")]
                ),
            )
        ]
    )
    shared.MREchoSequence = DicomSequence([_item(EffectiveEchoTime=series.echo_time_ms)])
    shared.MRModifierSequence = DicomSequence(
        [
            _item(
                InversionRecovery="NO",
                FlowCompensation="NONE",
                Spoiling="NONE",
                T2Preparation="NO",
                SpectrallySelectedExcitation="NONE",
                SpatialPresaturation="NONE",
                PartialFourier="NO",
                ParallelAcquisition="NO",
            )
        ]
    )
    shared.MRImagingModifierSequence = DicomSequence(
        [
            _item(
                MagnetizationTransfer="NONE",
                BloodSignalNulling="NO",
                Tagging="NONE",
                TransmitterFrequency=63.87,
                PixelBandwidth=500.0,
            )
        ]
    )
    shared.MRReceiveCoilSequence = DicomSequence(
        [
            _item(
                ReceiveCoilName="BODY",
                ReceiveCoilType="BODY",
                ReceiveCoilManufacturerName="",
                QuadratureReceiveCoil="NO",
            )
        ]
    )
    shared.MRTransmitCoilSequence = DicomSequence(
        [_item(TransmitCoilName="BODY", TransmitCoilType="BODY", TransmitCoilManufacturerName="")]
    )
    shared.MRFOVGeometrySequence = DicomSequence(
        [
            _item(
                InPlanePhaseEncodingDirection="ROW",
                MRAcquisitionFrequencyEncodingSteps=plane.columns,
                MRAcquisitionPhaseEncodingStepsInPlane=plane.rows,
                PercentSampling=100.0,
                PercentPhaseFieldOfView=100.0,
            )
        ]
    )
    shared.MRAveragesSequence = DicomSequence([_item(NumberOfAverages=1.0)])
    return shared


def _per_frame_groups(
    index: int,
    plane: ImagePlane,
    trigger_time_ms: float | None,
    temporal_position: int | None,
    stack_position: int | None,
) -> Dataset:
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    content = _item(
        FrameAcquisitionNumber=index + 1,
        FrameReferenceDateTime="20260101080000",
        FrameAcquisitionDateTime="20260101080000",
        FrameAcquisitionDuration=10.0,
        StackID="1",
        InStackPositionNumber=int(stack_position) if stack_position is not None else 1,
    )
    content.DimensionIndexValues = [1, content.InStackPositionNumber]
    if temporal_position is not None:
        content.TemporalPositionIndex = int(temporal_position)
        content.DimensionIndexValues = [1, content.InStackPositionNumber, int(temporal_position)]
    item.FrameContentSequence = DicomSequence([content])
    ipp = [_ds(v) for v in plane.image_position_patient]
    item.PlanePositionSequence = DicomSequence([_item(ImagePositionPatient=ipp)])
    item.PlaneOrientationSequence = DicomSequence(
        [_item(ImageOrientationPatient=[_ds(v, 8) for v in plane.image_orientation_patient])]
    )
    if trigger_time_ms is not None:
        item.CardiacSynchronizationSequence = DicomSequence(
            [_item(NominalCardiacTriggerDelayTime=float(trigger_time_ms), RRIntervalTimeNominal=1000.0)]
        )
    return item


__all__ += ["build_enhanced_mr_dataset"]
