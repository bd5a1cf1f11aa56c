"""Fine-tuning for exam-level ACL-tear classification: :class:`AclTask` and ``finetune_acl(config, ...)``.

The engine (``training/engine.py``) runs the loop, checkpoints, resume, signals and logs;
``planessl finetune acl`` and the transfer experiment call it through :data:`ACL_KIND`.

Data: knee exams (``data.exams``) with SAG/COR/AX stacks and a 0/1 label (1 = torn) — a DICOM
tree + labels CSV (a phantom cohort's ``labels.csv``), a prepared cache + labels by hashed
subject key, or MRNet (``data.adapters.mrnet``). Exams are split into training, validation
(model selection) and, with ``data.test_fraction``, test sets (the reported metrics, seen once),
stratified by label and deterministic for ``data.split_seed`` (ordered by a hash of the seed and
the exam key, so the held-out sets do not change with ``seed`` or ``labeled_subjects``).
``data.labeled_subjects = N`` then keeps N training exams (stratified, at least one of each class
when N >= 2), chosen by ``seed``.

Model: :class:`models.exam_classifier.ExamClassifier` — the PlaneSSL encoder shared by all
planes (``init``: ``"scratch"`` or an exported pretraining weights directory / ``.zip``, whose
encoder weights, architecture, input spacing/size and intensity normalisation are taken over),
slice pooling (max or attention), concatenation of the planes and an MLP to one logit.

Training: Adam with the engine's learning-rate policy (the encoder is the ``transferred`` group:
``optim.transferred_lr``, default ``optim.lr``; fixed with ``optim.freeze_transferred``, which also
keeps its BatchNorm statistics), binary cross-entropy on the logit. Class imbalance:
``data.balance`` = ``"pos_weight"`` (BCE ``pos_weight`` = negatives/positives of the training
labels, default), ``"sampler"`` (each epoch draws exams with replacement, classes equally
likely) or ``"none"``. Augmentation: one random rotation/scale/flip and intensity change per
stack (``data.exams.augment_stack``). Model selection: the epoch with the best validation AUC
(ties: lower validation loss; without a defined AUC — one class in validation — the lower
validation loss; without validation exams, the last epoch).

Outputs under ``output`` (atomic writes; nothing identifying)::

    config.yaml                 resolved configuration
    checkpoints/{best,last}.*   resumable state (training.checkpoint, safetensors, no pickle)
    metrics.csv, progress.png   one row / point per epoch (loss, validation loss/AUC/accuracy); tensorboard/
    metrics.json                metrics of the best epoch with bootstrap CIs: on the test exams when
                                data.test_fraction > 0 (validation's under "validation"), else validation;
                                "by_grade" where the labels file grades the tears (metrics_by_grade)
    model/                      model.safetensors + manifest.json (task "acl", labels intact/torn)
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.augment import AugmentConfig
from ..data.exams import (
    ExamDataset,
    attach_grades,
    attach_labels,
    augment_stack,
    collate_exams,
    exams_from_cache,
    exams_from_mrnet,
    read_grades_csv,
    read_labels_csv,
)
from ..data.splits import split_exams
from ..inference.classify import ACL_LABELS
from ..inference.weights import build_manifest, export_weights, load_exported
from ..models.exam_classifier import POOLINGS, SPATIAL_POOLINGS, ExamClassifier, ExamClassifierConfig
from ..models.unet import UNetConfig
from ..preprocess.config import PrepareConfig
from ..preprocess.exams import KNEE_VIEWS, Exam, ExamError, exams_from_dicom
from .cls_metrics import classification_metrics, roc_auc, sensitivity, specificity
from .config import ConfigError, RunConfig, TrainOptim, TrainRuntime, check_choice, check_minimums, run_config_loaders
from .distributed import DistInfo
from .engine import Engine, Task, finite_or_none
from .finetune import FinetuneKind, FinetuneSummary, InitConfig, check_finetune, run_overrides, write_result_json
from .signals import GracefulStop

__all__ = [
    "AclConfig",
    "AclTask",
    "ACL_KIND",
    "AclResult",
    "load_acl_config",
    "acl_config_from_dict",
    "load_exams",
    "finetune_acl",
]

log = logging.getLogger("planessl.training")

_SCRATCH_SPACING_MM = 3.0
_SCRATCH_SIZE = 64


# ----------------------------------------------------------------------------- configuration
@dataclass
class AclDataConfig:
    """Where the exams come from and how they are prepared, split and augmented."""

    source: str = "dicom"  #: "dicom" (tree + labels CSV), "cache" (prepared cache + labels) or "mrnet"
    format: str | None = None  #: a data set's layout (ACL_DATA_FORMATS or auto, with data.root); decides data.source
    root: str | None = None  #: dicom: the data folder; mrnet: the MRNet-v1.0 folder
    labels: str | None = None  #: dicom: CSV subject,acl_tear (default ROOT/labels.csv); cache: CSV subject,acl_tear
    cache: str | None = None  #: cache: the prepared cache folder (subjects by hashed key)
    spacing_mm: float | None = None  #: null: the pretrained model's (3.0 from scratch)
    image_size: int | None = None  #: null: the pretrained model's (64 from scratch)
    normalisation: str = "minmax"  #: from scratch; a pretrained model's is used otherwise
    val_fraction: float = 0.25  #: exams held out for validation: model selection (stratified)
    test_fraction: float = 0.0  #: exams held out for testing: the reported metrics (stratified; 0: validation's)
    split_seed: int = 0  #: the train/validation/test split (independent of runtime.seed)
    labeled_subjects: int | None = None  #: labelled training exams, chosen by runtime.seed (null: the whole pool)
    max_slices: int = 0  #: slices per stack per training step (evenly spaced; 0 = all)
    balance: str = "pos_weight"  #: "pos_weight", "sampler" or "none"
    augment: bool = True
    augment_options: dict[str, Any] = field(default_factory=dict)  #: AugmentConfig fields


@dataclass
class AclModelConfig:
    """The encoder from scratch (a pretrained one brings its own) and the classification head."""

    base_filters: int = 8
    levels: int = 4
    norm: str = "batch"
    pooling: str = "max"  #: over slices: "max" or "attention" (models.exam_classifier)
    hidden: int = 64
    attention_hidden: int = 32
    dropout: float = 0.0
    spatial_pooling: str = "mean"  #: over each slice's bottleneck pixels: "mean" or "max" (models.exam_classifier)


@dataclass
class AclInitConfig(InitConfig):
    transfer: str = "encoder"  #: the classifier takes over the pretrained encoder only


@dataclass
class AclOptimConfig(TrainOptim):
    """Adam at a constant rate by default; ``batch_size`` exams per step."""

    weight_decay: float = 1e-4
    epochs: int = 20
    batch_size: int = 2
    decay_factor: float = 1.0


@dataclass
class AclEvalConfig:
    threshold: float = 0.5  #: decision threshold (stored in the manifest)
    bootstrap: int = 1000  #: bootstrap resamples for the confidence intervals
    confidence: float = 0.95


@dataclass
class AclRuntimeConfig(TrainRuntime):
    log_every: int = 5


@dataclass
class AclConfig(RunConfig):
    data: AclDataConfig = field(default_factory=AclDataConfig)
    model: AclModelConfig = field(default_factory=AclModelConfig)
    init: AclInitConfig = field(default_factory=AclInitConfig)
    optim: AclOptimConfig = field(default_factory=AclOptimConfig)
    evaluation: AclEvalConfig = field(default_factory=AclEvalConfig)
    runtime: AclRuntimeConfig = field(default_factory=AclRuntimeConfig)
    output: str = "runs/acl"


#: the data-set formats ``finetune acl`` reads (``data.sources``): knee DICOM + labels CSV, or MRNet
ACL_DATA_FORMATS = ("phantom", "dicom", "mrnet")


def _check(cfg: AclConfig, bad) -> None:
    d, m, e = cfg.data, cfg.model, cfg.evaluation
    check_choice(bad, "data.source", d.source, ("dicom", "cache", "mrnet"))
    if d.format is not None:
        check_choice(bad, "data.format", d.format, (*ACL_DATA_FORMATS, "auto"))
        if not d.root:
            bad("data.root", "required with data.format")
    elif d.source in ("dicom", "mrnet") and not d.root:
        bad("data.root", f"required when data.source is {d.source!r}")
    if d.format is None and d.source == "cache" and not (d.cache and d.labels):
        bad("data.cache", "data.cache and data.labels are required when data.source is 'cache'")
    if d.spacing_mm is not None and d.spacing_mm <= 0:
        bad("data.spacing_mm", f"must be > 0, got {d.spacing_mm}")
    if d.image_size is not None and d.image_size < 8:
        bad("data.image_size", f"must be >= 8, got {d.image_size}")
    if not 0.0 <= d.val_fraction < 1.0:
        bad("data.val_fraction", f"must be in [0, 1), got {d.val_fraction}")
    if not 0.0 <= d.test_fraction < 1.0 or d.val_fraction + d.test_fraction >= 1.0:
        bad("data.test_fraction", f"must be in [0, 1) with val_fraction + test_fraction < 1, got {d.test_fraction}")
    check_minimums(bad, "data", d, max_slices=0)
    check_choice(bad, "data.balance", d.balance, ("pos_weight", "sampler", "none"))
    check_choice(bad, "model.pooling", m.pooling, POOLINGS)
    check_choice(bad, "model.spatial_pooling", m.spatial_pooling, SPATIAL_POOLINGS)
    check_minimums(bad, "model", m, hidden=1, attention_hidden=1)
    if not 0.0 <= m.dropout < 1.0:
        bad("model.dropout", f"must be in [0, 1), got {m.dropout}")
    check_finetune(cfg, bad, ("encoder",))  # the exam classifier takes over the encoder only
    if not 0.0 < e.threshold < 1.0:
        bad("evaluation.threshold", f"must be in (0, 1), got {e.threshold}")
    if e.bootstrap < 0 or not 0.0 < e.confidence < 1.0:
        bad("evaluation.bootstrap", "bootstrap must be >= 0 and confidence in (0, 1)")


#: validated configs from a mapping or a YAML file (ConfigError naming the file or --set, and the key)
acl_config_from_dict, load_acl_config = run_config_loaders(AclConfig, _check)


# ----------------------------------------------------------------------------- data
_EXAM_MEMO: dict[tuple, list[Exam]] = {}


def data_source(data: AclDataConfig) -> str:
    """``data.source`` as ``data.format`` decides it (``mrnet``, or ``dicom`` for a phantom/DICOM tree)."""
    if data.format is None:
        return data.source
    from ..data.sources import DataSpec, resolve_data_spec

    spec = resolve_data_spec(DataSpec(data.format, Path(data.root or "")), allowed=ACL_DATA_FORMATS)
    if data.format == "auto":
        log.info("data.root %s: detected the %s layout", spec.root, spec.format)
    return "mrnet" if spec.format == "mrnet" else "dicom"


def load_exams(data: AclDataConfig, prep: PrepareConfig, memo: bool = True) -> list[Exam]:
    """The labelled exams of ``data`` prepared with ``prep`` (memoised in-process per source and settings)."""
    source = data_source(data)
    key = (source, data.root, data.labels, data.cache, prep.digest())
    if memo and key in _EXAM_MEMO:
        return _EXAM_MEMO[key]
    if source == "dicom":
        root = Path(data.root or "")
        labels_path = Path(data.labels) if data.labels else root / "labels.csv"
        labels = read_labels_csv(labels_path)
        exams = attach_labels(exams_from_dicom(root, prep), labels, str(labels_path))
        attach_grades(exams, read_grades_csv(labels_path))
    elif source == "cache":
        from ..data.cache import open_cache

        labels = read_labels_csv(Path(data.labels or ""))
        exams = [e for e in exams_from_cache(open_cache(Path(data.cache or "")), labels) if e.label is not None]
        attach_grades(exams, read_grades_csv(Path(data.labels or "")), by="key")
        if not exams:
            raise ExamError(f"{data.labels}: names none of the cache's subjects (hashed keys expected)")
    else:
        from ..data.adapters.mrnet import mrnet_exams

        broken: list[tuple[str, str]] = []
        exams = exams_from_mrnet(mrnet_exams(Path(data.root or ""), "train", "acl", broken=broken), prep, broken)
        for _, problem in broken:
            log.warning("MRNet exam left out: %s", problem)
    if memo:
        _EXAM_MEMO[key] = exams
    return exams


# ----------------------------------------------------------------------------- model
@dataclass
class _Init:
    encoder: UNetConfig
    state: dict[str, torch.Tensor] | None
    prep: PrepareConfig
    record: dict[str, Any]  # what the manifest says about the initialisation


def _resolve_init(init: str | Path, cfg: AclConfig) -> _Init:
    d, m = cfg.data, cfg.model
    if str(init) == "scratch":
        enc = UNetConfig(base_filters=m.base_filters, levels=m.levels, norm=m.norm, line_channels=0,
                         location_head=False)
        prep = PrepareConfig(spacing_mm=d.spacing_mm or _SCRATCH_SPACING_MM, size_px=d.image_size or _SCRATCH_SIZE,
                             normalisation=d.normalisation, dtype="float32", anatomy="knee")
        return _Init(enc, None, prep, {"kind": "scratch"})
    net, manifest = load_exported(init)
    inp = manifest["input"]
    size, spacing = int(inp["size_hw"][0]), float(inp["spacing_mm"][0])
    norm = manifest.get("intensity_normalisation") or {}
    for name, wanted, have in (("data.image_size", d.image_size, size), ("data.spacing_mm", d.spacing_mm, spacing)):
        if wanted is not None and float(wanted) != float(have):
            log.warning("%s = %s differs from the pretrained model's %s: using %s", name, wanted, have, wanted)
    prep = PrepareConfig(
        spacing_mm=d.spacing_mm or spacing, size_px=d.image_size or size,
        normalisation=norm.get("method", d.normalisation),
        clip_percentiles=tuple(norm.get("clip_percentiles", (0.5, 99.5))), dtype="float32", anatomy="knee",
    )
    enc = dataclasses.replace(net.config, line_channels=0, location_head=False, head_views=(),
                              location_pooling="mean")
    state = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    # weights_sha256 / model_id: the pretrained file's own (the manifest fields of that name, None for
    # old exports); encoder_sha256: 16 hex digits over the encoder tensors actually transferred
    record = {"kind": "pretrained", "task": manifest.get("task"), "data_fingerprint": manifest.get("data_fingerprint"),
              "weights_sha256": manifest.get("weights_sha256"), "model_id": manifest.get("model_id"),
              "encoder_sha256": hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()[:16]}
    return _Init(enc, state, prep, record)


# ----------------------------------------------------------------------------- training
@dataclass
class AclResult(FinetuneSummary):
    """What :func:`finetune_acl` produced; ``metrics`` are the reported ones (test, else validation)."""

    output: Path
    init: str
    labeled_subjects: int
    seed: int
    best_epoch: int
    metrics: dict[str, Any]
    weights: Path
    history: list[dict[str, Any]]
    n_train: int
    n_val: int
    n_test: int = 0
    #: metrics of the best epoch on the validation exams (they selected it); ``metrics`` holds the reported
    #: ones: the test exams' when there is a test split, else these
    val_metrics: dict[str, Any] = field(default_factory=dict)
    transfer: str | None = None
    task: str = "acl"
    headline_metric: str = "auc"

    @property
    def evaluated_on(self) -> str:
        return "test" if self.n_test else "val"

    @property
    def headline(self) -> float | None:
        return (self.metrics.get("auc") or {}).get("value")

    def results_rows(self) -> list[dict[str, Any]]:
        """Rows ``task,init,labeled_subjects,seed,metric,value`` (docs/conventions.md, 'Results CSV') for
        results.csv: ``auc``, ``accuracy``, ... (+ ``_ci_low``/``_ci_high``) on the reported split (test, or
        validation without a test split) and ``val_auc``, ... on the validation exams that selected the epoch;
        with graded exams also ``auc grade partial|complete`` (that grade against every intact exam),
        ``sensitivity grade partial|complete`` and ``specificity grade intact`` on the reported split."""
        rows = []
        for prefix, metrics in (("", self.metrics), ("val_", self.val_metrics or self.metrics)):
            for name in ("auc", "accuracy", "sensitivity", "specificity"):
                mv = metrics.get(name) or {}
                for suffix, key in (("", "value"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
                    value = mv.get(key)
                    rows.append({"task": "acl", "init": self.init, "labeled_subjects": self.labeled_subjects,
                                 "seed": self.seed, "metric": f"{prefix}{name}{suffix}",
                                 "value": float("nan") if value is None else value})
        for grade, values in (self.metrics.get("by_grade") or {}).items():
            for name in ("auc", "sensitivity", "specificity"):
                if name in values:
                    value = values[name]
                    rows.append({"task": "acl", "init": self.init, "labeled_subjects": self.labeled_subjects,
                                 "seed": self.seed, "metric": f"{name} grade {grade}",
                                 "value": float("nan") if value is None else value})
        return rows


def _augment_config(data: AclDataConfig) -> AugmentConfig | None:
    if not data.augment:
        return None
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in data.augment_options.items()}
    try:
        return AugmentConfig(**opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError([f"data.augment_options: {exc}"]) from exc


def _epoch_order(labels: np.ndarray, balance: str, rng: np.random.Generator, steps: int | None = None,
                 batch_size: int = 1) -> np.ndarray:
    """Exam indices of one epoch: one pass (shuffled, or class-balanced draws for ``"sampler"``), or, with
    ``steps``, ``steps`` batches of ``min(batch_size, len(labels))`` cut from consecutive passes."""
    def one_pass() -> np.ndarray:
        if balance != "sampler" or len(np.unique(labels)) < 2:
            return rng.permutation(len(labels))
        weights = np.where(labels == 1, 0.5 / (labels == 1).sum(), 0.5 / (labels == 0).sum())
        return rng.choice(len(labels), size=len(labels), replace=True, p=weights)

    if steps is None:
        return one_pass()
    need = steps * min(batch_size, len(labels))
    return np.concatenate([one_pass() for _ in range(math.ceil(need / len(labels)))])[:need]


@torch.no_grad()
def _predict(model: ExamClassifier, ds: ExamDataset, device: torch.device) -> np.ndarray:
    model.eval()
    out = []
    for i in range(len(ds)):
        batch = collate_exams([ds[i]])
        stacks = {v: t.to(device) for v, t in batch["stacks"].items()}
        masks = {v: t.to(device) for v, t in batch["masks"].items()}
        out.append(torch.sigmoid(model(stacks, masks)).item())
    return np.asarray(out, dtype=np.float64)


def metrics_by_grade(grades: Sequence[str | None], labels: np.ndarray, probs: np.ndarray,
                     threshold: float) -> dict[str, dict[str, Any]]:
    """Per torn grade (partial, complete): the AUC of that grade's exams against every intact exam and the share
    of them called torn at ``threshold`` (sensitivity), with their count; ``intact``: the count and specificity.
    Empty unless every exam has a grade (a labels file with ``acl_grade``). Point values (no intervals): the
    study report gives their spread over seeds."""
    if not len(grades) or any(g is None for g in grades):
        return {}
    g = np.asarray(grades, dtype=object)
    intact = g == "intact"
    out: dict[str, dict[str, Any]] = {"intact": {
        "n": int(intact.sum()), "specificity": finite_or_none(specificity(labels[intact], probs[intact], threshold))}}
    for grade in ("partial", "complete"):
        torn = g == grade
        if not torn.any():
            continue
        both = intact | torn
        out[grade] = {"n": int(torn.sum()),
                      "auc": finite_or_none(roc_auc(labels[both], probs[both])),
                      "sensitivity": finite_or_none(sensitivity(labels[torn], probs[torn], threshold))}
    return out


def _bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float | None) -> torch.Tensor:
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=pw)


def _val_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()) if len(p) else float("nan")


def _better(row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    auc, best_auc = row["val_auc"], best["val_auc"]
    if auc is not None and math.isfinite(auc):
        if best_auc is None or not math.isfinite(best_auc) or auc > best_auc:
            return True
        if auc < best_auc:
            return False
    elif best_auc is not None and math.isfinite(best_auc):
        return False
    if row["val_loss"] is None:
        return True  # no validation: the last epoch
    return row["val_loss"] < best["val_loss"]


class AclTask(Task):
    """Exam-level ACL-tear classification as an engine task (module docstring)."""

    name = "finetune acl"
    columns = ("train_loss", "val_loss", "val_auc", "val_accuracy")

    def __init__(self, config: AclConfig, exams: Sequence[Exam] | None = None) -> None:
        super().__init__(config)
        self.seed = config.runtime.seed
        self._fingerprint: str | None = None
        self.start = _resolve_init(config.init.init, config)
        m = self.start.encoder.size_multiple
        if self.start.prep.size_px % m:
            raise ConfigError([f"data.image_size: {self.start.prep.size_px} must be divisible by {m} "
                               "(encoder levels)"])
        self.all_exams = list(exams) if exams is not None else load_exams(config.data, self.start.prep)
        size = self.start.prep.size_px
        for e in self.all_exams:
            shape = next(iter(e.stacks.values())).shape[1:]
            if shape != (size, size):
                raise ExamError(f"exam {e.key}: slices of {shape}, the model takes {size}² "
                                "(pass exams prepared with the same settings)")
        d = config.data
        self.train_exams, self.val_exams, self.test_exams = split_exams(
            self.all_exams, d.val_fraction, d.split_seed, d.labeled_subjects, self.seed, d.test_fraction)
        if not self.train_exams:
            raise ExamError("no training exam")
        self.labels = np.array([e.label for e in self.train_exams], dtype=np.int64)
        self.n_pos, n_neg = int(self.labels.sum()), int((self.labels == 0).sum())
        self.pos_weight = n_neg / self.n_pos if d.balance == "pos_weight" and self.n_pos and n_neg else None

    def setup(self, device: torch.device, dist: DistInfo) -> torch.nn.Module:
        config = self.config
        self.device = device
        m = config.model
        self.classifier_config = ExamClassifierConfig(
            encoder=self.start.encoder, views=KNEE_VIEWS, pooling=m.pooling, hidden=m.hidden,
            attention_hidden=m.attention_hidden, dropout=m.dropout, spatial_pooling=m.spatial_pooling)
        model = ExamClassifier(self.classifier_config).to(device)
        if self.start.state is not None:
            model.load_encoder_state(self.start.state)
        self.augment = _augment_config(config.data)
        self.train_ds = ExamDataset(self.train_exams, KNEE_VIEWS, config.data.max_slices, train=True, seed=self.seed)
        self.val_ds = ExamDataset(self.val_exams, KNEE_VIEWS)
        return model

    def param_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        return {"new": [p for n, p in model.named_parameters() if not n.startswith("encoder.")],
                "transferred": list(model.encoder.parameters())}

    def train_mode(self, model: torch.nn.Module) -> None:
        model.train()
        if self.config.optim.freeze_transferred:
            model.encoder.eval()  # fixed: keep the pretrained BatchNorm statistics

    def describe_start(self) -> str:
        return (f"init {self.start.record['kind']}, {len(self.train_exams)} training exams ({self.n_pos} torn), "
                f"{len(self.val_exams)} validation, {len(self.test_exams)} test, pos_weight "
                + ("-" if self.pos_weight is None else f"{self.pos_weight:.3g}"))

    def fingerprint(self) -> str | None:
        if self._fingerprint is None:  # stored in every checkpoint: hashed once
            self._fingerprint = _fingerprint(self.all_exams, self.start.prep)
        return self._fingerprint

    def epoch_batches(self, epoch: int, dist: DistInfo) -> list[list[int]]:
        o = self.config.optim
        rng = np.random.default_rng([self.seed, epoch])
        order = _epoch_order(self.labels, self.config.data.balance, rng, o.steps_per_epoch, o.batch_size).tolist()
        size = min(o.batch_size, len(self.labels)) if o.steps_per_epoch else o.batch_size
        batches = [order[first:first + size] for first in range(0, len(order), size)]
        return batches if dist.world_size == 1 else [b[dist.rank::dist.world_size] for b in batches]

    def train_step(self, model: torch.nn.Module, batch: list[int], epoch: int, index: int,
                   dist: DistInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.train_ds.set_epoch(epoch)
        items = [self.train_ds[i] for i in batch]
        if self.augment is not None:
            state = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
            gen = torch.Generator().manual_seed(int(state))
            for it in items:
                it["stacks"] = {v: augment_stack(s, gen, self.augment) for v, s in it["stacks"].items()}
        stacked = collate_exams(items)
        logits = model({v: t.to(self.device) for v, t in stacked["stacks"].items()},
                       {v: t.to(self.device) for v, t in stacked["masks"].items()})
        loss = _bce(logits, stacked["label"].to(self.device), self.pos_weight)
        return loss, {"loss": loss.detach() / dist.world_size}

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, dist: DistInfo) -> dict[str, Any]:
        if not len(self.val_ds) or not dist.is_main:  # only rank 0 saves checkpoints and selects the best
            return {"val_loss": None, "val_auc": None, "val_accuracy": None}
        probs = _predict(model, self.val_ds, self.device)
        truth = self.val_ds.labels()
        return {"val_loss": _val_loss(probs, truth), "val_auc": finite_or_none(roc_auc(truth, probs)),
                "val_accuracy": float(((probs >= self.config.evaluation.threshold) == truth).mean())}

    def improved(self, row: dict[str, Any], best: dict[str, Any] | None) -> bool:
        return _better(row, best)

    def describe(self, row: dict[str, Any]) -> str:
        loss, auc = row.get("val_loss"), row.get("val_auc")
        return (f"train loss {row['train_loss']:.4g}, val loss {'-' if loss is None else f'{loss:.4g}'}, "
                f"val AUC {'-' if auc is None else f'{auc:.3f}'}")

    def _evaluate(self, model: torch.nn.Module, ds: ExamDataset, split: str) -> dict[str, Any]:
        ev = self.config.evaluation
        truth = ds.labels()
        probs = _predict(model, ds, self.device) if len(ds) else np.zeros(0)
        raw = classification_metrics(truth, probs, ev.threshold, ev.bootstrap, self.seed, ev.confidence)
        out = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in raw.items()} | {
            "split": split, "n_exams": len(ds)}
        by_grade = metrics_by_grade([e.grade for e in ds.exams], truth, probs, ev.threshold)
        if by_grade:
            out["by_grade"] = by_grade
        return out

    def finish(self, model: torch.nn.Module, state: dict[str, Any]) -> AclResult:
        config, out = self.config, Path(self.config.output)
        best = state.get("best_epoch") or state["epoch"]
        val_metrics = self._evaluate(model, self.val_ds, "validation")
        if self.test_exams:
            metrics = self._evaluate(model, ExamDataset(self.test_exams, KNEE_VIEWS), "test")
        else:
            metrics = dict(val_metrics)
        metrics |= {"best_epoch": best, "n_train": len(self.train_exams), "n_train_positive": self.n_pos,
                    "pos_weight": self.pos_weight}
        if self.test_exams:
            metrics["validation"] = val_metrics
        write_result_json(out / "metrics.json", metrics)
        prep = self.start.prep
        manifest = build_manifest(
            self.classifier_config, "acl", views=list(KNEE_VIEWS), channels=[],
            input_size_hw=(prep.size_px, prep.size_px), input_spacing_mm=prep.spacing_mm,
            intensity_normalisation=prep.normalisation_record(), label_names=list(ACL_LABELS),
            training_config=config.to_dict() | {"init": self.start.record, "labeled_subjects": len(self.train_exams),
                                                "seed": self.seed},
            data_fingerprint=self.fingerprint(), metrics=metrics,
            decision={"threshold": config.evaluation.threshold, "positive": ACL_LABELS[1]},
        )
        weights = export_weights(model.cpu(), out / "model", manifest)
        return AclResult(out, self.start.record["kind"], len(self.train_exams), self.seed, best, metrics, weights,
                         state["history"], len(self.train_exams), len(self.val_exams), len(self.test_exams),
                         val_metrics, "encoder" if self.start.state is not None else None)


def finetune_acl(config: AclConfig, init: str | Path | None = None, labeled_subjects: int | None = None,
                 seed: int | None = None, *, output: str | Path | None = None, exams: Sequence[Exam] | None = None,
                 resume: bool = False, stop: GracefulStop | None = None) -> AclResult:
    """Fine-tune (or train from scratch) the exam classifier and export it; see the module docstring.

    Args:
        config: a validated :class:`AclConfig` (``output`` is where everything goes).
        init, labeled_subjects, seed, output: override ``init.init``, ``data.labeled_subjects``,
            ``runtime.seed`` and ``output`` when given.
        exams: pre-loaded labelled exams (default :func:`load_exams`, memoised in-process), so
            repeated calls in one process (seeds × label counts) load the data once.
        resume: continue the run in ``output``.
    Raises:
        ConfigError (bad settings, too many labelled subjects), RunExistsError (output already holds a
        run), ExamError (data), WeightsError (``init``), TrainingInterrupted (a signal; resumable).
    """
    changes = run_overrides(None, init=init, labeled_subjects=labeled_subjects, seed=seed, output=output)
    if changes:
        config = acl_config_from_dict(config.to_dict(), "config", changes)
    return Engine(AclTask(config, exams), stop).run(resume).result


def _fingerprint(exams: Sequence[Exam], prep: PrepareConfig) -> str:
    """sha256 over the preparation settings and every exam's (hashed key, label, slice counts)."""
    h = hashlib.sha256(prep.digest().encode())
    for e in sorted(exams, key=lambda x: x.key):
        h.update(f"{e.key}:{e.label}:{sorted(e.slices().items())}\n".encode())
    return h.hexdigest()


#: the task as ``planessl finetune acl`` and ``planessl experiment transfer`` see it
ACL_KIND = FinetuneKind(
    name="acl", headline="auc",
    description="ROC AUC on the test exams (the validation exams without data.test_fraction)", validation="val_auc",
    load_config=load_acl_config, run=finetune_acl, transfer_modes=("encoder",),
)
