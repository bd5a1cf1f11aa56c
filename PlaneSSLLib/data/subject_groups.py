"""Per-subject attributes of a labelled cohort (pathology, site, sequence), keyed like the caches (hashed PatientID).

Where they are read:

- the phantom layout (``planessl phantom heart``): ``COHORT/subjects.csv`` with a ``subject`` column (the
  folder ``COHORT/<subject>/``) and any attribute columns (``pathology``, ``site``, ``sequence``...);
- ACDC: ``patientNNN/Info.cfg`` lines ``Group: DCM`` (the same five codes as the phantom's ``pathology``),
  returned under the attribute ``pathology``, for folders that also hold the subject's DICOM (a NIfTI-only
  folder has no PatientID to key it by and is left out: its key is the data adapter's to give).

A subject's key is ``dicom.records.patient_key`` of the PatientID of the first DICOM file under its
folder (the key the seg cache stores), so no identifier is kept. Used to stratify the test split by
pathology (``data.splits.split_seg_subjects_stratified``) and to report Dice per pathology.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..dicom.records import patient_key
from ..errors import PlaneSSLError

__all__ = ["SubjectGroupsError", "read_subject_attributes", "subject_groups"]

#: ACDC's Info.cfg key holding the pathology group, and the attribute name it is reported under
ACDC_GROUP_KEY = "Group"


class SubjectGroupsError(PlaneSSLError, ValueError):
    """A subjects table that cannot be read, or a subject whose PatientID cannot be found; names the file."""


def _patient_key(folder: Path) -> str | None:
    """The hashed PatientID of the first readable DICOM file under ``folder`` (sorted walk), else None."""
    import pydicom

    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() in (".gz", ".nii", ".csv", ".json", ".cfg", ".txt", ".png"):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        except Exception:  # noqa: BLE001 - not DICOM: try the next file
            continue
        value = str(getattr(ds, "PatientID", "") or "")
        return patient_key(value)
    return None


def read_subject_attributes(data_dir: str | Path) -> dict[str, dict[str, str]]:
    """``{subject key: {attribute: value}}`` of a cohort folder (module docstring); empty when it has neither
    a ``subjects.csv`` nor ``Info.cfg`` files. SubjectGroupsError names an unreadable table."""
    root = Path(data_dir)
    out: dict[str, dict[str, str]] = {}
    table = root / "subjects.csv"
    if table.is_file():
        try:
            with table.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SubjectGroupsError(f"{table}: unreadable ({exc})") from None
        if rows and "subject" not in rows[0]:
            raise SubjectGroupsError(f"{table}: no 'subject' column")
        for row in rows:
            folder = root / str(row.get("subject") or "")
            key = _patient_key(folder) if row.get("subject") and folder.is_dir() else None
            if key is not None:
                out[key] = {k: str(v) for k, v in row.items() if k != "subject" and v not in (None, "")}
        return out
    for info in sorted(root.rglob("Info.cfg")):
        try:
            pairs = dict(line.split(":", 1) for line in info.read_text(encoding="utf-8").splitlines() if ":" in line)
        except (OSError, UnicodeDecodeError) as exc:
            raise SubjectGroupsError(f"{info}: unreadable ({exc})") from None
        group = pairs.get(ACDC_GROUP_KEY, "").strip()
        key = _patient_key(info.parent)
        if key is not None and group:
            out[key] = {"pathology": group}
    return out


def subject_groups(subject_keys: list[str], attributes: dict[str, dict[str, str]], column: str) -> list[str | None]:
    """``column``'s value for each of ``subject_keys`` (None where unknown)."""
    return [attributes.get(k, {}).get(column) for k in subject_keys]
