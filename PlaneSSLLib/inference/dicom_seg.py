"""A label map on a SAX stack written as a DICOM Segmentation object (highdicom, imported lazily).

One binary segment per structure (segment number = ACDC label value: 1 RV, 2 Myo, 3 LV) with
its SNOMED CT property type under category "Anatomical Structure", algorithm type AUTOMATIC.
The SEG references the SAX images it was computed from:

- all slices in one series (UK Biobank layout): those images are the SEG's source images, one
  frame per slice, with per-frame derivation references (spatial locations preserved);
- one series per slice (Kaggle layout): highdicom needs the source images of one series, so the
  first series' image is the source image, the others are further source images (all listed in
  the SEG's referenced series), and the frame positions are given explicitly from the geometry.

The SEG necessarily carries the patient and study modules of its source images (that is how a
PACS or Slicer attaches it to the study); nothing else identifying is added.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_path
from ..dicom.records import Frame
from ..errors import InputError
from ..geometry.planes import ImagePlane
from ..preprocess.labels import ACDC_STRUCTURES, StructureCode

__all__ = ["write_dicom_seg"]


def _read_sources(frames: Sequence[Frame]) -> list:
    import pydicom

    out = []
    for f in frames:
        try:
            out.append(pydicom.dcmread(f.path, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises several types for bad files
            raise InputError(f"{f.path}: cannot read the source image for the DICOM SEG ({exc})") from None
    return out


def write_dicom_seg(path: str | Path, labels: np.ndarray, planes: Sequence[ImagePlane], frames: Sequence[Frame],
                    structures: Sequence[StructureCode] = ACDC_STRUCTURES, series_number: int = 901,
                    series_description: str = "PlaneSSL segmentation") -> Path:
    """Write ``labels`` (``(k, rows, cols)``, slice ``k`` on ``planes[k]``, source image ``frames[k]``) as
    a DICOM SEG at ``path`` (atomically). Returns the path."""
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept
    from pydicom.sr.codedict import codes

    labels = np.asarray(labels)
    if labels.ndim != 3 or len(labels) != len(planes) or len(frames) != len(planes):
        raise ValueError(f"labels {labels.shape}: need one slice per plane and source frame ({len(planes)})")
    sources = _read_sources(frames)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="PlaneSSL", version=__version__, family=codes.cid7162.ArtificialIntelligence)
    category = CodedConcept("123037004", "SCT", "Anatomical Structure")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s.label, segment_label=s.name, segmented_property_category=category,
            segmented_property_type=CodedConcept(s.value, s.scheme, s.meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        )
        for s in structures
    ]
    pixel = np.zeros(labels.shape, dtype=np.uint8)
    for s in structures:  # only the listed structures, numbered by their label value
        pixel[labels == s.label] = s.label
    one_series = len({ds.SeriesInstanceUID for ds in sources}) == 1
    kwargs = {}
    if one_series:
        source_images, further = sources, None
    else:
        first = sources[0].SeriesInstanceUID
        source_images = [ds for ds in sources if ds.SeriesInstanceUID == first]
        further = [ds for ds in sources if ds.SeriesInstanceUID != first]
        p0 = planes[0]
        gap = (float(np.median(np.diff([float(p0.normal_lps @ p.origin_lps) for p in planes])))
               if len(planes) > 1 else float(getattr(sources[0], "SliceThickness", 1.0) or 1.0))
        kwargs = {
            "plane_orientation": hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT,
                                                             p0.image_orientation_patient),
            "pixel_measures": hd.PixelMeasuresSequence(
                pixel_spacing=list(p0.spacing_mm),
                slice_thickness=float(getattr(sources[0], "SliceThickness", abs(gap)) or abs(gap)),
                spacing_between_slices=abs(gap)),
            "plane_positions": [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, p.image_position_patient)
                                for p in planes],
        }
    hd_log = logging.getLogger("highdicom")
    level = hd_log.level
    hd_log.setLevel(max(level, logging.WARNING))  # highdicom logs every copied module at INFO
    try:
        seg = _build(hd, source_images, pixel, descriptions, further, kwargs, series_number, series_description)
    finally:
        hd_log.setLevel(level)
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def _build(hd, source_images: list, pixel: np.ndarray, descriptions: list, further: list | None, kwargs: dict,
           series_number: int, series_description: str):
    return hd.seg.Segmentation(
        source_images=source_images, pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="PlaneSSL", manufacturer_model_name="PlaneSSL cardiac segmentation",
        software_versions=__version__, device_serial_number="0", series_description=series_description,
        content_label="PLANESSL", further_source_images=further, omit_empty_frames=bool(pixel.any()), **kwargs,
    )
