"""MRNet (Stanford knee MRI): per exam a sagittal, coronal and axial ``.npy`` stack and ACL labels.

Layout (``MRNet-v1.0``)::

    train/{sagittal,coronal,axial}/NNNN.npy   (slices, 256, 256) uint8, one stack per exam and plane
    valid/{sagittal,coronal,axial}/NNNN.npy   (exam numbers continue after train's)
    train-acl.csv, valid-acl.csv              no header: "NNNN,label" (label 1 = ACL tear)
    train-abnormal.csv, train-meniscus.csv, valid-...   the other tasks, same format

There is no geometry (no spacing, no orientation): of the pretext tasks only the relative
location fits, taken as the relative slice index (``relative_slice_locations``) — MRNet's stacks
run in acquisition order, whose anatomical direction is not recorded. ``mrnet_exams`` lists the
exams of a split with their label and files; ``load_mrnet_stacks`` reads and checks them; the
data layer turns them into exams for ``planessl finetune acl`` (``data.exams.exams_from_mrnet``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._common import AdapterError, read_csv_rows, require_dir, require_file

__all__ = ["MRNET_PLANES", "MRNET_TASKS", "MrnetExam", "mrnet_exams", "load_mrnet_stacks",
           "relative_slice_locations"]

#: MRNet folder -> view label.
MRNET_PLANES = {"sagittal": "SAG", "coronal": "COR", "axial": "AX"}
MRNET_TASKS = ("acl", "abnormal", "meniscus")
_SIZE = 256


@dataclass
class MrnetExam:
    split: str  # "train" or "valid"
    exam_id: str  # "0000"
    label: int | None
    paths: dict[str, Path] = field(default_factory=dict)  # view label -> .npy


def _read_labels(path: Path) -> dict[str, int]:
    _, rows = read_csv_rows(path, header=False)
    labels: dict[str, int] = {}
    for n, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise AdapterError(f"{path}: line {n}: expected 'id,label', got {','.join(row)!r}")
        raw_id, value = row
        if not raw_id.isdigit():
            raise AdapterError(f"{path}: line {n}: exam id must be a number, got {raw_id!r} (the file has no header)")
        if value not in ("0", "1"):
            raise AdapterError(f"{path}: line {n}: label must be 0 or 1, got {value!r}")
        exam_id = f"{int(raw_id):04d}"
        if exam_id in labels:
            raise AdapterError(f"{path}: line {n}: exam {exam_id} listed twice")
        labels[exam_id] = int(value)
    if not labels:
        raise AdapterError(f"{path}: no exam listed")
    return labels


def mrnet_exams(root: Path, split: str = "train", task: str = "acl",
                broken: list[tuple[str, str]] | None = None) -> list[MrnetExam]:
    """The exams of ``split`` listed in ``<split>-<task>.csv``, each with its three ``.npy`` files.

    Raises AdapterError naming the file for a missing plane folder or stack, or a malformed CSV.
    ``broken``: when a list is given, an exam with a missing stack is left out and the problem
    ``(exam id, problem naming the file)`` appended to it instead (AdapterError when no exam is left).
    """
    if split not in ("train", "valid"):
        raise AdapterError(f"split must be 'train' or 'valid', got {split!r}")
    if task not in MRNET_TASKS:
        raise AdapterError(f"task must be one of {', '.join(MRNET_TASKS)}, got {task!r}")
    root = require_dir(root, "MRNet-v1.0 folder")
    labels = _read_labels(require_file(root / f"{split}-{task}.csv", f"MRNet {task} labels of {split}"))
    folders = {view: require_dir(root / split / plane, f"MRNet {split} {plane} stacks")
               for plane, view in MRNET_PLANES.items()}
    exams = []
    for exam_id, label in sorted(labels.items()):
        paths = {}
        try:
            for view, folder in folders.items():
                paths[view] = require_file(folder / f"{exam_id}.npy", f"exam {exam_id} listed in {split}-{task}.csv")
        except AdapterError as exc:
            if broken is None:
                raise
            broken.append((exam_id, str(exc)))
            continue
        exams.append(MrnetExam(split, exam_id, label, paths))
    if not exams:
        raise AdapterError(f"{root / split}: no exam of {split}-{task}.csv has its three stacks ("
                           + "; ".join(m for _, m in (broken or [])[:3]) + ")")
    return exams


def load_mrnet_stacks(exam: MrnetExam) -> dict[str, np.ndarray]:
    """``{view: (slices, 256, 256) uint8}`` of an exam; AdapterError names a file of another shape/type."""
    out = {}
    for view, path in exam.paths.items():
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise AdapterError(f"{path}: not a readable .npy array ({exc})") from None
        if arr.ndim != 3 or arr.shape[1:] != (_SIZE, _SIZE) or arr.shape[0] < 1:
            raise AdapterError(f"{path}: expected (slices, {_SIZE}, {_SIZE}), got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise AdapterError(f"{path}: expected uint8 intensities, got {arr.dtype}")
        out[view] = arr
    return out


def relative_slice_locations(n_slices: int) -> np.ndarray:
    """Location targets of a stack without geometry: slice index / (n − 1); NaN for one slice."""
    if n_slices < 2:
        return np.full(max(n_slices, 0), np.nan, dtype=np.float32)
    return (np.arange(n_slices, dtype=np.float32) / (n_slices - 1)).astype(np.float32)
