"""Grouping image headers into studies, series, plane positions and cine phases.

Rules (all distances in mm, angles in degrees, patient LPS coordinates):

- Studies by StudyInstanceUID, series by SeriesInstanceUID (both hashed). A second file with
  the SOP Instance UID of one already seen is a copy: it is ignored and noted.
- A series whose images lie in several orientations (a 3-plane localiser, a radial long-axis
  set) is **split by orientation**: images whose normals agree within
  ``ORIENTATION_TOL_DEG`` form one part. Parts get the key ``<series key>-<n>`` (n = 1, 2, ...
  in order of first appearance), ``Series.part = n``, ``Series.uid_key`` = the series' key,
  and a note in ``problems``; a split part stays usable.
- Within a part, frames whose planes coincide (``ImagePlane.is_same_plane`` within
  ``POSITION_TOL_MM`` / ``POSITION_TOL_DEG``) are the phases of one Position, ordered by
  trigger time, then temporal position, then instance number, then frame number and file.
- Positions are ordered by increasing location ``s = n̂ · o`` along the part's stack normal
  (``geometry.stacks.stack_normal_lps``, sign of the first image's normal).
- Images without usable geometry are left out of the positions; the series (every part of it)
  is then marked ``usable = False`` and its problems name each such file and the reason.
  Mixed image sizes or pixel spacings within a part, and colour images, also make it unusable.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .records import FileHeader, Frame, FrameHeader, Position, Problem, Series, Study

__all__ = [
    "ORIENTATION_TOL_DEG",
    "POSITION_TOL_DEG",
    "POSITION_TOL_MM",
    "build_studies",
    "build_series",
    "group_by_orientation",
    "group_positions",
    "phase_sort_key",
]

#: Images of one series whose normals agree within this angle belong to one part.
ORIENTATION_TOL_DEG = 1.0
#: Frames in the same plane within these tolerances are phases of one position.
POSITION_TOL_MM = 0.01
POSITION_TOL_DEG = 0.1
#: Problems listing files name at most this many and count the rest.
_MAX_NAMED = 10


def build_studies(headers: Sequence[FileHeader]) -> tuple[list[Study], list[Problem]]:
    """Group file headers into studies and series; returns (studies, problems met grouping)."""
    problems: list[Problem] = []
    seen: dict[str, Path] = {}
    by_study: dict[str, dict[str, list[FileHeader]]] = {}
    patients: dict[str, str] = {}
    for h in headers:
        if h.sop_key in seen:
            problems.append(Problem(h.path, "ignored", f"duplicate of {seen[h.sop_key]} (same SOP Instance UID)"))
            continue
        seen[h.sop_key] = h.path
        by_study.setdefault(h.study_key, {}).setdefault(h.series_uid_key, []).append(h)
        patients.setdefault(h.study_key, h.patient_key)
    studies = []
    for study_key, by_series in by_study.items():
        series: list[Series] = []
        for files in by_series.values():
            series.extend(build_series(files))
        series.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, str(s.folder), s.key))
        study = Study(key=study_key, patient_key=patients[study_key], root=_common_dir(s.folder for s in series))
        study.series = series
        notes = sorted({n for files in by_series.values() for h in files for n in h.notes})
        study.problems.extend(notes)
        studies.append(study)
    studies.sort(key=lambda s: (str(s.root), s.key))
    return studies, problems


def build_series(files: Sequence[FileHeader]) -> list[Series]:
    """One series' files as one Series, or several when split by orientation."""
    first = files[0]
    folder = _common_dir(h.path.parent for h in files)
    with_geometry: list[Frame] = []
    missing: list[tuple[Path, str]] = []
    for h in files:
        for fh in h.frames:
            if fh.plane is None:
                reason = fh.geometry_error if h.n_frames == 1 else f"frame {fh.frame_index}: {fh.geometry_error}"
                missing.append((h.path, reason))
            else:
                with_geometry.append(_frame(h, fh))
    groups = group_by_orientation(_normals(with_geometry), ORIENTATION_TOL_DEG) if with_geometry else [[]]
    parts = []
    for n, indices in enumerate(groups, start=1):
        frames = [with_geometry[i] for i in indices]
        key = first.series_uid_key if len(groups) == 1 else f"{first.series_uid_key}-{n}"
        s = Series(
            key=key,
            description=_most_common(h.description for h in files),
            folder=folder,
            series_number=first.series_number,
            modality=_most_common(h.modality for h in files),
            laterality=_most_common(h.laterality for h in files),
            uid_key=first.series_uid_key,
            part=n if len(groups) > 1 else None,
        )
        part_paths = {f.path for f in frames}
        if len(groups) == 1:
            part_paths.update(p for p, _ in missing)
        part_files = [h for h in files if h.path in part_paths]
        s.n_files = len(part_files)
        s.n_images = len(frames) + (len(missing) if len(groups) == 1 else 0)
        s.transfer_syntaxes = sorted({h.transfer_syntax for h in part_files})
        if len(groups) > 1:
            s.problems.append(f"series split by orientation: part {n} of {len(groups)}")
        if frames:
            s.positions = group_positions(frames)
            s.frames = [f for p in s.positions for f in p.frames]
        _flag_unusable(s, part_files, missing, folder)
        parts.append(s)
    return parts


