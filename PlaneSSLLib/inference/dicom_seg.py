"""A label map on a SAX stack written as a DICOM Segmentation object (pydicom only, no highdicom).

One binary segment per structure (segment number = label value; the model manifest's terminology,
by default the ACDC codes: 1 RV, 2 Myo, 3 LV) with its SNOMED CT property type under its category
(by default "Anatomical Structure"), algorithm type AUTOMATIC
(algorithm family "Artificial Intelligence"). The object is built here element by element
(a BINARY, non-fractional Segmentation Storage instance, explicit VR little endian) because
building it through highdicom cost more than the whole network run of ``predict seg`` (its
import and IOD tables alone about a second); ``Testing/test_dicom_seg.py`` reads every SEG
written here back with highdicom and pydicom and checks it with dciodvfy.

Geometry: the labels lie on the source images' own pixel grids (``planes[k]`` is the plane of
``frames[k]``), so every frame carries its plane position, the shared functional groups carry the
orientation and pixel measures of ``planes[0]`` (one SAX stack), and each frame's Derivation Image
Sequence names its source image (spatial locations preserved). This holds in both stack layouts:
all slices in one series (UK Biobank) and one series per slice (Kaggle); the Referenced Series
Sequence lists every source series. Frames are ordered segment by segment, slice by slice; a
segment's empty slices are left out (all frames are kept when the whole map is empty, so the
object always has frames). Dimension index values: (segment number, 1-based slice index).

The SEG necessarily carries the patient and study modules of its source images (that is how a
PACS or Slicer attaches it to the study); nothing else identifying is added.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from .. import __version__
from ..atomic import atomic_path
from ..dicom.records import Frame
from ..errors import InputError
from ..geometry.planes import ImagePlane
from ..preprocess.labels import ACDC_STRUCTURES, StructureCode

__all__ = ["ANATOMICAL_STRUCTURE", "SEGMENTATION_STORAGE", "structures_from_terminology", "write_dicom_seg"]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: The default segmented property category: (scheme, value, meaning).
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")

#: Patient and study attributes copied from the first source image (Patient and General Study modules).
_PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
)
#: Type 2 attributes among them: present (empty) even when the source lacks them.
_TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                   "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _read_sources(frames: Sequence[Frame]) -> list[Dataset]:
    out = []
    for f in frames:
        try:
            out.append(pydicom.dcmread(f.path, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises several types for bad files
            raise InputError(f"{f.path}: cannot read the source image for the DICOM SEG ({exc})") from None
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            if not str(out[-1].get(keyword, "") or ""):
                raise InputError(f"{f.path}: the source image for the DICOM SEG has no {keyword}")
    return out


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _ds(values: Sequence[float]) -> list[str]:
    """Decimal strings of at most 16 characters (the DS limit)."""
    return [format_number_as_ds(float(v)) for v in values]


def structures_from_terminology(record: dict | None) -> tuple[tuple[str, str, str], list[StructureCode]]:
    """``(category, structures)`` of a segmentation manifest's ``terminology`` (validated by
    ``inference.manifest``): the codes the DICOM SEG's segments carry. None: the ACDC structures."""
    if not record:
        return ANATOMICAL_STRUCTURE, list(ACDC_STRUCTURES)
    cat = record.get("category") or {}
    category = (cat["scheme"], cat["value"], cat["meaning"]) if cat else ANATOMICAL_STRUCTURE
    structures = []
    for value, e in sorted(record["labels"].items(), key=lambda kv: int(kv[0])):
        colour = tuple(e.get("color_rgb") or (128, 128, 128))
        structures.append(StructureCode(int(value), str(e.get("short") or e["name"]), e["name"], e["scheme"],
                                        e["value"], e["meaning"], colour))  # type: ignore[arg-type]
    return category, structures


