"""A knee exam's SAG/COR/AX stacks read from DICOM and prepared for the exam classifier.

``exams_from_dicom(root, config)`` scans a DICOM tree (``index.scan_slices``: views from the
geometry, stacks ordered anatomically: SAG from medial to lateral, COR along +P, AX along +S),
reads each exam's stacks and prepares every slice exactly as ``planessl prepare`` does
(``resample.prepare_image``: spacing, centred crop/pad, intensity normalisation). Exams are
grouped by (hashed) patient; their top-level folder under ``root`` is kept in memory only, to
match a labels file such as a phantom cohort's ``labels.csv`` (``subject,acl_tear``).

Where a view has several stacks, the one with the most positions is taken; cine phases other
than the first are ignored. Nothing identifying is kept: ``Exam.key`` is a hashed PatientID,
``Exam.series`` hashed series keys. The same :class:`Exam` records also come from a prepared
cache or MRNet (``data.exams``), with the labels and the torch side of training.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dicom.pixels import PixelReadError, read_file_frames
from ..errors import PlaneSSLError
from .codes import VIEW_CODES, anatomy_code
from .config import PrepareConfig
from .index import SliceSource, scan_slices
from .resample import prepare_image

__all__ = ["KNEE_VIEWS", "Exam", "ExamError", "exams_from_dicom"]

KNEE_VIEWS = ("SAG", "COR", "AX")


class ExamError(PlaneSSLError, ValueError):
    """Exam data that cannot be used (missing view, bad labels file); the message names the file."""


@dataclass
class Exam:
    """One exam: ``stacks[view]`` float32 ``(S, H, W)`` in anatomical slice order; label 1 = torn."""

    key: str  # hashed PatientID (or a data set's anonymous exam number)
    stacks: dict[str, np.ndarray]
    series: dict[str, str] = field(default_factory=dict)  # view -> hashed series key
    label: int | None = None
    folder: str = ""  # in memory only (to match labels files); never written
    #: the ACL grade where the labels file has one (``acl_grade``: intact, partial or complete), for reading the
    #: errors by grade; the task stays ``label`` (torn vs intact) and the grade enters no fingerprint
    grade: str | None = None

    def slices(self) -> dict[str, int]:
        return {v: int(a.shape[0]) for v, a in self.stacks.items()}


def _pick_stacks(rows: list[SliceSource], views: Sequence[str]) -> dict[str, list[SliceSource]]:
    """Per view: the phase-0 slices of its largest stack, ordered by position."""
    out: dict[str, list[SliceSource]] = {}
    for view in views:
        code = VIEW_CODES[view]
        stacks: dict[int, list[SliceSource]] = {}
        for s in rows:
            if s.view == code and s.phase == 0:
                stacks.setdefault(s.stack, []).append(s)
        if stacks:
            best = max(stacks.values(), key=lambda g: (len(g), -g[0].stack))
            out[view] = sorted(best, key=lambda s: s.position)
    return out


def _read_stack(slices: list[SliceSource], config: PrepareConfig) -> np.ndarray:
    by_file: dict[Path, list[int]] = {}
    for i, s in enumerate(slices):
        by_file.setdefault(s.frame.path, []).append(i)
    out = np.zeros((len(slices), config.size_px, config.size_px), dtype=np.float32)
    for path, idx in by_file.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = read_file_frames(path, [slices[i].frame.frame_index for i in idx])
        for i, px in zip(idx, pixels, strict=True):
            img, _ = prepare_image(px, slices[i].frame.plane, config.spacing_mm, config.size_px, config.normalisation,
                                   config.clip_percentiles, config.antialias)
            out[i] = img
    return out


def exams_from_dicom(root: Path, config: PrepareConfig | None = None, views: Sequence[str] = KNEE_VIEWS,
                     workers: int = 1) -> list[Exam]:
    """Every exam under ``root`` holding all ``views`` (module docstring), in folder order.

    Exams lacking a view are left out (a labelled subject without its exam is then named by
    :func:`attach_labels`).
    Raises ExamError when ``root`` does not exist or a file cannot be decoded.
    """
    root = Path(root)
    if not root.exists():
        raise ExamError(f"{root}: no such file or directory")
    config = config or PrepareConfig(anatomy="knee")
    table, _errors = scan_slices(root, config, workers=workers)
    knee = anatomy_code("knee")
    by_subject: dict[int, list[SliceSource]] = {}
    for s in table.slices:
        if s.anatomy == knee:
            by_subject.setdefault(s.subject, []).append(s)
    exams = []
    for subject, rows in by_subject.items():
        stacks = _pick_stacks(rows, views)
        if len(stacks) != len(views):
            continue
        first = Path(rows[0].frame.path)
        try:
            rel = first.relative_to(root).parts
            folder = rel[0] if len(rel) > 1 else ""
        except ValueError:
            folder = ""
        try:
            arrays = {v: _read_stack(stacks[v], config) for v in views}
        except PixelReadError as exc:
            raise ExamError(str(exc)) from None
        exams.append(Exam(key=table.subject_keys[subject], stacks=arrays,
                          series={v: stacks[v][0].series_key for v in views}, folder=folder))
    exams.sort(key=lambda e: (e.folder, e.key))
    return exams