def group_by_orientation(normals: np.ndarray, tol_deg: float = ORIENTATION_TOL_DEG) -> list[list[int]]:
    """Indices of unit normals ``(n, 3)`` grouped greedily by orientation (sign-free).

    Each group is led by its first member; a normal joins the first group whose leader lies
    within ``tol_deg`` (as ``geometry.stacks.group_parallel``, vectorised).
    """
    cos_tol = np.cos(np.radians(tol_deg))
    group_of = np.full(len(normals), -1)
    groups: list[list[int]] = []
    for i in range(len(normals)):
        if group_of[i] >= 0:
            continue
        members = (group_of < 0) & (np.abs(normals @ normals[i]) >= cos_tol)
        group_of[members] = len(groups)
        groups.append(np.flatnonzero(members).tolist())
    return groups


def group_positions(
    frames: Sequence[Frame], tol_mm: float = POSITION_TOL_MM, tol_deg: float = POSITION_TOL_DEG
) -> list[Position]:
    """Frames of (nearly) parallel planes grouped into positions along the stack normal.

    Frames whose planes coincide within ``tol_mm`` / ``tol_deg`` (``ImagePlane.is_same_plane``)
    are phases of one position, sorted by ``phase_sort_key``. Positions come out sorted by
    ``location_mm = n̂ · o`` along the stack normal (``geometry.stacks.stack_normal_lps``: the
    mean normal, sign of the first frame's).
    """
    if not frames:
        return []
    normals = _normals(frames)
    origins = np.array([f.plane.origin_lps for f in frames])
    signs = np.where(normals @ normals[0] >= 0, 1.0, -1.0)
    stack_normal = (normals * signs[:, None]).sum(axis=0)
    stack_normal /= np.linalg.norm(stack_normal)
    locations = origins @ stack_normal
    cos_tol = float(np.cos(np.radians(tol_deg)))
    normals_l, origins_l, locations_l = normals.tolist(), origins.tolist(), locations.tolist()
    clusters: list[tuple[int, list[int]]] = []  # (leader index, member indices)
    for i in np.argsort(locations, kind="stable").tolist():
        home = None
        for leader, members in reversed(clusters):  # sorted: only the last few can be close
            if locations_l[i] - locations_l[leader] > tol_mm:
                break
            if _same_plane(normals_l[leader], origins_l[leader], normals_l[i], origins_l[i], cos_tol, tol_mm):
                home = members
                break
        if home is None:
            clusters.append((i, [i]))
        else:
            home.append(i)
    positions = []
    for leader, members in clusters:
        phases = sorted((frames[i] for i in members), key=phase_sort_key)
        positions.append(Position(plane=phases[0].plane, frames=phases, location_mm=float(locations_l[leader])))
    return positions


