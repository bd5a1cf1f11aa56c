"""Fixture trees in the labelled public data sets' own layouts, made from phantom subjects.

- :func:`write_acdc` — ACDC (``database/training``): ``patientNNN/Info.cfg`` ("key: value" lines:
  ED, ES, Group, Height, NbFrame, Weight; frames 1-based), ``patientNNN_4d.nii.gz`` (x, y, slice,
  time), ``patientNNN_frameNN.nii.gz`` and ``patientNNN_frameNN_gt.nii.gz`` (0 background,
  RV 1, Myo 2, LV 3) for the ED and ES frames. As in the release, the volumes are (x = column,
  y = row, slice) with slice 0 at the base, images int16 and labels uint8, gzip-compressed; the
  affine holds the voxel size (pixel spacing, slice spacing) and no scanner orientation
  (``oriented=True`` writes the DICOM geometry instead, in RAS, for tests that need it).
- :func:`write_mrnet` — MRNet-v1.0: ``{train,valid}/{sagittal,coronal,axial}/NNNN.npy``
  (slices, 256, 256) uint8 and ``{train,valid}-acl.csv`` without header ("NNNN,label"), exam
  numbers of valid continuing after train's.

The phantom subjects come from the session cohorts of ``Testing/conftest.py``; ``copies``
adds mirrored copies of them (columns reversed) so that a tree has enough subjects to split.
"""

from __future__ import annotations

import csv
import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from PlaneSSLLib.dicom.nifti import read_label_nifti, stack_order
from PlaneSSLLib.dicom.pixels import read_frame_pixels
from PlaneSSLLib.inference.segment import find_study_sax_stack

ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def phantom_sax_volumes(subject_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``(cine (cols, rows, k, t) int16, ED labels, ES labels (cols, rows, k) uint8, ed, es)`` of a phantom
    heart subject, slices along the DICOM normal (the order of its ``labels/sax_*.nii.gz``); ``affine_ras``
    of the labels is returned through :func:`phantom_label_affine`."""
    stack = find_study_sax_stack(subject_dir / "study")
    order = stack_order(stack.planes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cine = np.stack([np.stack([read_frame_pixels(stack.positions[i].frames[t]).T for i in order], axis=-1)
                         for t in range(stack.n_phases)], axis=-1)
    ed_labels, _ = read_label_nifti(subject_dir / "labels" / "sax_ed.nii.gz")
    es_labels, _ = read_label_nifti(subject_dir / "labels" / "sax_es.nii.gz")
    with (subject_dir.parent / "subjects.csv").open(newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["subject"] == subject_dir.name)
    return np.clip(cine, -32768, 32767).astype(np.int16), ed_labels, es_labels, int(row["ed_phase"]), \
        int(row["es_phase"])


def phantom_label_affine(subject_dir: Path) -> np.ndarray:
    return read_label_nifti(subject_dir / "labels" / "sax_ed.nii.gz")[1]


def _subjects(cohort: Path) -> list[Path]:
    return sorted(p for p in cohort.iterdir() if p.is_dir() and p.name.startswith("subject_"))


def write_acdc(cohort: Path, out: Path, copies: int = 2, oriented: bool = False) -> Path:
    """An ACDC training folder under ``out`` from the phantom heart ``cohort`` (``copies`` per subject,
    the second and later mirrored); returns ``out``. Subject ``i`` gets group ``ACDC_GROUPS[i % 5]``."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for subject_dir in _subjects(cohort):
        cine, ed_lab, es_lab, ed, es = phantom_sax_volumes(subject_dir)
        label_affine = phantom_label_affine(subject_dir)
        for c in range(copies):
            n += 1
            name = f"patient{n:03d}"
            folder = out / name
            folder.mkdir()
            flip = (lambda a: a[::-1]) if c % 2 else (lambda a: a)
            # the release: slice 0 at the base (the phantom's k = 0 is apical), x/y voxel size, no orientation
            img4, lab_ed, lab_es = (np.ascontiguousarray(flip(a)[:, :, ::-1]) for a in (cine, ed_lab, es_lab))
            if oriented:
                flipz = np.diag([1.0, 1.0, -1.0, 1.0])
                flipz[2, 3] = cine.shape[2] - 1
                affine = label_affine @ flipz
                if c % 2:
                    flipx = np.diag([-1.0, 1.0, 1.0, 1.0])
                    flipx[0, 3] = cine.shape[0] - 1
                    affine = affine @ flipx
            else:
                spacing = np.linalg.norm(label_affine[:3, :3], axis=0)
                affine = np.diag([*spacing, 1.0])
            frames = cine.shape[3]
            info = {"ED": ed + 1, "ES": es + 1, "Group": ACDC_GROUPS[(n - 1) % len(ACDC_GROUPS)],
                    "Height": 170.0 + n, "NbFrame": frames, "Weight": 70.0 + n}
            (folder / "Info.cfg").write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
            _save_nifti(folder / f"{name}_4d.nii.gz", img4, affine)
            for frame, lab in ((ed, lab_ed), (es, lab_es)):
                _save_nifti(folder / f"{name}_frame{frame + 1:02d}.nii.gz", np.ascontiguousarray(img4[..., frame]),
                            affine)
                _save_nifti(folder / f"{name}_frame{frame + 1:02d}_gt.nii.gz", lab.astype(np.uint8), affine)
    return out


# ----------------------------------------------------------------------------- MRNet
_MRNET_PLANES = {"SAG": "sagittal", "COR": "coronal", "AX": "axial"}


def write_mrnet(cohort: Path, out: Path, n_valid: int = 1, copies: int = 2) -> Path:
    """An MRNet-v1.0 folder under ``out`` from the phantom knee ``cohort``: every exam (and ``copies - 1``
    mirrored copies of each) as 256² uint8 stacks; the last ``n_valid`` exams go to ``valid``."""
    from PlaneSSLLib.data.exams import attach_labels, read_labels_csv
    from PlaneSSLLib.preprocess.config import PrepareConfig
    from PlaneSSLLib.preprocess.exams import exams_from_dicom

    prep = PrepareConfig(spacing_mm=0.6, size_px=256, dtype="float32", anatomy="knee")
    exams = attach_labels(exams_from_dicom(cohort, prep), read_labels_csv(cohort / "labels.csv"))
    exams.sort(key=lambda e: e.folder)
    records = []
    for c in range(copies):
        for e in exams:
            stacks = {v: (np.clip(a, 0, 1) * 255).round().astype(np.uint8) for v, a in e.stacks.items()}
            if c % 2:
                stacks = {v: np.ascontiguousarray(a[:, :, ::-1]) for v, a in stacks.items()}
            records.append((stacks, int(e.label)))
    splits = {"train": records[: len(records) - n_valid], "valid": records[len(records) - n_valid:]}
    number = 0
    for split, recs in splits.items():
        rows = []
        for stacks, label in recs:
            exam_id = f"{number:04d}"
            number += 1
            for view, plane in _MRNET_PLANES.items():
                folder = out / split / plane
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"{exam_id}.npy", stacks[view], allow_pickle=False)
            rows.append(f"{exam_id},{label}\n")
        (out / f"{split}-acl.csv").write_text("".join(rows))
    return out
