"""M&Ms-2 (Multi-Disease, Multi-View & Multi-Centre RV segmentation): SAX and LAX with labels.

Layout (``MnM2/dataset``)::

    dataset_information.csv            one row per subject: SUBJECT_CODE, DISEASE, VENDOR, SCANNER, FIELD ...
    NNN/NNN_SA_ED.nii.gz, NNN_SA_ED_gt.nii.gz, NNN_SA_ES.nii.gz, NNN_SA_ES_gt.nii.gz   short axis
    NNN/NNN_LA_ED.nii.gz, NNN_LA_ED_gt.nii.gz, NNN_LA_ES.nii.gz, NNN_LA_ES_gt.nii.gz   long axis (4CH)
    NNN/NNN_SA_CINE.nii.gz, NNN_LA_CINE.nii.gz                                         cines (optional)

Label convention of M&Ms-2 (as M&Ms-1): 0 background, **LV = 1, Myo = 2, RV = 3** — the reverse
of ACDC's for the ventricles. ``mnms2_subjects`` returns labels mapped to ACDC's (RV = 1,
Myo = 2, LV = 3) by :data:`MNMS2_TO_ACDC`, so one model serves both sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._common import AdapterError, check_labels, load_nifti, read_csv_rows, require_dir, require_file

__all__ = ["MNMS2_LABELS", "MNMS2_TO_ACDC", "Mnms2Image", "Mnms2Subject", "to_acdc_labels", "mnms2_subjects"]

MNMS2_LABELS = {"background": 0, "LV": 1, "Myo": 2, "RV": 3}
#: M&Ms-2 label value -> ACDC label value.
MNMS2_TO_ACDC = {0: 0, 1: 3, 2: 2, 3: 1}
_SUBJECT_RE = re.compile(r"^\d{3}$")
_CONVENTION = "M&Ms-2: 0 background, 1 LV, 2 Myo, 3 RV"


def to_acdc_labels(labels: np.ndarray) -> np.ndarray:
    """M&Ms-2 label values mapped to ACDC's (values must already be checked)."""
    lut = np.zeros(4, dtype=np.uint8)
    for k, v in MNMS2_TO_ACDC.items():
        lut[k] = v
    return lut[labels]


@dataclass
class Mnms2Image:
    """One view at one phase: image and ACDC-convention label arrays, same grid."""

    view: str  # "SA" or "LA"
    phase: str  # "ED" or "ES"
    image: np.ndarray
    label: np.ndarray  # ACDC convention (RV 1, Myo 2, LV 3)
    affine: np.ndarray
    spacing_mm: tuple[float, ...]
    image_path: Path


@dataclass
class Mnms2Subject:
    subject: str  # "001"
    info: dict[str, str] = field(default_factory=dict)  # its row of the information CSV
    images: dict[tuple[str, str], Mnms2Image] = field(default_factory=dict)  # (view, phase)


def _read_info(path: Path) -> dict[str, dict[str, str]]:
    header, rows = read_csv_rows(path)
    keys = [h.strip() for h in header]
    col = next((i for i, h in enumerate(keys) if h.upper() in ("SUBJECT_CODE", "SUBJECT", "ID")), None)
    if col is None:
        raise AdapterError(f"{path}: no SUBJECT_CODE column (columns: {', '.join(keys)})")
    info = {}
    for n, row in enumerate(rows, start=2):
        if len(row) != len(keys):
            raise AdapterError(f"{path}: line {n}: {len(row)} fields, the header has {len(keys)}")
        code = row[col]
        info[f"{int(code):03d}" if code.isdigit() else code] = dict(zip(keys, row, strict=True))
    return info


def _image(folder: Path, subject: str, view: str, phase: str) -> Mnms2Image:
    image_path = require_file(folder / f"{subject}_{view}_{phase}.nii.gz", f"{view} {phase} image")
    label_path = require_file(folder / f"{subject}_{view}_{phase}_gt.nii.gz", f"{view} {phase} label")
    image, affine, spacing = load_nifti(image_path)
    raw, _, _ = load_nifti(label_path)
    if raw.shape != image.shape:
        raise AdapterError(f"{label_path}: label shape {raw.shape} differs from the image's {image.shape}")
    label = to_acdc_labels(check_labels(label_path, raw, tuple(MNMS2_LABELS.values()), _CONVENTION))
    return Mnms2Image(view, phase, np.asarray(image, dtype=np.float32), label, affine, spacing, image_path)


def mnms2_subjects(root: Path, info_csv: Path | None = None, views: tuple[str, ...] = ("SA", "LA"),
                   phases: tuple[str, ...] = ("ED", "ES"),
                   broken: list[tuple[str, str]] | None = None) -> list[Mnms2Subject]:
    """Every ``NNN`` subject folder under ``root``, sorted, with its images (labels in ACDC convention).

    ``info_csv`` defaults to ``root/dataset_information.csv`` when present (else the single
    ``*.csv`` in ``root``, else no subject info); a subject missing from it gets empty info.
    ``broken``: when a list is given, a subject with a missing or unreadable file is left out and
    the ``(subject, problem naming the file)`` appended to it, instead of raising; AdapterError when none is left.
    """
    root = require_dir(root, "M&Ms-2 dataset folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _SUBJECT_RE.match(p.name))
    if not folders:
        raise AdapterError(f"{root}: no NNN subject folder (is this M&Ms-2's dataset folder?)")
    if info_csv is None:
        default = root / "dataset_information.csv"
        found = [default] if default.is_file() else sorted(root.glob("*.csv"))
        info_csv = found[0] if len(found) == 1 else None
    info = _read_info(info_csv) if info_csv is not None else {}
    subjects = []
    for folder in folders:
        s = Mnms2Subject(folder.name, info.get(folder.name, {}))
        try:
            for view in views:
                for phase in phases:
                    s.images[(view, phase)] = _image(folder, folder.name, view, phase)
        except AdapterError as exc:
            if broken is None:
                raise
            broken.append((folder.name, str(exc)))
            continue
        subjects.append(s)
    if not subjects:
        raise AdapterError(f"{root}: no usable NNN subject folder ({len(folders)} found; "
                           + "; ".join(m for _, m in (broken or [])[:3]) + ")")
    return subjects
