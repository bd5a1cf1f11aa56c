"""Exam-level knee data: per exam the SAG/COR/AX stacks as arrays, with the exam's ACL label.

Three sources give the same :class:`Exam` records:

- ``exams_from_dicom(root, config)`` (``preprocess.exams``, with :class:`Exam`, ``ExamError``
  and ``KNEE_VIEWS``): scans a DICOM tree (``preprocess.index.scan_slices``: views from
  the geometry, stacks ordered anatomically: SAG from medial to lateral, COR along +P, AX along +S), reads each
  exam's stacks and prepares every slice exactly as ``planessl prepare`` does
  (``preprocess.resample.prepare_image``: spacing, centred crop/pad, intensity normalisation). Exams are
  grouped by (hashed) patient; their top-level folder under ``root`` is kept in memory only, to
  match a labels file such as a phantom cohort's ``labels.csv`` (``subject,acl_tear``; a clinical cohort's
  also ``acl_grade``, read by ``read_grades_csv`` into ``Exam.grade`` for reading the errors by grade).
- ``exams_from_cache(cache, labels_by_key)``: the same arrays from a prepared cache
  (``data.cache``, content "slices"), labels keyed by the cache's hashed subject key.
- ``exams_from_mrnet(records, config)``: MRNet ``.npy`` stacks (no geometry): each slice
  normalised like the others and resized to ``size_px`` (MRNet's 256² field of view is not
  resampled to a spacing: MRNet stores none).

Where a view has several stacks, the one with the most positions is taken; cine phases other
than the first are ignored. Nothing identifying is kept: ``Exam.key`` is a hashed PatientID,
``Exam.series`` hashed series keys.

Torch helpers for training: :class:`ExamDataset` (one item per exam), :func:`collate_exams`
(pads stacks to the longest of the batch, with masks) and :func:`augment_stack` (one random
rotation/scale/flip and one intensity change for all slices of a stack, so a stack stays a
consistent volume).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import Dataset

from ..preprocess.codes import VIEW_CODES, anatomy_code
from ..preprocess.config import PrepareConfig
from ..preprocess.exams import KNEE_VIEWS, Exam, ExamError
from ..preprocess.resample import normalise_intensity
from .augment import AugmentConfig, normalised_from_pixel
from .cache import SliceCache
from .targets import pixel_affine

__all__ = [
    "ExamDataset",
    "read_labels_csv",
    "read_grades_csv",
    "attach_grades",
    "ACL_GRADES",
    "exams_from_cache",
    "exams_from_mrnet",
    "prepare_mrnet_stack",
    "attach_labels",
    "collate_exams",
    "augment_stack",
    "slice_subset",
]


# ----------------------------------------------------------------------------- labels
def _labels_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A labels CSV's header and its rows with their line numbers; ExamError naming the file when it cannot be
    read."""
    if not path.is_file():
        raise ExamError(f"{path}: no such labels file")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), list(enumerate(reader, start=2))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ExamError(f"{path}: cannot read ({exc})") from None


def read_labels_csv(path: Path, label_column: str = "acl_tear", subject_column: str = "subject") -> dict[str, int]:
    """``{subject: 0/1}`` from a CSV with a header (a phantom cohort's ``labels.csv``)."""
    path = Path(path)
    header, rows = _labels_table(path)
    for col in (subject_column, label_column):
        if col not in header:
            raise ExamError(f"{path}: no '{col}' column (columns: {', '.join(header) or 'none'})")
    labels: dict[str, int] = {}
    for line, row in rows:
        subject, value = (row.get(subject_column) or "").strip(), (row.get(label_column) or "").strip()
        if value not in ("0", "1"):
            raise ExamError(f"{path}: line {line}: {label_column} must be 0 or 1, got {value!r}")
        if not subject:
            raise ExamError(f"{path}: line {line}: empty {subject_column}")
        if subject in labels:
            raise ExamError(f"{path}: line {line}: subject {subject!r} listed twice")
        labels[subject] = int(value)
    if not labels:
        raise ExamError(f"{path}: no labelled subject")
    return labels


#: ACL grades as a labels file's ``acl_grade`` column gives them, with the ``acl_tear`` label each implies
ACL_GRADES = {"intact": 0, "partial": 1, "complete": 1}


def read_grades_csv(path: Path, grade_column: str = "acl_grade", label_column: str = "acl_tear",
                    subject_column: str = "subject") -> dict[str, str]:
    """``{subject: grade}`` from a labels CSV with an ``acl_grade`` column (a clinical phantom cohort's
    ``labels.csv``); ``{}`` when it has none. Each grade must be one of :data:`ACL_GRADES` and agree with the
    row's ``acl_tear`` (intact = 0, partial or complete = 1); ExamError naming the file and line otherwise."""
    path = Path(path)
    header, rows = _labels_table(path)
    if grade_column not in header:
        return {}
    grades: dict[str, str] = {}
    for line, row in rows:
        grade = (row.get(grade_column) or "").strip().lower()
        if grade not in ACL_GRADES:
            raise ExamError(f"{path}: line {line}: {grade_column} must be one of {', '.join(ACL_GRADES)}, "
                            f"got {grade!r}")
        label = (row.get(label_column) or "").strip()
        if label in ("0", "1") and int(label) != ACL_GRADES[grade]:
            raise ExamError(f"{path}: line {line}: {grade_column} {grade!r} contradicts {label_column} {label}")
        grades[(row.get(subject_column) or "").strip()] = grade
    return grades


