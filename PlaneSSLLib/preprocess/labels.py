"""Segmentation labels: ACDC label values, names and the SNOMED CT codes that go into manifests and DICOM SEG.

Labels (ACDC; docs/conventions.md, "Segmentation labels"): 0 background, 1 RV, 2 Myo, 3 LV, with
the SNOMED CT codes Slicer uses (``ACDC_STRUCTURES``; the same values as
``slicer_logic.terminology``, kept here so that the data, training and inference layers need no
Slicer-side import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ACDC_LABEL_NAMES", "ACDC_STRUCTURES", "StructureCode", "terminology_record"]

ACDC_LABEL_NAMES = ("background", "RV", "Myo", "LV")


@dataclass(frozen=True)
class StructureCode:
    """One segmented structure: ACDC label value, short and display names, SNOMED CT code."""

    label: int
    short: str
    name: str
    scheme: str
    value: str
    meaning: str


#: ACDC label values with the SNOMED CT codes of Slicer's terminology (``slicer_logic.terminology``).
ACDC_STRUCTURES: tuple[StructureCode, ...] = (
    StructureCode(1, "RV", "Right ventricle", "SCT", "53085002", "Right Ventricle"),
    StructureCode(2, "Myo", "Myocardium", "SCT", "74281007", "Myocardium"),
    StructureCode(3, "LV", "Left ventricle", "SCT", "87878005", "Left Ventricle"),
)


def terminology_record() -> dict[str, Any]:
    """The manifest's ``terminology``: category and one SNOMED CT type code per label value."""
    return {
        "category": {"scheme": "SCT", "value": "123037004", "meaning": "Anatomical Structure"},
        "labels": {
            str(s.label): {"name": s.name, "short": s.short, "scheme": s.scheme, "value": s.value,
                           "meaning": s.meaning}
            for s in ACDC_STRUCTURES
        },
    }
