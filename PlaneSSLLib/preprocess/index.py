"""From a scanned, view-labelled DICOM tree to the list of slices to prepare, with their stacks.

``scan_slices(root, config)`` does it all: ``dicom.scan.scan_tree``, views labelled
(``dicom.report.apply_views``), then ``enumerate_slices``.

One *slice* is one 2D frame (one cine phase of one plane position) of a usable series whose view
label belongs to its study's anatomy. Rules (patient LPS, millimetres):

- Subjects: one per hashed PatientID, numbered in order of first appearance (studies in scan
  order). Studies keep their hashed StudyInstanceUID key.
- Stacks: within a study, series of the same view whose normals agree within
  ``STACK_TOL_DEG`` form one stack (so the one-series-per-slice Kaggle layout ``sax_5``,
  ``sax_6``... makes one SAX stack). Plane positions closer than ``POSITION_TOL_MM`` along the
  stack normal count as one position.
- Anatomical orientation of the stack normal ``n`` (relative location 0 = the first end):

  * heart SAX: base → apex, ``n · APEX_PRIOR_LPS > 0`` (the LV long axis prior: left, anterior,
    inferior; ``dicom.views``). The long-axis views cannot tell the sign from geometry alone
    (their planes contain the long axis, but which end is the apex is image content), and the
    true long axis lies far less than 90° from the prior in any supine exam, so the prior
    decides. Where 2CH/3CH/4CH planes exist, the long axis they share (the null direction of
    their normals) is compared with the SAX normal; more than ``LAX_AGREEMENT_DEG`` apart is
    reported as a warning (odd planning or mislabelled views).
  * heart long-axis stacks of ≥ 2 positions (rare): the sign making the normal's largest LPS
    component positive (no anatomical end defined).
  * knee: SAG from medial to lateral (patient left, +L, for a left knee; patient right for a
    right knee, from the DICOM laterality; +L when no laterality is recorded), COR along +P (y),
    AX along +S (z). A fixed patient axis for the sagittal stack would make 0 the medial end of
    a left knee and the lateral end of a right one, which no single slice can tell apart.

- Position index: rank of the position along the oriented normal (0 = base for SAX).
  Relative location ``(s − s_min)/(s_max − s_min)`` with ``s = n · o``; NaN for a stack of
  fewer than two positions. Phase index: the frame's rank in its position's time order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dicom.records import Frame, ScanResult, Series
from ..dicom.report import apply_views
from ..dicom.scan import scan_tree
from ..dicom.stacks import group_series_by_normal
from ..dicom.views import APEX_PRIOR_LPS
from ..geometry.planes import angle_between_normals_deg, unit
from .codes import ANATOMIES, VIEWS_BY_ANATOMY, anatomy_code, view_code
from .config import PrepareConfig

__all__ = [
    "STACK_TOL_DEG",
    "POSITION_TOL_MM",
    "LAX_AGREEMENT_DEG",
    "KNEE_AXES_LPS",
    "SliceSource",
    "SliceTable",
    "enumerate_slices",
    "orient_normal",
    "scan_slices",
]

STACK_TOL_DEG = 3.0
POSITION_TOL_MM = 0.5
LAX_AGREEMENT_DEG = 20.0
#: Knee stacks run along these patient axes (LPS): SAG → +L, COR → +P, AX → +S.
KNEE_AXES_LPS = {"SAG": np.array([1.0, 0.0, 0.0]), "COR": np.array([0.0, 1.0, 0.0]), "AX": np.array([0.0, 0.0, 1.0])}


@dataclass
class SliceSource:
    """One frame to prepare, with where it sits. ``frame.path`` is never written to the cache."""

    frame: Frame
    subject: int
    study: int
    study_key: str
    series_key: str
    anatomy: int
    view: int
    stack: int
    position: int
    n_positions: int
    phase: int
    n_phases: int
    location: float  # relative, [0, 1] or NaN
    location_mm: float  # along the oriented stack normal


@dataclass
class SliceTable:
    """Everything ``enumerate_slices`` found: slices, subject and study keys, notes."""

    slices: list[SliceSource] = field(default_factory=list)
    subject_keys: list[str] = field(default_factory=list)  # hashed PatientID per subject index
    studies: list[dict] = field(default_factory=list)  # {"key", "subject", "anatomy"} per study index
    warnings: list[str] = field(default_factory=list)
    unlabelled_series: int = 0
    unusable_series: int = 0
    #: (series folder, why) of each unusable series left out (a frame without geometry leaves out its series)
    left_out: list[tuple[str, str]] = field(default_factory=list)


def orient_normal(normal_lps: np.ndarray, anatomy: str, view: str, laterality: str = "") -> np.ndarray:
    """The stack normal with its anatomical sign (module docstring)."""
    n = unit(normal_lps)
    if anatomy == "heart" and view == "SAX":
        ref = APEX_PRIOR_LPS
    elif anatomy == "knee" and view == "SAG" and laterality == "R":
        ref = -KNEE_AXES_LPS["SAG"]  # medial -> lateral of a right knee points to the patient's right
    elif anatomy == "knee" and view in KNEE_AXES_LPS:
        ref = KNEE_AXES_LPS[view]
    else:
        ref = np.zeros(3)
        ref[int(np.argmax(np.abs(n)))] = 1.0
    return n if float(n @ ref) >= 0 else -n


def _lax_axis(series: list[Series]) -> np.ndarray | None:
    """The direction shared by the long-axis planes (null vector of their normals), if defined."""
    normals = [s.normal_lps for s in series if s.view in ("2CH", "3CH", "4CH")]
    if len(normals) < 2:
        return None
    _, sv, vt = np.linalg.svd(np.array([unit(n) for n in normals]))
    if len(sv) < 2 or sv[1] < 0.1 * sv[0]:
        return None
    return unit(vt[-1])


def enumerate_slices(result: ScanResult) -> SliceTable:
    """The slices of every usable, view-labelled series of ``result`` (views already identified)."""
    table = SliceTable()
    subject_of: dict[str, int] = {}
    stack_id = 0
    for study in result.studies:
        anatomy = study.anatomy
        labelled: list[Series] = []
        for s in study.series:
            if not s.usable or not s.positions:
                table.unusable_series += 1
                why = [p for p in s.problems if not p.startswith("series split by orientation")]
                table.left_out.append((str(s.folder), "; ".join(why[:4]) or "no usable image"))
            elif anatomy not in ANATOMIES or s.view not in VIEWS_BY_ANATOMY[anatomy]:
                table.unlabelled_series += 1
            else:
                labelled.append(s)
        if not labelled:
            continue
        assert anatomy is not None
        subject = subject_of.setdefault(study.patient_key, len(subject_of))
        if subject == len(table.subject_keys):
            table.subject_keys.append(study.patient_key)
        study_index = len(table.studies)
        table.studies.append({"key": study.key, "subject": subject, "anatomy": anatomy})
        lax_axis = _lax_axis(labelled) if anatomy == "heart" else None
        for view in VIEWS_BY_ANATOMY[anatomy]:
            for group in group_series_by_normal([s for s in labelled if s.view == view], STACK_TOL_DEG):
                normal = orient_normal(group[0].normal_lps, anatomy, view, group[0].laterality)
                if lax_axis is not None and view == "SAX":
                    angle = angle_between_normals_deg(normal, lax_axis)
                    if angle > LAX_AGREEMENT_DEG:
                        table.warnings.append(
                            f"study {study.key}: the SAX stack normal is {angle:.0f}° from the long axis shared by "
                            "the 2CH/3CH/4CH planes (base→apex still taken from the anatomical prior)"
                        )
                table.slices.extend(
                    _stack_slices(group, normal, stack_id, subject, study_index, study.key, anatomy, view)
                )
                stack_id += 1
    return table


def _stack_slices(
    group: list[Series], normal: np.ndarray, stack: int, subject: int, study: int, study_key: str, anatomy: str,
    view: str,
) -> list[SliceSource]:
    items = [(s, p) for s in group for p in s.positions]
    s_mm = np.array([float(normal @ p.plane.origin_lps) for _, p in items])
    order = np.argsort(s_mm, kind="stable")
    rank = np.zeros(len(items), dtype=np.int64)
    current, previous = 0, None
    for i in order.tolist():
        if previous is not None and s_mm[i] - previous > POSITION_TOL_MM:
            current += 1
        rank[i] = current
        previous = s_mm[i]
    n_positions = int(rank.max()) + 1 if len(items) else 0
    span = float(s_mm.max() - s_mm.min()) if len(items) else 0.0
    out = []
    for (series, position), s, r in zip(items, s_mm.tolist(), rank.tolist(), strict=True):
        rel = (s - float(s_mm.min())) / span if n_positions >= 2 and span > 0 else float("nan")
        for phase, frame in enumerate(position.frames):
            out.append(
                SliceSource(
                    frame=frame, subject=subject, study=study, study_key=study_key, series_key=series.key,
                    anatomy=anatomy_code(anatomy), view=view_code(view), stack=stack, position=int(r),
                    n_positions=n_positions, phase=phase, n_phases=len(position.frames), location=float(rel),
                    location_mm=float(s),
                )
            )
    return out


def scan_slices(data_dir: Path, config: PrepareConfig, workers: int = 1) -> tuple[SliceTable, list[tuple[str, str]]]:
    """Scan ``data_dir``, label views, enumerate slices; also returns the scan's errors (file, reason)."""
    result = scan_tree(Path(data_dir), workers=workers)
    anatomy = None if config.anatomy == "auto" else config.anatomy
    apply_views(result, anatomy_hint=anatomy, overrides=config.overrides or None)
    errors = [(str(p.path), p.message) for p in result.problems if p.kind == "error"]
    return enumerate_slices(result), errors
