"""What ``planessl inspect`` prints: a ScanResult as one JSON object or as compact tables.

JSON schema (``SCHEMA_VERSION`` 1; keys are always present, values may be null)::

    {
      "schema_version": 1,
      "root": str,                      # the folder (or file) given, as given
      "files_seen": int,                # every file met, including ignored ones
      "images": int,                    # frames placed in series (with or without geometry)
      "counts": {"studies": int, "series": int, "usable_series": int,
                 "errors": int, "ignored": int},
      "views_note": str | null,         # why view labels are missing, when they are
      "studies": [{
        "study": str,                   # hash of StudyInstanceUID
        "patient": str,                 # hash of PatientID
        "anatomy": "heart" | "knee" | null,
        "folder": str,                  # common folder of its files, relative to root ("." = root)
        "problems": [str],
        "series": [{
          "series": str,                # hash of SeriesInstanceUID, "-<part>" when split
          "series_uid": str,            # hash of SeriesInstanceUID (same for all parts)
          "part": int | null,           # part number when split by orientation
          "series_number": int | null,
          "modality": str,
          "view": str | null, "view_source": str, "view_reason": str,
          "description": str,
          "folder": str,                # relative to root, POSIX separators
          "n_files": int, "n_images": int,
          "n_slices": int, "n_phases": int,
          "pixel_spacing_mm": [row, col] | null,
          "slice_spacing_mm": float | null,
          "slice_thickness_mm": float | null,
          "shape_px": [rows, cols] | null,
          "normal_lps": [x, y, z] | null,
          "transfer_syntaxes": [str],   # names, e.g. "JPEG 2000 Image Compression (Lossless Only)"
          "usable": bool,
          "problems": [str]
        }]
      }],
      "problems": [{"path": str, "kind": "error" | "ignored", "message": str}],  # path relative to root
      "ignored_summary": [{"message": str, "count": int, "paths": [str]}],
      "data_format": str,               # the data-set layout read (data.sources), "dicom" by default
      "layout_notes": [str]             # layout quirks met and handled (e.g. Kaggle DSB duplicates)
    }

No patient name, identifier, birth date or UID appears: studies, patients and series are
known by ``records.hash_identifier``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.uid import UID

from .records import Problem, ScanResult, Series, Study

__all__ = ["SCHEMA_VERSION", "apply_views", "scan_to_dict", "format_text", "syntax_name", "syntax_short"]

SCHEMA_VERSION = 1

_SHORT_SYNTAX = {
    "1.2.840.10008.1.2": "ImplLE",
    "1.2.840.10008.1.2.1": "ExplLE",
    "1.2.840.10008.1.2.1.99": "Deflate",
    "1.2.840.10008.1.2.2": "ExplBE",
    "1.2.840.10008.1.2.5": "RLE",
    "1.2.840.10008.1.2.4.50": "JPEG-base",
    "1.2.840.10008.1.2.4.51": "JPEG-ext",
    "1.2.840.10008.1.2.4.57": "JPEG-LL",
    "1.2.840.10008.1.2.4.70": "JPEG-LL-SV1",
    "1.2.840.10008.1.2.4.80": "JLS-LL",
    "1.2.840.10008.1.2.4.81": "JLS-NL",
    "1.2.840.10008.1.2.4.90": "J2K-LL",
    "1.2.840.10008.1.2.4.91": "J2K",
}


def syntax_name(uid: str) -> str:
    """A transfer syntax's DICOM name (its UID when unknown)."""
    name = UID(uid).name
    return name or uid


def syntax_short(uid: str) -> str:
    """A short label for the table (the name when no short form is known)."""
    return _SHORT_SYNTAX.get(uid, syntax_name(uid))


def apply_views(
    result: ScanResult, anatomy_hint: str | None = None, overrides: dict[str, str] | None = None
) -> str | None:
    """Label every series' view with ``dicom.views.identify_views``, study by study.

    Returns None, or a note when view labelling is not available in this build (the labels
    then stay None). ``anatomy_hint``: "heart", "knee" or None (tell from the images).
    """
    try:
        from .views import identify_views
    except ImportError:
        return "view identification not available in this build"
    for study in result.studies:
        identify_views(study, anatomy_hint=anatomy_hint, overrides=overrides)
    return None


# ----------------------------------------------------------------------------- JSON
def scan_to_dict(result: ScanResult, views_note: str | None = None, root_label: str | None = None,
                 data_format: str = "dicom", layout_notes: list[str] | None = None) -> dict[str, Any]:
    """The inspect JSON object (module docstring) for ``result``."""
    root = result.root
    series = [s for st in result.studies for s in st.series]
    errors = [p for p in result.problems if p.kind != "ignored"]
    ignored = [p for p in result.problems if p.kind == "ignored"]
    return {
        "schema_version": SCHEMA_VERSION,
        "root": root_label if root_label is not None else str(root),
        "files_seen": result.files_seen,
        "images": sum(s.n_images for s in series),
        "counts": {
            "studies": len(result.studies),
            "series": len(series),
            "usable_series": sum(1 for s in series if s.usable),
            "errors": len(errors),
            "ignored": len(ignored),
        },
        "views_note": views_note,
        "studies": [_study_dict(st, root) for st in result.studies],
        "problems": [_problem_dict(p, root) for p in result.problems],
        "ignored_summary": [
            {"message": message, "count": len(paths), "paths": paths}
            for message, paths in _ignored_groups(ignored, root)
        ],
        "data_format": data_format,
        "layout_notes": list(layout_notes or []),
    }


