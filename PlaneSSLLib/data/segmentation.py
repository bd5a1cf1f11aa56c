"""Segmentation data: SAX stacks with their label maps, the seg cache's preparation.

Labels (ACDC; docs/conventions.md): 0 background, 1 RV, 2 Myo, 3 LV; their names, SNOMED CT
codes and manifest terminology live in ``preprocess.labels`` (inference needs them too), the
SAX stack of a study (``find_sax_stack``) in ``dicom.stacks``.

Where labels are found (the phantom layout, ``planessl phantom heart``)::

    COHORT/subjects.csv                          subject,ed_phase,es_phase,...
    COHORT/subject_0003/study/...                the DICOM study
    COHORT/subject_0003/labels/sax_ed.nii.gz     ACDC labels of the SAX stack at ED
    COHORT/subject_0003/labels/sax_es.nii.gz     ... and at ES

The subject folder is the nearest folder above a study's SAX files holding ``labels/``. A
label volume is ``(columns, rows, k)`` with slice ``k`` running along the DICOM normal
(``dicom.nifti``); its affine must equal the SAX stack's geometry (``match_label_volume``,
tolerance ``LABEL_GEOMETRY_TOL_MM``), otherwise a :class:`SegDataError` names the file.

The seg cache (``prepare_seg_cache``) is a slice cache (``data.cache``, content ``"seg"``: the
same layout, opener and checks as the pretraining cache) holding every SAX slice at ED and ES
prepared exactly like ``planessl prepare`` prepares images (``preprocess.resample.prepare_image``: same
spacing, size and intensity normalisation), and in ``labels.npy`` the label slice resampled onto
the same prepared grid by nearest neighbour (``resample_labels_to_plane``). Its index rows
(``data.cache.SEG_INDEX_DTYPE``) carry subject (index and hashed PatientID), phase kind
(0 = ED, 1 = ES), cine phase, slice ``k`` (along the DICOM normal, as in the NIfTI), the
prepared plane and the source plane's spacing/shape — never a path or a patient identifier.
Subject splits: ``data.splits``.

NIfTI data sets (``acdc:PATH``, ``mnms2:PATH``; ``data.sources``) go through the same cache:
their labelled SAX volumes (``data.seg_volumes``) give planes from the NIfTI affine and pixels
from the volume, the subjects' groups (ACDC Group, M&Ms-2 DISEASE) are kept in
``meta["subjects"][i]["group"]`` (``SliceCache.subject_groups``), and a subject whose files break
the layout is left out and named in the cache's notes.
"""

from __future__ import annotations

import csv
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..atomic import allocated_memmap
from ..dicom.nifti import planes_from_affine_ras, slice_image
from ..dicom.pixels import read_file_frames
from ..dicom.report import apply_views
from ..dicom.scan import list_files, scan_tree
from ..dicom.stack_phases import phase_frames
from ..dicom.stacks import SaxStack, find_sax_stack
from ..errors import PlaneSSLError
from ..geometry.frames import affine_ras_to_lps
from ..geometry.planes import ImagePlane
from ..preprocess.config import PrepareConfig
from ..preprocess.labels import ACDC_LABEL_NAMES
from ..preprocess.resample import canonical_sax_plane, pixel_map, prepare_image, sax_apex_direction_lps
from .cache import (
    IMAGES,
    INDEX,
    LABELS,
    SEG_INDEX_DTYPE,
    SliceCache,
    base_meta,
    cache_key,
    data_fingerprint,
    open_cache,
    reuse_cache,
    write_cache,
    write_meta,
)
from .seg_volumes import NIFTI_SEG_FORMATS, LabelledVolume, labelled_files, labelled_volumes
from .sources import DataSpec

__all__ = [
    "PHASE_KINDS",
    "SegDataError",
    "find_label_files",
    "match_label_volume",
    "prepare_seg_cache",
    "read_ed_es_phases",
    "resample_labels_to_plane",
]

#: Label geometry tolerance: origins and axis vectors of the NIfTI vs the DICOM stack, mm.
LABEL_GEOMETRY_TOL_MM = 0.01
#: Phase kinds stored in the index (``phase_kind`` field).
PHASE_KINDS = ("ED", "ES")


class SegDataError(PlaneSSLError, RuntimeError):
    """Segmentation data that cannot be used (labels missing or misaligned, no SAX stack); names the file."""