def _segment_item(s: StructureCode, category: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    scheme, value, meaning = category
    item.SegmentedPropertyCategoryCodeSequence = DicomSequence([_code(value, scheme, meaning)])
    item.SegmentNumber = int(s.label)
    item.SegmentLabel = s.name
    algorithm = Dataset()
    algorithm.AlgorithmFamilyCodeSequence = DicomSequence([_code("123110", "DCM", "Artificial Intelligence")])
    algorithm.AlgorithmVersion = __version__
    algorithm.AlgorithmName = "PlaneSSL"
    item.SegmentationAlgorithmIdentificationSequence = DicomSequence([algorithm])
    item.SegmentAlgorithmType = "AUTOMATIC"
    item.SegmentAlgorithmName = "PlaneSSL"
    item.SegmentedPropertyTypeCodeSequence = DicomSequence([_code(s.value, s.scheme, s.meaning)])
    return item


def _frame_item(source: Dataset, frame: Frame, plane: ImagePlane, segment: int, index: int) -> Dataset:
    """Per-frame functional groups of one frame: derivation, frame content, plane position, segment."""
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if int(source.get("NumberOfFrames", 1) or 1) > 1:
        ref.ReferencedFrameNumber = frame.frame_index + 1
    ref.PurposeOfReferenceCodeSequence = DicomSequence(
        [_code("121322", "DCM", "Source image for image processing operation")])
    ref.SpatialLocationsPreserved = "YES"
    derivation = Dataset()
    derivation.DerivationCodeSequence = DicomSequence([_code("113076", "DCM", "Segmentation")])
    derivation.SourceImageSequence = DicomSequence([ref])
    content = Dataset()
    content.DimensionIndexValues = [segment, index]
    position = Dataset()
    position.ImagePositionPatient = _ds(plane.image_position_patient)
    seg_id = Dataset()
    seg_id.ReferencedSegmentNumber = segment
    item = Dataset()
    item.DerivationImageSequence = DicomSequence([derivation])
    item.FrameContentSequence = DicomSequence([content])
    item.PlanePositionSequence = DicomSequence([position])
    item.SegmentIdentificationSequence = DicomSequence([seg_id])
    return item


def _slice_gap_mm(planes: Sequence[ImagePlane]) -> float | None:
    if len(planes) < 2:
        return None
    p0 = planes[0]
    return abs(float(np.median(np.diff([float(p0.normal_lps @ p.origin_lps) for p in planes]))))


def write_dicom_seg(path: str | Path, labels: np.ndarray, planes: Sequence[ImagePlane], frames: Sequence[Frame],
                    structures: Sequence[StructureCode] = ACDC_STRUCTURES, series_number: int = 901,
                    series_description: str = "PlaneSSL segmentation",
                    category: tuple[str, str, str] = ANATOMICAL_STRUCTURE) -> Path:
    """Write ``labels`` (``(k, rows, cols)``, slice ``k`` on ``planes[k]``, source image ``frames[k]``) as
    a DICOM SEG at ``path`` (atomically). Returns the path.

    ``structures``: one segment each (number = label value; a model's own from its manifest's
    terminology through :func:`structures_from_terminology`), under ``category`` (scheme, value, meaning)."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or len(labels) != len(planes) or len(frames) != len(planes):
        raise ValueError(f"labels {labels.shape}: need one slice per plane and source frame ({len(planes)})")
    if not structures:
        raise ValueError("a DICOM SEG needs at least one structure")
    sources = _read_sources(frames)
    first = sources[0]
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    sop_uid, series_uid, dim_uid = generate_uid(None), generate_uid(None), generate_uid(None)

    ds = Dataset()
    if "SpecificCharacterSet" in first:
        ds.SpecificCharacterSet = first.SpecificCharacterSet
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID, ds.SOPInstanceUID = SEGMENTATION_STORAGE, sop_uid
    ds.ContentDate, ds.ContentTime = date, time
    ds.Modality = "SEG"
    ds.Manufacturer = "PlaneSSL"
    ds.ManufacturerModelName = "PlaneSSL cardiac segmentation"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = __version__
    ds.SeriesDescription = series_description
    for keyword in _PATIENT_STUDY_KEYWORDS:
        if keyword in first:
            setattr(ds, keyword, first[keyword].value)
        elif keyword in _TYPE2_KEYWORDS:
            setattr(ds, keyword, "")
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, int(series_number), 1
    ds.FrameOfReferenceUID = first.get("FrameOfReferenceUID") or generate_uid(None)
    ds.PositionReferenceIndicator = ""

    series_refs: dict[str, list[Dataset]] = {}
    seen: set[str] = set()
    for src in sources:
        if src.SOPInstanceUID in seen:
            continue
        seen.add(src.SOPInstanceUID)
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
        series_refs.setdefault(str(src.SeriesInstanceUID), []).append(ref)
    ref_series = []
    for uid, refs in series_refs.items():
        item = Dataset()
        item.ReferencedInstanceSequence = DicomSequence(refs)
        item.SeriesInstanceUID = uid
        ref_series.append(item)
    ds.ReferencedSeriesSequence = DicomSequence(ref_series)

    organisation = Dataset()
    organisation.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = DicomSequence([organisation])
    dims = []
    for pointer, group, label in ((0x0062000B, 0x0062000A, "Referenced Segment Number"),
                                  (0x00200032, 0x00209113, "Image Position Patient")):
        dim = Dataset()
        dim.DimensionOrganizationUID = dim_uid
        dim.DimensionIndexPointer, dim.FunctionalGroupPointer = pointer, group
        dim.DimensionDescriptionLabel = label
        dims.append(dim)
    ds.DimensionIndexSequence = DicomSequence(dims)

    # frames: segment by segment, slice by slice; empty ones left out unless the map is all empty
    masks = [(s, k, labels[k] == s.label) for s in structures for k in range(len(planes))]
    if any(m.any() for _, _, m in masks):
        masks = [(s, k, m) for s, k, m in masks if m.any()]
    rows, cols = labels.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = len(masks)
    ds.Rows, ds.Columns = int(rows), int(cols)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.LossyImageCompression = "00"
    ds.SegmentationType = "BINARY"
    ds.SegmentSequence = DicomSequence([_segment_item(s, category) for s in structures])
    ds.SegmentsOverlap = "NO"
    ds.ContentLabel = "PLANESSL"
    ds.ContentDescription = ""
    ds.ContentCreatorName = ""
    ds.PresentationLUTShape = "IDENTITY"

    p0 = planes[0]
    orientation = Dataset()
    orientation.ImageOrientationPatient = _ds(p0.image_orientation_patient)
    measures = Dataset()
    gap = _slice_gap_mm(planes)
    thickness = frames[0].slice_thickness_mm or first.get("SliceThickness") or gap or 1.0
    measures.SliceThickness = format_number_as_ds(float(thickness))
    if gap:
        measures.SpacingBetweenSlices = format_number_as_ds(gap)
    measures.PixelSpacing = _ds(p0.spacing_mm)
    shared = Dataset()
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(
        [_frame_item(sources[k], frames[k], planes[k], int(s.label), k + 1) for s, k, _ in masks])
    bits = np.packbits(np.stack([m for _, _, m in masks]).reshape(-1), bitorder="little").tobytes()
    ds.PixelData = bits + b"\0" * (len(bits) % 2)
    ds["PixelData"].VR = "OB"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SEGMENTATION_STORAGE, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