def attach_grades(exams: Sequence[Exam], grades: Mapping[str, str], by: str = "folder") -> None:
    """Set each exam's ``Exam.grade`` from ``grades`` (by ``folder`` or ``key``; an exam not named: None)."""
    for exam in exams:
        exam.grade = grades.get(getattr(exam, by))


def attach_labels(exams: Sequence[Exam], labels: Mapping[str, int], source: str = "labels",
                  by: str = "folder") -> list[Exam]:
    """The exams named in ``labels`` (by ``folder`` or ``key``), each with its label.

    Raises ExamError, naming ``source``, when a labelled subject has no exam.
    """
    found = {getattr(e, by): e for e in exams}
    missing = [s for s in labels if s not in found]
    if missing:
        raise ExamError(
            f"{source}: {len(missing)} labelled subject(s) have no complete exam "
            f"(e.g. {', '.join(sorted(missing)[:3])})"
        )
    out = []
    for subject, label in labels.items():
        exam = found[subject]
        exam.label = int(label)
        out.append(exam)
    return out


def exams_from_cache(cache: SliceCache, labels_by_key: Mapping[str, int] | None = None,
                     views: Sequence[str] = KNEE_VIEWS) -> list[Exam]:
    """Exams of a prepared cache (every knee subject holding all ``views``); labels by hashed subject key."""
    index = cache.index
    keys = cache.subject_keys
    exams = []
    knee = index["anatomy"] == anatomy_code("knee")
    for subject in np.unique(index["subject"][knee]).tolist():
        rows = np.flatnonzero(knee & (index["subject"] == subject) & (index["phase"] == 0))
        stacks, series = {}, {}
        for view in views:
            r = rows[index["view"][rows] == VIEW_CODES[view]]
            if len(r) == 0:
                break
            ids, counts = np.unique(index["stack"][r], return_counts=True)
            r = r[index["stack"][r] == ids[np.argmax(counts)]]
            r = r[np.argsort(index["position"][r], kind="stable")]
            stacks[view] = np.asarray(cache.images[r], dtype=np.float32)
            series[view] = str(index["series_key"][r[0]])
        if len(stacks) != len(views):
            continue
        key = keys[subject]
        label = None if labels_by_key is None else labels_by_key.get(key)
        exams.append(Exam(key=key, stacks=stacks, series=series, label=label))
    return exams


# ----------------------------------------------------------------------------- MRNet
def prepare_mrnet_stack(stack: np.ndarray, config: PrepareConfig) -> np.ndarray:
    """``(S, 256, 256)`` uint8 → float32 ``(S, size_px, size_px)``: per-slice normalisation, then resize."""
    out = np.zeros((stack.shape[0], config.size_px, config.size_px), dtype=np.float32)
    for i, px in enumerate(stack):
        img, _ = normalise_intensity(px, config.normalisation, config.clip_percentiles)
        zoom = (config.size_px / img.shape[0], config.size_px / img.shape[1])
        out[i] = ndimage.zoom(img, zoom, order=1, grid_mode=True, mode="nearest")[: config.size_px, : config.size_px]
    return out


def exams_from_mrnet(records: Iterable, config: PrepareConfig,
                     broken: list[tuple[str, str]] | None = None) -> list[Exam]:
    """Exams from ``data.adapters.mrnet.MrnetExam`` records (stacks loaded and prepared here).

    ``broken``: when a list is given, an exam with an unreadable stack is left out and ``(exam id,
    problem naming the file)`` appended to it instead of raising (ExamError when none is left).
    """
    from .adapters._common import AdapterError
    from .adapters.mrnet import load_mrnet_stacks

    exams = []
    for rec in records:
        try:
            loaded = load_mrnet_stacks(rec)
        except AdapterError as exc:
            if broken is None:
                raise
            broken.append((rec.exam_id, str(exc)))
            continue
        stacks = {v: prepare_mrnet_stack(a, config) for v, a in loaded.items()}
        exams.append(Exam(key=f"mrnet-{rec.split}-{rec.exam_id}", stacks=stacks, label=rec.label,
                          series={v: f"mrnet-{v.lower()}" for v in stacks}))
    if not exams and broken:
        raise ExamError("no MRNet exam could be read (" + "; ".join(m for _, m in broken[:3]) + ")")
    return exams