# ----------------------------------------------------------------------------- labels on disk
def find_label_files(stack: SaxStack, root: Path | None = None) -> tuple[Path, Path]:
    """``(sax_ed.nii.gz, sax_es.nii.gz)`` of the subject folder above the stack's files.

    Searches the folders above the first SAX file (up to ``root``) for ``labels/sax_ed.nii.gz``.
    Raises SegDataError naming the SAX folder when none is found or the ES file is missing.
    """
    start = stack.folder()
    stop = Path(root).resolve() if root is not None else None
    for folder in [start, *start.parents]:
        ed = folder / "labels" / "sax_ed.nii.gz"
        if ed.is_file():
            es = folder / "labels" / "sax_es.nii.gz"
            if not es.is_file():
                raise SegDataError(f"{es}: missing (the ED labels {ed.name} are there)")
            return ed, es
        if stop is not None and folder.resolve() == stop:
            break
    raise SegDataError(
        f"{start}: no labels/sax_ed.nii.gz in this or any folder above it (expected the phantom layout "
        "SUBJECT/labels/sax_{ed,es}.nii.gz)"
    )


def read_ed_es_phases(subject_dir: Path, root: Path | None = None) -> tuple[int, int]:
    """``(ed_phase, es_phase)`` of a subject folder from the nearest ``subjects.csv`` above it."""
    subject_dir = Path(subject_dir)
    stop = Path(root).resolve() if root is not None else None
    for folder in subject_dir.parents:
        table = folder / "subjects.csv"
        if table.is_file():
            try:
                with table.open(newline="", encoding="utf-8") as fh:
                    for row in csv.DictReader(fh):
                        if row.get("subject") == subject_dir.name:
                            return int(row["ed_phase"]), int(row["es_phase"])
            except (OSError, KeyError, ValueError, TypeError) as exc:
                raise SegDataError(f"{table}: unreadable (needs columns subject, ed_phase, es_phase: {exc})") from None
            raise SegDataError(f"{table}: no row for subject {subject_dir.name}")
        if stop is not None and folder.resolve() == stop:
            break
    raise SegDataError(f"{subject_dir}: no subjects.csv (subject,ed_phase,es_phase) in the folders above it")


def match_label_volume(volume: np.ndarray, affine_ras: np.ndarray, planes: Sequence[ImagePlane],
                       source: str, tol_mm: float = LABEL_GEOMETRY_TOL_MM) -> list[np.ndarray]:
    """Label slice ``(rows, cols)`` of each plane from a ``(cols, rows, k)`` volume with a voxel→RAS affine.

    Checks that the volume's in-plane axes equal each plane's ``x·Δc`` and ``y·Δr`` and that each
    plane's origin falls on a slice centre ``(0, 0, k)``; SegDataError naming ``source`` otherwise.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise SegDataError(f"{source}: expected a 3D label volume, got shape {vol.shape}")
    aff = affine_ras_to_lps(np.asarray(affine_ras, dtype=np.float64))
    inv = np.linalg.inv(aff)
    out = []
    for i, p in enumerate(planes):
        rows, cols = p.shape_px
        if vol.shape[:2] != (cols, rows):
            raise SegDataError(f"{source}: label slices are {vol.shape[1]}x{vol.shape[0]} (rows x cols) but SAX "
                               f"slice {i} is {rows}x{cols}")
        dr, dc = p.spacing_mm
        ex, ey = np.linalg.norm(aff[:3, 0] - p.x_dir_lps * dc), np.linalg.norm(aff[:3, 1] - p.y_dir_lps * dr)
        if max(ex, ey) > tol_mm:
            raise SegDataError(f"{source}: label affine axes differ from the SAX stack's orientation/pixel spacing "
                               f"(by {max(ex, ey):.3g} mm per voxel)")
        ijk = inv @ np.append(p.origin_lps, 1.0)
        k = int(round(float(ijk[2])))
        off_mm = float(np.linalg.norm(aff[:3, :3] @ (ijk[:3] - np.array([0.0, 0.0, k]))))
        if off_mm > tol_mm or not 0 <= k < vol.shape[2]:
            raise SegDataError(f"{source}: SAX slice {i} (origin {np.round(p.origin_lps, 2).tolist()} mm LPS) is not "
                               f"on a slice of the label volume (nearest k={k}, {off_mm:.3g} mm off; "
                               f"{vol.shape[2]} slices)")
        out.append(np.ascontiguousarray(vol[:, :, k].T))
    return out


def read_label_slices(path: Path, planes: Sequence[ImagePlane]) -> list[np.ndarray]:
    """The label slices of ``planes`` from a NIfTI file (geometry checked; SegDataError names the file)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        vol = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for bad files
        raise SegDataError(f"{path}: not a readable NIfTI label map ({exc})") from None
    if not np.all(np.isfinite(vol)) or np.any(vol < 0) or np.any(vol != np.round(vol)):
        raise SegDataError(f"{path}: label values must be non-negative integers")
    if vol.size and int(vol.max()) >= len(ACDC_LABEL_NAMES):
        raise SegDataError(f"{path}: label value {int(vol.max())} outside ACDC 0..{len(ACDC_LABEL_NAMES) - 1}")
    return match_label_volume(vol.astype(np.uint8), img.affine, planes, str(path))


