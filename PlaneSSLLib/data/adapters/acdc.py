"""ACDC (Automated Cardiac Diagnosis Challenge, MICCAI 2017): subjects with ED/ES images and labels.

Layout (``database/training`` or ``database/testing``)::

    patientXXX/Info.cfg                   "ED: 1", "ES: 12", "Group: DCM", "Height: 184.0",
                                          "NbFrame: 30", "Weight: 95.0" (one "key: value" a line)
    patientXXX/patientXXX_4d.nii.gz       the whole cine (x, y, slice, time)
    patientXXX/patientXXX_frameNN.nii.gz  the ED and ES frames (NN = the 1-based frame of Info.cfg)
    patientXXX/patientXXX_frameNN_gt.nii.gz   their labels: 0 background, RV = 1, Myo = 2, LV = 3

The adapter checks the Info.cfg keys and values (ED/ES within 1..NbFrame), that each frame's image
and label exist with the same shape, and that label values follow the convention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._common import AdapterError, check_labels, load_nifti, require_dir, require_file

__all__ = ["ACDC_LABELS", "INFO_KEYS", "AcdcPhase", "AcdcSubject", "read_info_cfg", "acdc_subjects"]

ACDC_LABELS = {"background": 0, "RV": 1, "Myo": 2, "LV": 3}
INFO_KEYS = ("ED", "ES", "Group", "Height", "NbFrame", "Weight")
_SUBJECT_RE = re.compile(r"^patient\d{3}$")
_CONVENTION = "ACDC: 0 background, 1 RV, 2 Myo, 3 LV"


@dataclass
class AcdcPhase:
    """One labelled frame: image and label ``(x, y, slices)`` arrays on the same voxel grid."""

    frame: int  # 1-based frame number
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray  # voxel -> scanner (RAS) mm, from the NIfTI header
    spacing_mm: tuple[float, ...]
    image_path: Path
    label_path: Path | None


@dataclass
class AcdcSubject:
    subject: str  # folder name, e.g. "patient001"
    group: str
    height_cm: float
    weight_kg: float
    n_frames: int
    ed_frame: int
    es_frame: int
    phases: dict[str, AcdcPhase] = field(default_factory=dict)  # "ED", "ES"
    cine_path: Path | None = None


def read_info_cfg(path: Path) -> dict[str, str | int | float]:
    """The keys of ``Info.cfg``, typed (ED, ES, NbFrame int; Height, Weight float; Group str)."""
    path = require_file(path, "Info.cfg of an ACDC subject")
    raw: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise AdapterError(f"{path}: line {n}: expected 'key: value', got {line.strip()!r}")
        raw[key.strip()] = value.strip()
    missing = [k for k in INFO_KEYS if k not in raw]
    if missing:
        raise AdapterError(f"{path}: missing key(s) {', '.join(missing)} (expected {', '.join(INFO_KEYS)})")
    info: dict[str, str | int | float] = {"Group": raw["Group"]}
    for key, kind in (("ED", int), ("ES", int), ("NbFrame", int), ("Height", float), ("Weight", float)):
        try:
            info[key] = kind(float(raw[key])) if kind is int else float(raw[key])
        except ValueError:
            raise AdapterError(f"{path}: {key} must be a number, got {raw[key]!r}") from None
    for key in ("ED", "ES"):
        if not 1 <= int(info[key]) <= int(info["NbFrame"]):
            raise AdapterError(f"{path}: {key} = {info[key]} outside 1..NbFrame ({info['NbFrame']})")
    return info


def _phase(folder: Path, subject: str, frame: int, with_labels: bool) -> AcdcPhase:
    image_path = require_file(folder / f"{subject}_frame{frame:02d}.nii.gz", f"frame {frame} named by Info.cfg")
    image, affine, spacing = load_nifti(image_path)
    if image.ndim != 3:
        raise AdapterError(f"{image_path}: expected a 3D frame (x, y, slices), got shape {image.shape}")
    label, label_path = None, folder / f"{subject}_frame{frame:02d}_gt.nii.gz"
    if label_path.is_file():
        raw, _, _ = load_nifti(label_path)
        if raw.shape != image.shape:
            raise AdapterError(f"{label_path}: label shape {raw.shape} differs from the image's {image.shape}")
        label = check_labels(label_path, raw, tuple(ACDC_LABELS.values()), _CONVENTION)
    elif with_labels:
        raise AdapterError(f"{label_path}: missing (label of frame {frame})")
    else:
        label_path = None
    return AcdcPhase(frame, np.asarray(image, dtype=np.float32), label, affine, spacing, image_path, label_path)


def acdc_subjects(root: Path, with_labels: bool = True,
                  broken: list[tuple[str, str]] | None = None) -> list[AcdcSubject]:
    """Every ``patientXXX`` folder under ``root``, sorted, with its ED and ES phases loaded.

    ``with_labels=False`` accepts subjects without ``_gt`` files (their ``label`` is None).
    ``broken``: when a list is given, a subject whose files break the layout is left out and the
    ``(subject, problem naming the file)`` appended to it, instead of raising; AdapterError when none is left.
    """
    root = require_dir(root, "ACDC training or testing folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _SUBJECT_RE.match(p.name))
    if not folders:
        raise AdapterError(f"{root}: no patientXXX folder (is this ACDC's database/training?)")
    subjects = []
    for folder in folders:
        try:
            subjects.append(_subject(folder, with_labels))
        except AdapterError as exc:
            if broken is None:
                raise
            broken.append((folder.name, str(exc)))
    if not subjects:
        raise AdapterError(f"{root}: no usable patientXXX folder ({len(folders)} found; "
                           + "; ".join(m for _, m in (broken or [])[:3]) + ")")
    return subjects


def _subject(folder: Path, with_labels: bool) -> AcdcSubject:
    info = read_info_cfg(folder / "Info.cfg")
    name = folder.name
    ed, es = int(info["ED"]), int(info["ES"])
    cine = folder / f"{name}_4d.nii.gz"
    subject = AcdcSubject(name, str(info["Group"]), float(info["Height"]), float(info["Weight"]),
                          int(info["NbFrame"]), ed, es, cine_path=cine if cine.is_file() else None)
    subject.phases = {"ED": _phase(folder, name, ed, with_labels), "ES": _phase(folder, name, es, with_labels)}
    return subject
