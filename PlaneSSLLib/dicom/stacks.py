"""One stack per view: the series of a view merged along their common normal.

Layouts differ: UK Biobank writes one multi-slice SAX series, the Kaggle cardiac data one series
per SAX slice. Every consumer (the cache of target tasks, prediction, the Slicer scene) wants the
view's positions as one stack ordered along its normal; this module builds it once
(``find_sax_stack``: the SAX stack that segmentation reads, trains on and writes labels for).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry.planes import ImagePlane, angle_between_normals_deg
from .records import Position, Problem, Series, Study

__all__ = [
    "MERGE_TOL_DEG", "SaxStack", "ViewStack", "find_sax_stack", "group_series_by_normal", "merge_view_series",
    "view_stacks",
]

#: Series of one view whose planes agree within this angle (and in size and spacing) are merged.
MERGE_TOL_DEG = 1.0

_VIEW_ORDER = ("SAX", "2CH", "3CH", "4CH", "SAG", "COR", "AX")


@dataclass
class ViewStack:
    """The images of one view: positions ordered by increasing ``s = n̂ · o`` along the lead
    series' DICOM normal, from one or several series."""

    label: str
    series: list[Series]
    positions: list[Position]

    @property
    def planes(self) -> list[ImagePlane]:
        return [p.plane for p in self.positions]

    @property
    def n_phases(self) -> int:
        """Cine phases present at every position."""
        return min((len(p.frames) for p in self.positions), default=0)

    def folder(self) -> Path:
        """The folder of the first file (for messages; never written to outputs)."""
        return self.positions[0].frames[0].path.parent

    def as_series(self) -> Series:
        """One ``Series`` record holding all positions (what ``read_series_pixels`` takes)."""
        first = self.series[0]
        merged = Series(key="+".join(s.key for s in self.series), description=first.description,
                        folder=first.folder, series_number=first.series_number, modality=first.modality,
                        laterality=first.laterality)
        n = self.n_phases
        merged.positions = [Position(p.plane, p.frames[:n], p.location_mm) for p in self.positions]
        merged.frames = [f for p in merged.positions for f in p.frames]
        return merged


def group_series_by_normal(series: Iterable[Series], tol_deg: float) -> list[list[Series]]:
    """Series grouped greedily by parallel normals (sign-free, within ``tol_deg``), in input order."""
    groups: list[list[Series]] = []
    for s in series:
        n = s.normal_lps
        for g in groups:
            if angle_between_normals_deg(n, g[0].normal_lps) <= tol_deg:
                g.append(s)
                break
        else:
            groups.append([s])
    return groups


def merge_view_series(label: str, series: Sequence[Series], tol_deg: float = MERGE_TOL_DEG) -> ViewStack:
    """The series with most positions, plus every other series parallel to it (within ``tol_deg``)
    with the same image size and pixel spacing, as one stack ordered along the normal."""
    lead = max(series, key=lambda s: (s.n_slices, -(s.series_number or 0)))
    ref = lead.positions[0].plane
    members = [s for s in series if all(
        angle_between_normals_deg(p.plane.normal_lps, ref.normal_lps) <= tol_deg
        and p.plane.shape_px == ref.shape_px
        and np.allclose(p.plane.spacing_mm, ref.spacing_mm, atol=1e-4) for p in s.positions)]
    n = ref.normal_lps
    positions = sorted((p for s in members for p in s.positions), key=lambda p: float(n @ p.plane.origin_lps))
    return ViewStack(label, members, positions)


def view_stacks(study: Study) -> list[ViewStack]:
    """The study's usable series as one stack per view label (an unlabelled series: one each)."""
    by_view: dict[str, list[Series]] = {}
    stacks: list[ViewStack] = []
    for s in study.series:
        if not (s.usable and s.positions):
            continue
        if s.view:
            by_view.setdefault(s.view, []).append(s)
        else:
            name = f"Series {s.series_number}" if s.series_number is not None else f"Series {s.key}"
            stacks.append(ViewStack(name, [s], list(s.positions)))
    stacks += [merge_view_series(label, series) for label, series in by_view.items()]
    order = {label: i for i, label in enumerate(_VIEW_ORDER)}
    stacks.sort(key=lambda v: (order.get(v.label, 99), v.label))
    return stacks


@dataclass
class SaxStack(ViewStack):
    """A study's SAX positions ordered by increasing ``s = n̂ · o`` along the DICOM normal (NIfTI ``k``).

    ``unreadable``: the files under the scanned folder that could not be read (any of them may be
    one of the stack's images; ``inference.segment.stack_problems`` names them).
    """

    study: Study | None = None
    unreadable: list[Problem] = field(default_factory=list)


def find_sax_stack(study: Study, merge_tol_deg: float = MERGE_TOL_DEG) -> SaxStack | None:
    """The SAX stack of a view-labelled study (``dicom.stacks.merge_view_series``: the Kaggle
    layout holds one series per slice). None when the study has no usable SAX series."""
    sax = [s for s in study.series if s.view == "SAX" and s.usable and s.positions]
    if not sax:
        return None
    stack = merge_view_series("SAX", sax, merge_tol_deg)
    return SaxStack("SAX", stack.series, stack.positions, study=study)