def resample_labels_to_plane(labels: np.ndarray, source: ImagePlane, target: ImagePlane) -> np.ndarray:
    """Nearest-neighbour resampling of a label image from ``source`` onto ``target`` (a parallel plane, any
    in-plane orientation).

    The same pixel map as ``preprocess.resample.resample_to_plane`` (``pixel_map``: so labels stay on the
    image); 0 (background) outside the source. Returns uint8 ``target.shape_px``.
    """
    lab = np.asarray(labels)
    if lab.shape != source.shape_px:
        raise ValueError(f"label array {lab.shape} does not match the plane's shape {source.shape_px}")
    matrix, offset = pixel_map(source, target)
    return ndimage.affine_transform(
        lab.astype(np.uint8), matrix=matrix, offset=offset,
        output_shape=target.shape_px, order=0, mode="constant", cval=0, prefilter=False,
    ).astype(np.uint8, copy=False)


# ----------------------------------------------------------------------------- the seg cache
@dataclass
class _Item:
    subject: int
    subject_key: str
    study_key: str
    kind: int
    phase: int
    k: int
    n_k: int
    location_mm: float
    frame_path: Path | None  # DICOM: the file holding the slice's pixels (None: ``pixels`` holds them)
    frame_index: int
    plane: ImagePlane
    label: np.ndarray
    pixels: np.ndarray | None = None  # NIfTI: the slice's pixels (rows, cols)
    group: str | None = None  # the subject's diagnosis group, when the data set has one
    apex_lps: np.ndarray | None = None  # the stack's base -> apex direction (canonical orientation)


def _collect(data_dir: Path, config: PrepareConfig, require_labels: bool) -> tuple[list[_Item], list[str], list[Path]]:
    """Every SAX slice at ED and ES with its label slice; also warnings and the label files used."""
    result = scan_tree(data_dir)
    apply_views(result, anatomy_hint="heart", overrides=config.overrides or None)
    items: list[_Item] = []
    notes: list[str] = []
    label_files: list[Path] = []
    subjects: dict[str, int] = {}
    for study in result.studies:
        stack = find_sax_stack(study)
        if stack is None:
            notes.append(f"study {study.key}: no SAX stack")
            continue
        try:
            ed_path, es_path = find_label_files(stack, data_dir)
            ed, es = read_ed_es_phases(ed_path.parent.parent, data_dir)
        except SegDataError as exc:
            if require_labels:
                raise
            notes.append(f"study {study.key}: skipped ({exc})")
            continue
        if max(ed, es) >= stack.n_phases:
            raise SegDataError(f"{stack.folder()}: the SAX stack has {stack.n_phases} phase(s) but subjects.csv "
                               f"names ED {ed} / ES {es}")
        subject = subjects.setdefault(study.patient_key, len(subjects))
        planes = stack.planes
        apex = sax_apex_direction_lps(planes)
        s_mm = [float(planes[0].normal_lps @ p.origin_lps) for p in planes]
        for kind, (phase, path) in enumerate(((ed, ed_path), (es, es_path))):
            label_files.append(path)
            frames = phase_frames(stack.positions, phase)
            for k, (pos, lab, frame) in enumerate(zip(stack.positions, read_label_slices(path, planes), frames,
                                                      strict=True)):
                if frame is None:  # a missing file: never another phase's image beside this phase's labels
                    raise SegDataError(f"{pos.frames[0].path.parent}: slice {k + 1} of {len(planes)} has no image of "
                                       f"phase {phase} ({len(pos.frames)} of {stack.n_phases} phases present)")
                items.append(_Item(subject, study.patient_key, study.key, kind, phase, k, len(planes), s_mm[k],
                                   frame.path, frame.frame_index, pos.plane, lab, apex_lps=apex))
    if not items:
        raise SegDataError(f"{data_dir}: no SAX stack with ED/ES labels found ({len(result.studies)} studies; "
                           + "; ".join(notes[:3]) + ")")
    return items, notes, label_files


def _collect_volumes(volumes: Sequence[LabelledVolume]) -> list[_Item]:
    """Every slice of NIfTI SAX volumes with its label slice (planes from the affine)."""
    items: list[_Item] = []
    subjects: dict[str, int] = {}
    for v in volumes:
        subject = subjects.setdefault(v.subject_key, len(subjects))
        try:
            planes = planes_from_affine_ras(v.affine_ras, v.image.shape)
        except ValueError as exc:
            raise SegDataError(f"subject {v.subject_key}: unusable NIfTI affine ({exc})") from None
        apex = sax_apex_direction_lps(planes)
        s_mm = [float(planes[0].normal_lps @ p.origin_lps) for p in planes]
        for k, plane in enumerate(planes):
            items.append(_Item(subject, v.subject_key, v.subject_key, v.phase_kind, v.frame, k, len(planes), s_mm[k],
                               None, 0, plane, slice_image(v.label, k), slice_image(v.image, k).astype(np.float32),
                               v.group, apex))
    return items


