"""Segment terminology: SNOMED CT codes and colours of the structures PlaneSSL segments.

Codes and recommended colours are those of Slicer's terminology (``Terminologies`` module,
"3D Slicer General Anatomy list", category Anatomical Structure, context group "Cardiac
Structure Segmentation Types", CID 7152): Left Ventricle 87878005 (152, 55, 13), Right
Ventricle 53085002 (181, 85, 57); Myocardium 74281007 is the DICOM CID 7152 code (Slicer's
general anatomy list has no myocardium entry; its colour here is Slicer's "heart" muscle tone).
Label values follow ACDC: RV = 1, Myo = 2, LV = 3.

``terminology_string`` writes the serialised entry that ``vtkSegment.SetTerminology`` and
the Segment Editor read: ``context~category~type~typeModifier~regionContext~region~regionModifier``
with each code as ``scheme^value^meaning``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Code", "SegmentTerm", "HEART_SEGMENTS", "ANATOMICAL_STRUCTURE", "terminology_string"]

CATEGORY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Code:
    scheme: str
    value: str
    meaning: str

    def serialise(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
EMPTY = Code("", "", "")


@dataclass(frozen=True)
class SegmentTerm:
    """One output label: its value in label maps, segment name, codes and colour (RGB 0–255)."""

    label: int
    name: str
    type: Code
    color_rgb: tuple[int, int, int]
    category: Code = ANATOMICAL_STRUCTURE

    @property
    def color(self) -> tuple[float, float, float]:
        return tuple(c / 255.0 for c in self.color_rgb)

    @property
    def terminology(self) -> str:
        return terminology_string(self.category, self.type)


def terminology_string(category: Code, type_: Code, modifier: Code = EMPTY, region: Code = EMPTY,
                       region_modifier: Code = EMPTY) -> str:
    return "~".join([CATEGORY_CONTEXT, category.serialise(), type_.serialise(), modifier.serialise(),
                     REGION_CONTEXT, region.serialise(), region_modifier.serialise()])


#: ACDC labels (RV = 1, Myo = 2, LV = 3) with Slicer's codes and colours.
HEART_SEGMENTS: tuple[SegmentTerm, ...] = (
    SegmentTerm(1, "Right ventricle", Code("SCT", "53085002", "Right Ventricle"), (181, 85, 57)),
    SegmentTerm(2, "Myocardium", Code("SCT", "74281007", "Myocardium"), (206, 110, 84)),
    SegmentTerm(3, "Left ventricle", Code("SCT", "87878005", "Left Ventricle"), (152, 55, 13)),
)