def _same_plane(n_a: list[float], o_a: list[float], n_b: list[float], o_b: list[float], cos_tol: float,
                tol_mm: float) -> bool:
    """Planes (unit normal, origin) within the angle whose cosine is ``cos_tol`` and ``tol_mm`` apart."""
    if abs(n_a[0] * n_b[0] + n_a[1] * n_b[1] + n_a[2] * n_b[2]) < cos_tol:
        return False
    offset = n_a[0] * (o_b[0] - o_a[0]) + n_a[1] * (o_b[1] - o_a[1]) + n_a[2] * (o_b[2] - o_a[2])
    return abs(offset) <= tol_mm


def _normals(frames: Sequence[Frame]) -> np.ndarray:
    """Unit normals ``x × y`` of the frames' planes, ``(n, 3)``."""
    x = np.array([f.plane.x_dir_lps for f in frames])
    y = np.array([f.plane.y_dir_lps for f in frames])
    n = np.cross(x, y)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def phase_sort_key(frame: Frame) -> tuple:
    """Order of cine phases: trigger time, temporal position, instance number, frame, file."""

    def opt(v: float | int | None) -> tuple[bool, float]:
        return (v is None, float(v) if v is not None else 0.0)

    return (
        opt(frame.trigger_time_ms),
        opt(frame.temporal_position),
        opt(frame.instance_number),
        frame.frame_index,
        str(frame.path),
    )


# ----------------------------------------------------------------------------- helpers
def _frame(h: FileHeader, fh: FrameHeader) -> Frame:
    assert fh.plane is not None
    return Frame(
        path=h.path,
        frame_index=fh.frame_index,
        plane=fh.plane,
        instance_number=fh.instance_number,
        trigger_time_ms=fh.trigger_time_ms,
        temporal_position=fh.temporal_position,
        slice_thickness_mm=fh.slice_thickness_mm,
        transfer_syntax=h.transfer_syntax,
        n_frames_in_file=h.n_frames,
        stack_position=fh.stack_position,
    )


def _flag_unusable(s: Series, files: Sequence[FileHeader], missing: list[tuple[Path, str]], folder: Path) -> None:
    """Mark ``s`` unusable, with the reasons in ``s.problems``, where its images cannot be used."""
    if missing:
        s.usable = False
        total = len(s.frames) + len(missing)
        s.problems.append(f"{len(missing)} of {total} images without usable geometry")
        for path, reason in missing[:_MAX_NAMED]:
            s.problems.append(f"{_rel(path, folder)}: {reason}")
        if len(missing) > _MAX_NAMED:
            s.problems.append(f"... and {len(missing) - _MAX_NAMED} more")
    colour = [h for h in files if h.samples_per_pixel != 1]
    if colour:
        s.usable = False
        example = _rel(colour[0].path, folder)
        s.problems.append(f"colour images (SamplesPerPixel {colour[0].samples_per_pixel}), e.g. {example}")
    geometry = Counter((f.plane.shape_px, tuple(round(v, 4) for v in f.plane.spacing_mm)) for f in s.frames)
    if len(geometry) > 1:
        s.usable = False
        kinds = ", ".join(f"{r}x{c} px at {dr:g}x{dc:g} mm ({n})" for ((r, c), (dr, dc)), n in geometry.most_common())
        s.problems.append(f"mixed image sizes or pixel spacings: {kinds}")
    phases = Counter(len(p.frames) for p in s.positions)
    if len(phases) > 1:
        s.problems.append(f"positions have different numbers of phases: {min(phases)} to {max(phases)}")


def _most_common(values) -> str:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else ""


def _common_dir(paths) -> Path:
    paths = [str(p) for p in paths]
    if not paths:
        return Path()
    try:
        return Path(os.path.commonpath(paths))
    except ValueError:  # mixed absolute and relative, or different drives
        return Path(paths[0])


def _rel(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.as_posix()
