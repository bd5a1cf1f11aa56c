"""One way to name a data set: ``FORMAT:PATH`` (``--data`` on the CLI, ``data.format``/``data.root`` in configs).

Formats (:data:`DATA_FORMATS`):

- ``dicom``: any folder of DICOM studies (views identified from the geometry);
- ``phantom``: a cohort written by ``planessl phantom`` (DICOM + ``subjects.csv`` + NIfTI labels);
- ``kaggle-dsb``: Kaggle Data Science Bowl cardiac (``<id>/study/{sax,2ch,4ch}_N/*.dcm``);
- ``ukbb``: UK Biobank cardiac MR (one zip per subject and field, ``<eid>_2020{8,9}_<instance>_<array>.zip``);
- ``acdc``: ACDC (``patientNNN/Info.cfg`` + NIfTI frames and labels);
- ``mnms2``: M&Ms-2 (``NNN/NNN_{SA,LA}_{ED,ES}[_gt].nii.gz`` + ``dataset_information.csv``);
- ``mrnet``: MRNet (``{train,valid}/{sagittal,coronal,axial}/NNNN.npy`` + ``{train,valid}-acl.csv``);
- ``auto``: :func:`detect_format` looks at the folder and says which layout it chose.

:func:`parse_data_spec` reads the string; :func:`resolve_data_spec` checks the folder and
resolves ``auto``. A folder that matches no layout gets one message naming what was expected
and what was found (:class:`DataSourceError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

__all__ = [
    "DATA_FORMATS",
    "DataSourceError",
    "DataSpec",
    "LAYOUTS",
    "detect_format",
    "parse_data_spec",
    "resolve_data_spec",
]

#: Every format a data set can be named by (``auto`` resolves to one of the others).
DATA_FORMATS = ("dicom", "phantom", "kaggle-dsb", "ukbb", "acdc", "mnms2", "mrnet", "auto")

#: One line per format: the layout it expects (used in messages and the README table).
LAYOUTS = {
    "dicom": "a folder holding DICOM files (any nesting; one study per patient/study)",
    "phantom": "subjects.csv and subject_NNNN/ folders written by 'planessl phantom'",
    "kaggle-dsb": "<id>/study/sax_N/*.dcm (and 2ch_N, 4ch_N) per subject, under train/ or validate/",
    "ukbb": "<eid>_20209_<i>_<j>.zip (SAX) and <eid>_20208_<i>_<j>.zip (LAX) per subject, DICOM + manifest.csv inside",
    "acdc": "patientNNN/ folders with Info.cfg and patientNNN_frameNN[_gt].nii.gz",
    "mnms2": "NNN/ folders with NNN_SA_ED.nii.gz, NNN_LA_ED.nii.gz ... and dataset_information.csv",
    "mrnet": "train/ and valid/ with sagittal/, coronal/, axial/ .npy stacks and train-acl.csv",
}

_UKBB_ZIP = re.compile(r"^\d+_2020[89]_\d+_\d+\.zip$")
_ACDC_SUBJECT = re.compile(r"^patient\d{3}$")
_MNMS2_SUBJECT = re.compile(r"^\d{3}$")
_DSB_SERIES = re.compile(r"^(sax|2ch|4ch)_\d+$")


class DataSourceError(InputError):
    """A data set named wrongly, or a folder that does not hold the layout it was named as."""


@dataclass(frozen=True)
class DataSpec:
    """A data set: its format (never ``auto`` once resolved) and its root folder."""

    format: str
    root: Path

    def __str__(self) -> str:
        return f"{self.format}:{self.root}"


def parse_data_spec(text: str, default_format: str = "auto") -> DataSpec:
    """``FORMAT:PATH`` (or a bare ``PATH``, then ``default_format``) → :class:`DataSpec` (unchecked).

    A Windows drive letter (``C:\\data``) is a path, not a format.
    """
    text = str(text).strip()
    if not text:
        raise DataSourceError("--data: empty (expected FORMAT:PATH, FORMAT one of " + ", ".join(DATA_FORMATS) + ")")
    head, sep, tail = text.partition(":")
    if sep and head.lower() in DATA_FORMATS:
        if not tail:
            raise DataSourceError(f"--data {text}: no path after '{head}:'")
        return DataSpec(head.lower(), Path(tail).expanduser())
    if sep and len(head) > 1 and re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", head):
        raise DataSourceError(f"--data {text}: unknown format {head!r} (expected one of {', '.join(DATA_FORMATS)})")
    if default_format not in DATA_FORMATS:
        raise DataSourceError(f"unknown data format {default_format!r} (expected one of {', '.join(DATA_FORMATS)})")
    return DataSpec(default_format, Path(text).expanduser())


def _children(root: Path, limit: int = 2000) -> list[Path]:
    out = []
    for i, p in enumerate(root.iterdir()):
        if i >= limit:
            break
        out.append(p)
    return out


def _looks_like(fmt: str, root: Path) -> bool:
    """Cheap test of one layout (names only, no file is decoded)."""
    kids = _children(root)
    names = {p.name for p in kids}
    if fmt == "phantom":
        return (root / "subjects.csv").is_file() and any(n.startswith("subject_") for n in names)
    if fmt == "acdc":
        return any(_ACDC_SUBJECT.match(p.name) and (p / "Info.cfg").is_file() for p in kids if p.is_dir())
    if fmt == "mnms2":
        return any(_MNMS2_SUBJECT.match(p.name) and any(p.glob(f"{p.name}_SA_*.nii*")) for p in kids if p.is_dir())
    if fmt == "ukbb":
        return any(_UKBB_ZIP.match(n) for n in names) or any(
            p.is_dir() and any(_UKBB_ZIP.match(q.name) for q in _children(p, 50)) for p in kids[:50])
    if fmt == "mrnet":
        return any((root / s / "sagittal").is_dir() for s in ("train", "valid"))
    if fmt == "kaggle-dsb":
        for base in (root, root / "train", root / "validate", root / "train" / "train"):
            if not base.is_dir():
                continue
            for p in _children(base, 50):
                study = p / "study"
                if study.is_dir() and any(_DSB_SERIES.match(q.name) for q in _children(study, 100)):
                    return True
        return False
    if fmt == "dicom":
        return _has_dicom(root)
    raise ValueError(fmt)


def _has_dicom(root: Path, limit: int = 500) -> bool:
    """True when some file among the first ``limit`` under ``root`` carries the DICM preamble or ends in .dcm."""
    seen = 0
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        seen += 1
        if p.suffix.lower() == ".dcm":
            return True
        try:
            with p.open("rb") as fh:
                head = fh.read(132)
        except OSError:
            continue
        if len(head) == 132 and head[128:] == b"DICM":
            return True
        if seen >= limit:
            break
    return False


#: Order of detection: the specific layouts before the generic DICOM folder.
_DETECT_ORDER = ("phantom", "acdc", "mnms2", "ukbb", "mrnet", "kaggle-dsb", "dicom")


def detect_format(root: Path) -> str:
    """The layout of ``root`` (one of :data:`DATA_FORMATS` but ``auto``); DataSourceError when none fits."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"{root}: no such folder")
    for fmt in _DETECT_ORDER:
        if _looks_like(fmt, root):
            return fmt
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in _children(root, 200))[:12]
    expected = "\n".join(f"  {k}: {v}" for k, v in LAYOUTS.items())
    raise DataSourceError(f"{root}: no known data-set layout found (it holds: {', '.join(found) or 'nothing'}).\n"
                          f"Expected one of:\n{expected}")


def resolve_data_spec(spec: DataSpec | str, allowed: tuple[str, ...] | None = None) -> DataSpec:
    """Check that the folder exists and holds its layout; resolve ``auto``.

    ``allowed``: the formats the calling command can read (a clear message otherwise). A folder
    that does not hold the named layout gets a message naming the expected layout and what the
    folder holds.
    """
    if isinstance(spec, str):
        spec = parse_data_spec(spec)
    root = spec.root
    if not root.exists():
        raise DataSourceError(f"{root}: no such folder (data set {spec.format})")
    if not root.is_dir():
        raise DataSourceError(f"{root}: not a folder (a data set is a folder; format {spec.format})")
    fmt = detect_format(root) if spec.format == "auto" else spec.format
    if allowed is not None and fmt not in allowed:
        raise DataSourceError(f"{root}: format {fmt} cannot be used here (this command reads {', '.join(allowed)})")
    if spec.format != "auto" and not _looks_like(fmt, root):
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in _children(root, 200))[:12]
        raise DataSourceError(f"{root}: does not hold the {fmt} layout ({LAYOUTS[fmt]}); "
                              f"found: {', '.join(found) or 'nothing'}")
    return DataSpec(fmt, root)
