"""Every data-set layout (``data.sources``) scanned into the same records as a DICOM tree.

``scan_dataset(spec)`` returns a :class:`DatasetScan` whose ``result`` is a ``dicom.records.ScanResult``
(studies → series → positions → frames, views labelled), so ``inspect``, ``prepare`` and the
pretext targets treat every layout alike:

- ``dicom``, ``phantom``, ``kaggle-dsb``, ``ukbb``: ``dicom.scan.scan_tree`` (zip archives are
  read member by member, never unpacked: ``dicom.scan.read_zip_headers``), views from geometry.
  Kaggle DSB's quirks are handled and reported (:func:`dsb_quirks`).
- ``mnms2``: per subject ``NNN``, the SA and LA volumes (``NNN_{SA,LA}_CINE.nii.gz`` when present,
  else the ED and ES volumes as two phases); planes from each NIfTI affine
  (``dicom.nifti.planes_from_affine_ras``, RAS → LPS), views from geometry as for DICOM (LA is a
  4CH plane), so SA + LA give line targets exactly as a DICOM study does.
- ``acdc``: per ``patientNNN``, the SAX cine ``patientNNN_4d.nii.gz`` (else its ED/ES frames).
  ACDC's NIfTI affines are not taken as patient geometry: the voxel spacing is kept, the stack is
  placed in a canonical frame whose slice index runs along the heart's long-axis prior, so the
  relative location follows the slice order (slice 0 = location 0) — location pretext only; a
  single SAX stack per study has no partner view, so no line target is ever drawn.
- ``mrnet``: per exam, the sagittal, coronal and axial ``.npy`` stacks (no geometry in the
  release): each stack its own study in a canonical frame (1 mm pixels assumed, slices 1 mm
  apart along the view's patient axis), location from the slice order only, no line targets.

Identifiers: subject folders and file names become keys (no eid, code or UID in the records):
UK Biobank eids by ``hash_identifier`` (keyed by the installation's secret), the public names of
ACDC, M&Ms-2 and MRNet subjects by ``hash_public_name`` (alike everywhere, so their splits are).
Broken members (an unreadable NIfTI, a damaged zip member) are problems
naming the file; the others are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dicom.records import (
    Frame,
    Position,
    Problem,
    ScanResult,
    Series,
    Study,
    hash_identifier,
    hash_public_name,
)
from ..dicom.report import apply_views
from ..dicom.scan import list_files, scan_tree
from ..dicom.views import APEX_PRIOR_LPS
from ..geometry.planes import ImagePlane, unit
from ..geometry.stacks import slice_locations_mm
from .sources import DataSpec

__all__ = ["DatasetScan", "dsb_quirks", "scan_dataset"]

_MNMS2_SUBJECT = re.compile(r"^\d{3}$")
_ACDC_SUBJECT = re.compile(r"^patient\d{3}$")
_ACDC_FRAME = re.compile(r"^patient\d{3}_frame(\d+)\.nii(\.gz)?$")
#: Two SAX positions of different series closer than this along the normal are one slice acquired twice.
DUPLICATE_TOL_MM = 0.5


@dataclass
class DatasetScan:
    """A scanned data set: the records, the format read, notes for the user (quirks met and handled)."""

    format: str
    result: ScanResult
    views_note: str | None = None
    notes: list[str] = field(default_factory=list)


def scan_dataset(spec: DataSpec, workers: int = 1, anatomy: str | None = None,
                 overrides: dict[str, str] | None = None, progress=None) -> DatasetScan:
    """Scan the data set ``spec`` (format resolved, not ``auto``) into labelled records."""
    fmt, root = spec.format, Path(spec.root)
    if fmt in ("dicom", "phantom", "kaggle-dsb", "ukbb"):
        result = scan_tree(root, progress=progress, workers=workers)
        hint = "heart" if fmt in ("kaggle-dsb", "ukbb") and anatomy is None else anatomy
        note = apply_views(result, anatomy_hint=hint, overrides=overrides)
        scan = DatasetScan(fmt, result, note)
        if fmt == "kaggle-dsb":
            scan.notes.extend(dsb_quirks(result, root))
        if fmt == "ukbb":
            scan.notes.extend(_skip_ukbb_derived(result, root))
            _pseudonymise_ukbb(result)
        return scan
    if fmt == "mnms2":
        result = _scan_mnms2(root)
        note = apply_views(result, anatomy_hint="heart", overrides=overrides)
        return DatasetScan(fmt, result, note)
    if fmt == "acdc":
        return DatasetScan(fmt, _scan_acdc(root))
    if fmt == "mrnet":
        return DatasetScan(fmt, _scan_mrnet(root))
    raise ValueError(f"scan_dataset: unresolved format {fmt!r}")


_UKBB_ZIP = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.zip$", re.IGNORECASE)


def _ukbb_display(path: Path) -> Path:
    """``path`` with its ``<eid>_<field>_<i>_<j>.zip`` component shown as ``<hash>_<field>_<i>_<j>.zip``."""
    parts = list(Path(path).parts)
    for n, part in enumerate(parts):
        m = _UKBB_ZIP.match(part)
        if m:
            parts[n] = f"{hash_identifier('ukbb:' + m.group(1), 8)}_{m.group(2)}_{m.group(3)}_{m.group(4)}.zip"
    return Path(*parts) if parts else Path(path)


#: UK Biobank zips also hold series computed on the scanner from the cines (inline ventricular function
#: results); they are not acquisitions and are left out.
_UKBB_DERIVED = re.compile(r"inline[ _]?vf", re.IGNORECASE)


def _skip_ukbb_derived(result: ScanResult, root: Path) -> list[str]:
    notes = []
    for study in result.studies:
        for series in study.series:
            if series.usable and _UKBB_DERIVED.search(series.description or ""):
                series.usable = False
                series.problems.append("derived series (inline ventricular function results), not an acquisition")
                notes.append(f"{_ukbb_display(series.folder).name}: derived series {series.description!r} left out")
    return notes


def _pseudonymise_ukbb(result: ScanResult) -> None:
    """Series folders, study roots and noted (ignored) files shown without the eid
    (``<eid>_20209_2_0.zip`` -> ``<hash>_20209_2_0.zip``).

    Frames keep their real paths (they are read from there, never written to a cache or report);
    errors keep theirs too, so that the user can find the broken file.
    """
    for problem in result.problems:
        if problem.kind == "ignored":
            problem.path = _ukbb_display(problem.path)
    for study in result.studies:
        study.root = _ukbb_display(study.root)
        for series in study.series:
            series.folder = _ukbb_display(series.folder)


# ----------------------------------------------------------------------------- NIfTI series
def _nifti_header(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.affine, dtype=np.float64), tuple(int(v) for v in img.shape)


def _series_from_volumes(files: list[Path], key: str, description: str, problems: list[Problem],
                         planes: list[ImagePlane] | None = None) -> Series | None:
    """One series from NIfTI volumes on one grid (3D or 4D; phases in file order, then time).

    ``planes``: given planes (one per slice) instead of the affine's. None (and a problem naming
    the file) when the first volume is unreadable; later volumes that are unreadable or on another
    grid are named and left out.
    """
    from ..dicom.nifti import planes_from_affine_ras

    grid: tuple[np.ndarray, tuple[int, ...]] | None = None
    used: list[tuple[Path, int]] = []  # (file, phases)
    for path in files:
        try:
            affine, shape = _nifti_header(path)
            if len(shape) not in (3, 4):
                raise ValueError(f"expected a 3D or 4D volume, got shape {shape}")
            if grid is None:
                own = planes_from_affine_ras(affine, shape)
                grid = (affine, shape[:3])
                planes = planes if planes is not None else own
            elif shape[:3] != grid[1] or not np.allclose(affine, grid[0], atol=1e-3):
                problems.append(Problem(path, "error", f"not on the grid of {files[0].name} (left out)"))
                continue
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a damaged file
            problems.append(Problem(path, "error", f"not a readable NIfTI volume ({type(exc).__name__}: "
                                                   f"{' '.join(str(exc).split())})"))
            continue
        used.append((path, shape[3] if len(shape) == 4 else 1))
    if grid is None or planes is None:
        return None
    n_slices = grid[1][2]
    s = slice_locations_mm(planes, planes[0].normal_lps)
    positions = []
    for k in np.argsort(s, kind="stable").tolist():
        frames = []
        for path, n_phases in used:
            for t in range(n_phases):
                frames.append(Frame(path=path, frame_index=t * n_slices + k, plane=planes[k],
                                    temporal_position=len(frames) + 1))
        positions.append(Position(planes[k], frames, float(s[k])))
    series = Series(key=key, description=description, folder=files[0].parent, series_number=None, modality="MR",
                    frames=[f for p in positions for f in p.frames], positions=positions, uid_key=key,
                    n_files=len(used), n_images=sum(len(p.frames) for p in positions))
    return series


def _first_existing(*paths: Path) -> list[Path]:
    for group in paths:
        if group.is_file():
            return [group]
    return []


def _scan_mnms2(root: Path) -> ScanResult:
    result = ScanResult(root=root)
    subjects = sorted(p for p in root.iterdir() if p.is_dir() and _MNMS2_SUBJECT.match(p.name))
    result.files_seen = len(list_files(root)[0])
    for folder in subjects:
        code = folder.name
        study = Study(key=hash_public_name(f"mnms2:study:{code}"), patient_key=hash_public_name(f"mnms2:{code}"),
                      root=folder)
        for view, description in (("SA", "M&Ms-2 SA short axis cine"), ("LA", "M&Ms-2 LA 4CH cine")):
            cine = folder / f"{code}_{view}_CINE.nii.gz"
            files = [cine] if cine.is_file() else [
                p for p in (folder / f"{code}_{view}_ED.nii.gz", folder / f"{code}_{view}_ES.nii.gz") if p.is_file()]
            if not files:
                result.problems.append(Problem(folder, "error", f"no {view} volume ({code}_{view}_CINE.nii.gz or "
                                                                f"{code}_{view}_ED/ES.nii.gz)"))
                continue
            problems: list[Problem] = []
            series = _series_from_volumes(files, hash_public_name(f"mnms2:{code}:{view}"), description, problems)
            if series is None and files[0] == cine:  # a broken cine: fall back on the ED/ES volumes
                fallback = [p for p in (folder / f"{code}_{view}_ED.nii.gz", folder / f"{code}_{view}_ES.nii.gz")
                            if p.is_file()]
                series = _series_from_volumes(fallback, hash_public_name(f"mnms2:{code}:{view}"), description,
                                              problems) if fallback else None
            result.problems.extend(problems)
            if series is not None:
                study.series.append(series)
        if study.series:
            result.studies.append(study)
    return result


def _canonical_stack(shape: tuple[int, ...], spacing_rc_mm: tuple[float, float], gap_mm: float,
                     normal_lps: np.ndarray) -> list[ImagePlane]:
    """Planes of a stack with the given pixel spacing and shape, slice k at ``k·gap`` along ``normal_lps``."""
    n = unit(np.asarray(normal_lps, dtype=np.float64))
    helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = unit(np.cross(helper, n))
    y = np.cross(n, x)
    rows, cols = int(shape[1]), int(shape[0])
    return [ImagePlane(k * gap_mm * n, x, y, (float(spacing_rc_mm[0]), float(spacing_rc_mm[1])), (rows, cols))
            for k in range(int(shape[2]))]


def _scan_acdc(root: Path) -> ScanResult:
    result = ScanResult(root=root)
    result.files_seen = len(list_files(root)[0])
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _ACDC_SUBJECT.match(p.name)):
        name = folder.name
        cine = folder / f"{name}_4d.nii.gz"
        frames = sorted((p for p in folder.iterdir() if _ACDC_FRAME.match(p.name)),
                        key=lambda p: int(_ACDC_FRAME.match(p.name).group(1)))  # type: ignore[union-attr]
        problems: list[Problem] = []
        series = None
        for files in ([cine] if cine.is_file() else [], frames):
            if not files:
                continue
            try:
                affine, shape = _nifti_header(files[0])
                zooms = np.linalg.norm(affine[:3, :3], axis=0)
                planes = _canonical_stack(shape, (float(zooms[1]), float(zooms[0])), float(zooms[2]), APEX_PRIOR_LPS)
            except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a damaged file
                problems.append(Problem(files[0], "error", f"not a readable NIfTI volume ({type(exc).__name__}: "
                                                           f"{' '.join(str(exc).split())})"))
                continue
            series = _series_from_volumes(files, hash_public_name(f"acdc:{name}:sax"), "ACDC SAX cine", problems,
                                          planes=planes)
            if series is not None:
                break
        result.problems.extend(problems)
        if series is None:
            if not problems:
                result.problems.append(Problem(folder, "error", f"no {name}_4d.nii.gz or {name}_frameNN.nii.gz"))
            continue
        series.view, series.view_source, series.view_reason = "SAX", "layout", "ACDC holds short-axis stacks only"
        study = Study(key=hash_public_name(f"acdc:study:{name}"), patient_key=hash_public_name(f"acdc:{name}"),
                      root=folder, series=[series], anatomy="heart")
        result.studies.append(study)
    return result


#: MRNet planes -> (view label, patient axis its slices run along, LPS).
_MRNET_VIEWS = {"sagittal": ("SAG", (1.0, 0.0, 0.0)), "coronal": ("COR", (0.0, 1.0, 0.0)),
                "axial": ("AX", (0.0, 0.0, 1.0))}


def _scan_mrnet(root: Path) -> ScanResult:
    result = ScanResult(root=root)
    result.files_seen = len(list_files(root)[0])
    for split in ("train", "valid"):
        exams: dict[str, dict[str, Path]] = {}
        for plane in _MRNET_VIEWS:
            folder = root / split / plane
            if folder.is_dir():
                for p in sorted(folder.glob("*.npy")):
                    exams.setdefault(p.stem, {})[plane] = p
        for exam, files in sorted(exams.items()):
            for plane, path in files.items():
                view, axis = _MRNET_VIEWS[plane]
                try:
                    stack = np.load(path, mmap_mode="r", allow_pickle=False)
                    if stack.ndim != 3:
                        raise ValueError(f"expected (slices, rows, cols), got shape {stack.shape}")
                except Exception as exc:  # noqa: BLE001 - a damaged .npy must not end the scan
                    result.problems.append(Problem(path, "error", f"unreadable MRNet stack ({type(exc).__name__}: "
                                                                  f"{' '.join(str(exc).split())})"))
                    continue
                n, rows, cols = (int(v) for v in stack.shape)
                planes = _canonical_stack((cols, rows, n), (1.0, 1.0), 1.0, np.array(axis))
                key = hash_public_name(f"mrnet:{split}:{exam}:{plane}")
                positions = [Position(pl, [Frame(path=path, frame_index=k, plane=pl)], float(k))
                             for k, pl in enumerate(planes)]
                series = Series(key=key, description=f"MRNet {plane}", folder=path.parent, series_number=None,
                                modality="MR", frames=[p.frames[0] for p in positions], positions=positions,
                                view=view, view_source="layout", view_reason=f"MRNet {plane} folder", uid_key=key,
                                n_files=1, n_images=n)
                # one study per stack: MRNet has no geometry between its three stacks (no line targets)
                result.studies.append(Study(key=key, patient_key=hash_public_name(f"mrnet:{split}:{exam}"),
                                            root=path.parent, series=[series], anatomy="knee"))
    return result


# ----------------------------------------------------------------------------- Kaggle DSB quirks
def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def dsb_quirks(result: ScanResult, root: Path) -> list[str]:
    """Handle and report the Data Science Bowl's quirks, study by study (one line each, naming the folder).

    - a slice location acquired twice (two SAX series at one location): the later series (higher
      series number) is kept, the earlier marked unusable;
    - SAX series of one study with different pixel spacings (each is resampled to the target);
    - no 2CH or no 4CH series (their line targets are masked);
    - a SAX series folder holding several slice locations (each taken as its own position);
    - studies one level deeper than expected (``train/train/<id>/study``).
    """
    notes: list[str] = []
    if (root / "train" / "train").is_dir() or (root / "validate" / "validate").is_dir():
        notes.append(f"{root}: studies are nested one level deeper (train/train/<id>/study); read from there")
    for study in result.studies:
        if study.anatomy != "heart":
            continue
        where = _rel(study.root, root)
        sax = [s for s in study.series if s.usable and s.positions and s.view == "SAX"]
        for view in ("2CH", "4CH"):
            if not any(s.view == view and s.usable for s in study.series):
                notes.append(f"{where}: no {view} series (its line targets are masked)")
        spacings = sorted({tuple(round(v, 3) for v in s.pixel_spacing_mm) for s in sax if s.pixel_spacing_mm})
        if len(spacings) > 1:
            notes.append(f"{where}: SAX series with {len(spacings)} different pixel spacings "
                         f"({', '.join('x'.join(f'{v:g}' for v in sp) for sp in spacings)} mm; each is resampled)")
        for s in sax:
            if s.n_slices > 1:
                notes.append(f"{_rel(s.folder, root)}: one SAX series folder holds {s.n_slices} slice locations "
                             "(each taken as its own position)")
        if not sax:
            continue
        normal = sax[0].normal_lps
        located = sorted(((float(normal @ p.plane.origin_lps), s) for s in sax for p in s.positions),
                         key=lambda t: t[0])
        dropped: set[int] = set()
        for (s0, a), (s1, b) in zip(located, located[1:], strict=False):
            if a is b or s1 - s0 > DUPLICATE_TOL_MM or id(a) in dropped or id(b) in dropped:
                continue
            if a.n_slices > 1 or b.n_slices > 1:
                continue  # a multi-location series is never dropped whole
            older, newer = sorted((a, b), key=lambda s: (s.series_number or 0, str(s.folder)))
            older.usable = False
            older.problems.append(f"slice location acquired again in {newer.folder.name} (the later series is kept)")
            dropped.add(id(older))
            notes.append(f"{_rel(older.folder, root)}: same slice location as {newer.folder.name} "
                         f"(duplicated acquisition; {newer.folder.name} kept)")
    return notes
