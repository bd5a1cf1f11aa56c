"""Segment terminology: the segments of a segmentation model, from its manifest's ``terminology``.

A segmentation manifest (task ``seg``, ``inference.manifest``) carries ``terminology``:
``{"category": {scheme, value, meaning}, "labels": {"1": {name, scheme, value, meaning[,
color_rgb]}, ...}}`` — one SNOMED CT type code per label value, as ``planessl finetune seg``
writes it. :func:`segment_terms` turns it into one :class:`SegmentTerm` per label value. A label's
colour is its ``color_rgb`` (``planessl finetune seg`` writes Slicer's recommended colours,
``preprocess/labels.py``); a manifest without one gets a colour of a fixed palette.

``terminology_string`` writes the serialised entry that ``vtkSegment.SetTerminology`` and
the Segment Editor read: ``context~category~type~typeModifier~regionContext~region~regionModifier``
with each code as ``scheme^value^meaning``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .models_registry import ModelFolderError

__all__ = ["Code", "SegmentTerm", "ANATOMICAL_STRUCTURE", "segment_terms", "terminology_string"]

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

#: Colours of labels whose manifest entry has no ``color_rgb`` (by label value, cycled).
PALETTE: tuple[tuple[int, int, int], ...] = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                                             (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230))


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


def _code(entry: Mapping[str, Any]) -> Code:
    return Code(str(entry["scheme"]), str(entry["value"]), str(entry["meaning"]))


def _colour(entry: Mapping[str, Any], label: int) -> tuple[int, int, int]:
    if entry.get("color_rgb") is not None:
        r, g, b = entry["color_rgb"]
        return int(r), int(g), int(b)
    return PALETTE[(label - 1) % len(PALETTE)]


def segment_terms(manifest: Mapping[str, Any], source: str = "manifest.json") -> tuple[SegmentTerm, ...]:
    """One :class:`SegmentTerm` per label value of a (validated) segmentation manifest, by label value.

    ModelFolderError naming ``source`` when the manifest carries no terminology.
    """
    record = manifest.get("terminology")
    if not isinstance(record, Mapping) or not isinstance(record.get("labels"), Mapping) or not record["labels"]:
        raise ModelFolderError(f"{source}: the segmentation manifest carries no terminology (one SNOMED CT code "
                               "per label value); export it again with 'planessl finetune seg'")
    category = _code(record["category"]) if record.get("category") else ANATOMICAL_STRUCTURE
    labels = sorted((int(value), entry) for value, entry in record["labels"].items())
    return tuple(SegmentTerm(label, str(entry["name"]), _code(entry), _colour(entry, label), category)
                 for label, entry in labels)