def _study_dict(study: Study, root: Path) -> dict[str, Any]:
    return {
        "study": study.key,
        "patient": study.patient_key,
        "anatomy": study.anatomy,
        "folder": _rel(study.root, root),
        "problems": list(study.problems),
        "series": [_series_dict(s, root) for s in study.series],
    }


def _series_dict(s: Series, root: Path) -> dict[str, Any]:
    spacing = s.pixel_spacing_mm
    shape = s.shape_px
    normal = s.normal_lps
    gap = s.slice_spacing_mm
    thickness = next((f.slice_thickness_mm for f in s.frames if f.slice_thickness_mm is not None), None)
    return {
        "series": s.key,
        "series_uid": s.uid_key or s.key,
        "part": s.part,
        "series_number": s.series_number,
        "modality": s.modality,
        "view": s.view,
        "view_source": s.view_source,
        "view_reason": s.view_reason,
        "description": s.description,
        "folder": _rel(s.folder, root),
        "n_files": s.n_files,
        "n_images": s.n_images,
        "n_slices": s.n_slices,
        "n_phases": s.n_phases,
        "pixel_spacing_mm": None if spacing is None else [round(float(v), 6) for v in spacing],
        "slice_spacing_mm": None if gap is None else round(float(gap), 4),
        "slice_thickness_mm": None if thickness is None else round(float(thickness), 4),
        "shape_px": None if shape is None else [int(shape[0]), int(shape[1])],
        "normal_lps": None if normal is None else [round(float(v), 5) for v in normal],
        "transfer_syntaxes": [syntax_name(t) for t in s.transfer_syntaxes],
        "usable": bool(s.usable),
        "problems": list(s.problems),
    }


def _problem_dict(p: Problem, root: Path) -> dict[str, str]:
    return {"path": _rel(p.path, root), "kind": p.kind, "message": p.message}


def _ignored_groups(ignored: list[Problem], root: Path) -> list[tuple[str, list[str]]]:
    """Ignored files grouped by message (most frequent first), paths relative to ``root``."""
    groups: dict[str, list[str]] = {}
    for p in ignored:
        groups.setdefault(_summary_message(p.message), []).append(_rel(p.path, root))
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def _summary_message(message: str) -> str:
    """Duplicates name their original; summarise them under one heading."""
    return "duplicate (same SOP Instance UID)" if message.startswith("duplicate of ") else message


# ----------------------------------------------------------------------------- text
def format_text(
    result: ScanResult, views_note: str | None = None, max_names: int = 20, root_label: str | None = None
) -> str:
    """Readable report: one table per study, then errors (every file) and ignored files.

    Ignored files are summarised per reason with at most ``max_names`` names each.
    """
    data = scan_to_dict(result, views_note, root_label)
    c = data["counts"]
    lines = [
        f"{data['root']}: {_count(c['studies'], 'study', 'studies')}, {c['series']} series "
        f"({c['usable_series']} usable), {_count(data['files_seen'], 'file')} seen, "
        f"{_count(data['images'], 'image')}, {_count(c['errors'], 'error')}, {c['ignored']} ignored",
    ]
    if views_note:
        lines.append(f"note: {views_note}")
    for study in data["studies"]:
        lines.append("")
        lines.append(
            f"Study {study['study']}  patient {study['patient']}  anatomy {study['anatomy'] or '?'}  "
            f"folder {study['folder']}"
        )
        lines.extend(f"  ! {p}" for p in study["problems"])
        lines.extend(_series_table(study["series"]))
    errors = [p for p in data["problems"] if p["kind"] != "ignored"]
    if errors:
        lines.append("")
        lines.append(f"Errors ({_count(len(errors), 'file')} skipped):")
        lines.extend(f"  {p['path']}: {p['message']}" for p in errors)
    if data["ignored_summary"]:
        lines.append("")
        lines.append(f"Ignored ({_count(c['ignored'], 'file')}):")
        for group in data["ignored_summary"]:
            names = group["paths"][:max_names]
            more = f", ... and {group['count'] - len(names)} more" if group["count"] > len(names) else ""
            lines.append(f"  {group['message']} ({group['count']}): {', '.join(names)}{more}")
    return "\n".join(lines) + "\n"


_COLUMNS = ("view", "series", "description", "folder", "slices", "phases", "spacing mm", "gap mm", "size",
            "syntax", "usable")


def _series_table(series: list[dict[str, Any]]) -> list[str]:
    rows = [_COLUMNS]
    for s in series:
        view = s["view"] or "?"
        if s["view"] and s["view_source"]:
            view = f"{view} ({s['view_source']})"
        ps = s["pixel_spacing_mm"]
        rows.append(
            (
                view,
                s["series"],
                _clip(s["description"] or "-", 28),
                s["folder"],
                str(s["n_slices"]),
                str(s["n_phases"]),
                "-" if ps is None else f"{ps[0]:.3g}x{ps[1]:.3g}",
                "-" if s["slice_spacing_mm"] is None else f"{s['slice_spacing_mm']:.3g}",
                "-" if s["shape_px"] is None else f"{s['shape_px'][0]}x{s['shape_px'][1]}",
                ",".join(syntax_short(_uid_of(n)) for n in s["transfer_syntaxes"]) or "-",
                "yes" if s["usable"] else "NO",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    out = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for s in series:
        out.extend(f"  ! {s['series']}: {p}" for p in s["problems"])
    return out


def _uid_of(name: str) -> str:
    """Back from a transfer syntax name to its UID (for the short label)."""
    return _NAME_TO_UID.get(name, name)


_NAME_TO_UID = {UID(uid).name: uid for uid in _SHORT_SYNTAX}


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form ("." for root itself); absolute if outside."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return Path(path).as_posix()
    text = rel.as_posix()
    return text or "."