def prepare_seg_cache(data_dir: Path | DataSpec, out_root: Path, config: PrepareConfig | None = None,
                      force: bool = False, require_labels: bool = True) -> SliceCache:
    """Build (or reuse) the seg cache (content ``"seg"``) of ``data_dir`` under ``out_root/<key>`` and open it.

    ``data_dir``: a folder of DICOM studies with labels in the phantom layout, or a resolved
    :class:`DataSpec` (``phantom``, ``dicom``, ``acdc`` or ``mnms2``). The key hashes the
    preparation config and a fingerprint of every file the cache is made from (DICOM, NIfTI and
    label files), so changed data or settings never read a stale cache.
    ``require_labels``: a DICOM study without labels is an error (default) or skipped with a note.
    """
    config = config or PrepareConfig()
    spec = data_dir if isinstance(data_dir, DataSpec) else DataSpec("dicom", Path(data_dir))
    data_dir, out_root = Path(spec.root), Path(out_root)
    if not data_dir.is_dir():
        raise SegDataError(f"{data_dir}: no such directory")
    root_resolved = out_root.resolve()
    if spec.format in NIFTI_SEG_FORMATS:
        files = labelled_files(spec)
        if not files:
            raise SegDataError(f"{data_dir}: no {spec.format} image or label file found")
    else:
        files, _ = list_files(data_dir)
        files += [p for p in data_dir.rglob("*") if p.name in ("sax_ed.nii.gz", "sax_es.nii.gz", "subjects.csv")]
    files = [f for f in files if root_resolved not in f.resolve().parents]
    fingerprint = data_fingerprint(sorted(set(files)), data_dir)
    key = cache_key(config, fingerprint, "seg")
    cache = None if force else reuse_cache(out_root, key, "seg")
    if cache is not None:
        return cache
    start = time.perf_counter()
    if spec.format in NIFTI_SEG_FORMATS:
        volumes, notes = labelled_volumes(spec)
        items = _collect_volumes(volumes)
    else:
        items, notes, _ = _collect(data_dir, config, require_labels)
    write_cache(out_root, key, lambda tmp: _write_seg_cache(tmp, items, config, key, fingerprint, notes, start))
    return open_cache(out_root / key, expect_key=key, content="seg")


def _write_seg_cache(tmp: Path, items: list[_Item], config: PrepareConfig, key: str, fingerprint: str,
                     notes: list[str], start: float) -> None:
    n, size = len(items), config.size_px
    images = allocated_memmap(tmp / IMAGES, config.dtype, (n, size, size))
    labels = allocated_memmap(tmp / LABELS, np.uint8, (n, size, size))
    index = np.zeros(n, dtype=SEG_INDEX_DTYPE)
    for i, it in enumerate(items):
        if it.pixels is not None:
            pixels = it.pixels
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pixels = read_file_frames(it.frame_path, [it.frame_index])[0]
        target = (canonical_sax_plane(it.plane, it.apex_lps, config.spacing_mm, size)
                  if config.sax_orientation == "canonical" and it.apex_lps is not None else None)
        img, dst = prepare_image(pixels, it.plane, config.spacing_mm, size, config.normalisation,
                                 config.clip_percentiles, config.antialias, target)
        images[i] = img.astype(config.dtype)
        labels[i] = resample_labels_to_plane(it.label, it.plane, dst)
        index[i] = (it.subject, it.subject_key, it.study_key, it.kind, it.phase, it.k, it.n_k, it.location_mm,
                    dst.origin_lps, dst.x_dir_lps, dst.y_dir_lps, dst.spacing_mm, dst.shape_px, it.plane.spacing_mm,
                    it.plane.shape_px)
    images.flush()
    labels.flush()
    del images, labels
    np.save(tmp / INDEX, index, allow_pickle=False)
    subject_keys: dict[int, str] = {it.subject: it.subject_key for it in items}
    groups: dict[int, str | None] = {it.subject: it.group for it in items}
    subjects = [{"key": subject_keys[s]} | ({"group": groups[s]} if groups[s] else {}) for s in sorted(subject_keys)]
    write_meta(tmp, base_meta(key, "seg", config, n, fingerprint, subjects) | {
        "label_names": list(ACDC_LABEL_NAMES), "phase_kinds": list(PHASE_KINDS), "notes": notes,
        "label_resampling": "nearest neighbour onto the prepared grid", "seconds": time.perf_counter() - start,
    })
