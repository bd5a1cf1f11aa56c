"""Segmentation labels: ACDC label values, names and the SNOMED CT codes that go into manifests and DICOM SEG.

Labels (ACDC; docs/conventions.md, "Segmentation labels"): 0 background, 1 RV, 2 Myo, 3 LV, with
the SNOMED CT codes and recommended colours of Slicer's terminology ("3D Slicer General Anatomy
list": Right Ventricle 53085002 (181, 85, 57), Left Ventricle 87878005 (152, 55, 13); Myocardium
74281007 is the DICOM CID 7152 code, absent from that list, coloured with Slicer's heart-muscle
tone). They reach the Slicer side only through a manifest's ``terminology`` (``terminology_record``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ACDC_LABEL_NAMES", "ACDC_STRUCTURES", "StructureCode", "terminology_record"]

ACDC_LABEL_NAMES = ("background", "RV", "Myo", "LV")


@dataclass(frozen=True)
class StructureCode:
    """One segmented structure: ACDC label value, short and display names, SNOMED CT code, colour (RGB 0-255)."""

    label: int
    short: str
    name: str
    scheme: str
    value: str
    meaning: str
    color_rgb: tuple[int, int, int]


#: ACDC label values with the SNOMED CT codes and colours of Slicer's terminology (module docstring).
ACDC_STRUCTURES: tuple[StructureCode, ...] = (
    StructureCode(1, "RV", "Right ventricle", "SCT", "53085002", "Right Ventricle", (181, 85, 57)),
    StructureCode(2, "Myo", "Myocardium", "SCT", "74281007", "Myocardium", (206, 110, 84)),
    StructureCode(3, "LV", "Left ventricle", "SCT", "87878005", "Left Ventricle", (152, 55, 13)),
)


def terminology_record() -> dict[str, Any]:
    """The manifest's ``terminology``: category and one SNOMED CT type code and colour per label value."""
    return {
        "category": {"scheme": "SCT", "value": "123037004", "meaning": "Anatomical Structure"},
        "labels": {
            str(s.label): {"name": s.name, "short": s.short, "scheme": s.scheme, "value": s.value,
                           "meaning": s.meaning, "color_rgb": list(s.color_rgb)}
            for s in ACDC_STRUCTURES
        },
    }
