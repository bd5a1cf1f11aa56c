"""Kaggle Second Annual Data Science Bowl (cardiac volumes): subjects and their ED/ES volumes.

Layout (as unpacked from the competition's archives)::

    train/<id>/study/sax_N/IM-XXXX-YYYY.dcm    one folder per SAX slice (its cine frames)
    train/<id>/study/2ch_N/..., 4ch_N/...       long-axis cines (some subjects lack one)
    train.csv                                   header "Id,Systole,Diastole": volumes in mL
    validate/<id>/study/...  (+ a volumes CSV of the same columns, when released)

The DICOM itself is read by the scan/inspect path (``dicom.scan``, views from geometry; the
folder names are hints). This adapter enumerates subjects, lists their series folders by kind
and attaches the end-systolic and end-diastolic volumes. Folders of another kind are listed in
``other_folders`` (not an error: the competition data holds a few).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ._common import AdapterError, read_csv_rows, require_dir

__all__ = ["DSB_SERIES_RE", "DsbSubject", "read_volumes_csv", "kaggle_dsb_subjects"]

DSB_SERIES_RE = re.compile(r"^(sax|2ch|4ch)_(\d+)$")
_COLUMNS = ("Id", "Systole", "Diastole")


@dataclass
class DsbSubject:
    split: str
    subject_id: int
    study_dir: Path
    series: dict[str, list[Path]] = field(default_factory=dict)  # "sax" / "2ch" / "4ch" -> folders (by N)
    other_folders: list[Path] = field(default_factory=list)
    systole_ml: float | None = None
    diastole_ml: float | None = None

    @property
    def n_sax(self) -> int:
        return len(self.series.get("sax", []))


def read_volumes_csv(path: Path) -> dict[int, tuple[float, float]]:
    """``{Id: (systole mL, diastole mL)}``; AdapterError names the file and line of a bad row."""
    header, rows = read_csv_rows(path)
    if tuple(header[:3]) != _COLUMNS:
        raise AdapterError(f"{path}: expected the header {','.join(_COLUMNS)}, got {','.join(header)}")
    volumes: dict[int, tuple[float, float]] = {}
    for n, row in enumerate(rows, start=2):
        try:
            sid, sys_ml, dia_ml = int(row[0]), float(row[1]), float(row[2])
        except (ValueError, IndexError):
            raise AdapterError(f"{path}: line {n}: expected an integer Id and two volumes, got {','.join(row)!r}") \
                from None
        if not (math.isfinite(sys_ml) and math.isfinite(dia_ml)) or sys_ml < 0 or dia_ml < 0:
            raise AdapterError(f"{path}: line {n}: volumes must be finite and >= 0, got {sys_ml}, {dia_ml}")
        if sys_ml > dia_ml:
            raise AdapterError(f"{path}: line {n}: systolic volume {sys_ml} exceeds the diastolic {dia_ml}")
        if sid in volumes:
            raise AdapterError(f"{path}: line {n}: Id {sid} listed twice")
        volumes[sid] = (sys_ml, dia_ml)
    return volumes


def kaggle_dsb_subjects(root: Path, split: str = "train", volumes_csv: Path | None = None) -> list[DsbSubject]:
    """Subjects of ``root/split`` sorted by Id, with series folders and (when known) volumes.

    ``volumes_csv`` defaults to ``root/train.csv`` for the train split. Raises AdapterError for a
    subject without ``study/``, a study without a SAX folder, a series folder without ``.dcm``
    files, or a volumes CSV that names no subject of the tree.
    """
    root = require_dir(root, "Data Science Bowl folder")
    split_dir = require_dir(root / split, f"the {split} split")
    if volumes_csv is None and split == "train" and (root / "train.csv").is_file():
        volumes_csv = root / "train.csv"
    volumes = read_volumes_csv(volumes_csv) if volumes_csv is not None else {}
    subjects = []
    folders = [p for p in split_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name)):
        study = require_dir(folder / "study", f"subject {folder.name} (expected <id>/study/<series>/)")
        subject = DsbSubject(split, int(folder.name), study)
        for series in sorted(p for p in study.iterdir() if p.is_dir()):
            m = DSB_SERIES_RE.match(series.name)
            if not m:
                subject.other_folders.append(series)
                continue
            if not any(series.glob("*.dcm")):
                raise AdapterError(f"{series}: series folder without .dcm files")
            subject.series.setdefault(m.group(1), []).append(series)
        for kind in subject.series:
            subject.series[kind].sort(key=lambda p: int(DSB_SERIES_RE.match(p.name).group(2)))
        if not subject.n_sax:
            raise AdapterError(f"{study}: no sax_N series folder")
        if subject.subject_id in volumes:
            subject.systole_ml, subject.diastole_ml = volumes[subject.subject_id]
        subjects.append(subject)
    if not subjects:
        raise AdapterError(f"{split_dir}: no <id> subject folder")
    if volumes and not any(s.systole_ml is not None for s in subjects):
        raise AdapterError(f"{volumes_csv}: names none of the {len(subjects)} subjects under {split_dir}")
    return subjects