# ----------------------------------------------------------------------------- torch side
def slice_subset(n: int, max_slices: int, rng: np.random.Generator | None) -> np.ndarray:
    """Indices of at most ``max_slices`` slices of ``n``, evenly spaced over the stack.

    With ``rng`` the grid starts at a random offset (training), else centred (evaluation).
    ``max_slices <= 0`` keeps every slice.
    """
    if max_slices <= 0 or n <= max_slices:
        return np.arange(n)
    step = n / max_slices
    start = rng.uniform(0, step) if rng is not None else step / 2
    return np.minimum((start + step * np.arange(max_slices)).astype(np.int64), n - 1)


class ExamDataset(Dataset):
    """One item per exam: ``{"stacks": {view: (S, H, W) float32}, "label": float32 ()}``.

    ``max_slices`` caps the slices per stack (:func:`slice_subset`; random offsets when
    ``train``; the epoch's draw from ``(seed, epoch, item)``, call ``set_epoch``).
    """

    def __init__(self, exams: Sequence[Exam], views: Sequence[str] = KNEE_VIEWS, max_slices: int = 0,
                 train: bool = False, seed: int = 0) -> None:
        self.exams, self.views = list(exams), tuple(views)
        self.max_slices, self.train, self.seed, self.epoch = int(max_slices), train, int(seed), 0
        for e in self.exams:
            missing = [v for v in self.views if v not in e.stacks]
            if missing:
                raise ExamError(f"exam {e.key}: no {', '.join(missing)} stack")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.exams)

    def labels(self) -> np.ndarray:
        return np.array([-1 if e.label is None else e.label for e in self.exams], dtype=np.int64)

    def __getitem__(self, i: int) -> dict:
        exam = self.exams[i]
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
        stacks = {}
        for v in self.views:
            a = exam.stacks[v]
            stacks[v] = torch.from_numpy(np.ascontiguousarray(a[slice_subset(a.shape[0], self.max_slices, rng)]))
        label = float("nan") if exam.label is None else float(exam.label)
        return {"stacks": stacks, "label": torch.tensor(label, dtype=torch.float32)}


def collate_exams(items: Sequence[dict]) -> dict:
    """Pad each view's stacks to the batch's longest: ``stacks[v]`` (B, S, H, W), ``masks[v]`` (B, S) bool."""
    views = list(items[0]["stacks"])
    stacks, masks = {}, {}
    for v in views:
        arrays = [it["stacks"][v] for it in items]
        s_max = max(a.shape[0] for a in arrays)
        h, w = arrays[0].shape[1:]
        batch = torch.zeros(len(arrays), s_max, h, w, dtype=torch.float32)
        mask = torch.zeros(len(arrays), s_max, dtype=torch.bool)
        for j, a in enumerate(arrays):
            if a.shape[1:] != (h, w):
                raise ExamError(f"view {v}: slices of {tuple(a.shape[1:])} and {(h, w)} in one batch")
            batch[j, : a.shape[0]] = a
            mask[j, : a.shape[0]] = True
        stacks[v], masks[v] = batch, mask
    return {"stacks": stacks, "masks": masks, "label": torch.stack([it["label"] for it in items])}


def augment_stack(stack: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """One random in-plane transform and intensity change applied to every slice of ``stack`` (S, H, W).

    Geometry as ``data.augment.augment_batch`` (rotation, isotropic scale, optional horizontal
    flip about the image centre; background = the stack's minimum); intensity: gamma on the
    stack rescaled to [0, 1] by its own range, then ``x·a + b``, then Gaussian noise.
    """
    s, h, w = stack.shape
    x = stack.unsqueeze(1).float()

    def uniform(lo: float, hi: float) -> float:
        return float(lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64))

    if config.geometric:
        scale = uniform(*config.scale_range)
        angle = math.radians(uniform(-config.rotation_deg, config.rotation_deg))
        flip = uniform(0.0, 1.0) < config.flip_prob
        centre = torch.tensor([[(w - 1) / 2.0, (h - 1) / 2.0]], dtype=torch.float64)
        f64 = torch.float64
        m = pixel_affine(torch.tensor([[scale, scale]], dtype=f64), torch.tensor([angle], dtype=f64), centre, centre,
                         flip_x=torch.tensor([flip]))
        n = normalised_from_pixel(h, w)
        theta = (n @ torch.linalg.inv(m) @ torch.linalg.inv(n))[:, :2, :].to(x.dtype).expand(s, 2, 3)
        grid = F.affine_grid(theta, [s, 1, h, w], align_corners=False)
        low = x.amin()
        x = F.grid_sample(x - low, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + low
    if config.intensity:
        gamma = math.exp(uniform(math.log(config.gamma_range[0]), math.log(config.gamma_range[1])))
        a, b = uniform(*config.intensity_scale), uniform(*config.intensity_shift)
        sd = uniform(*config.noise_std)
        lo, span = x.amin(), (x.amax() - x.amin()).clamp_min(1e-6)
        x = ((x - lo) / span).clamp(0.0, 1.0) ** gamma * span + lo
        x = x * a + b + torch.randn(x.shape, generator=generator, dtype=x.dtype) * sd
    return x.squeeze(1)
