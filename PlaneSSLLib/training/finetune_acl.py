"""Fine-tuning for exam-level ACL-tear classification: ``finetune_acl(config, init, labeled_subjects, seed)``.

Data: knee exams (``data.exams``) with SAG/COR/AX stacks and a 0/1 label (1 = torn) — a DICOM
tree + labels CSV (a phantom cohort's ``labels.csv``), a prepared cache + labels by hashed
subject key, or MRNet (``data.adapters.mrnet``). Exams are split into training, validation
(model selection) and, with ``data.test_fraction``, test sets (the reported metrics, seen once),
stratified by label and deterministic for ``data.split_seed`` (ordered by a hash of the seed and
the exam key, so the held-out sets do not change with ``seed`` or ``labeled_subjects``).
``labeled_subjects = N`` then keeps N training exams (stratified, at least one of each class
when N >= 2), chosen by ``seed``.

Model: :class:`models.exam_classifier.ExamClassifier` — the PlaneSSL encoder shared by all
planes (``init``: ``"scratch"`` or an exported pretraining weights directory / ``.zip``, whose
encoder weights, architecture, input spacing/size and intensity normalisation are taken over),
slice pooling (max or attention), concatenation of the planes and an MLP to one logit.

Training: Adam (encoder at ``optim.encoder_lr``, default ``optim.lr``; frozen with
``model.freeze_encoder``), binary cross-entropy on the logit. Class imbalance:
``data.balance`` = ``"pos_weight"`` (BCE ``pos_weight`` = negatives/positives of the training
labels, default), ``"sampler"`` (each epoch draws exams with replacement, classes equally
likely) or ``"none"``. Augmentation: one random rotation/scale/flip and intensity change per
stack (``data.exams.augment_stack``). Model selection: the epoch with the best validation AUC
(ties: lower validation loss; without a defined AUC — one class in validation — the lower
validation loss; without validation exams, the last epoch).

Outputs under ``output`` (atomic writes; nothing identifying)::

    config.yaml                 resolved configuration (+ init, labeled_subjects, seed)
    checkpoints/{best,last}.*   model + optimiser (training.checkpoint, safetensors, no pickle)
    metrics.csv                 one row per epoch (loss, validation loss/AUC/accuracy)
    metrics.json                metrics of the best epoch with bootstrap CIs: on the test exams when
                                data.test_fraction > 0 (validation's under "validation"), else validation
    model/                      model.safetensors + manifest.json (task "acl", labels intact/torn)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..atomic import atomic_write_bytes
from ..data.augment import AugmentConfig
from ..data.config import PrepareConfig
from ..data.exams import (
    KNEE_VIEWS,
    Exam,
    ExamDataset,
    ExamError,
    attach_labels,
    augment_stack,
    collate_exams,
    exams_from_cache,
    exams_from_dicom,
    exams_from_mrnet,
    read_labels_csv,
)
from ..data.splits import split_exams
from ..inference.classify import ACL_LABELS, ARCHITECTURE, export_classifier
from ..inference.weights import build_manifest, load_exported
from ..models.exam_classifier import POOLINGS, ExamClassifier, ExamClassifierConfig
from ..models.unet import UNetConfig
from .checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from .cls_metrics import classification_metrics, roc_auc
from .config import ConfigError, build_config, config_hash, parse_overrides, read_yaml_config
from .progress import format_duration
from .runtime import resolve_device, seed_everything, set_determinism

__all__ = [
    "AclConfig",
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
    root: str | None = None  #: dicom: the data folder; mrnet: the MRNet-v1.0 folder
    labels: str | None = None  #: dicom: CSV subject,acl_tear (default ROOT/labels.csv); cache: CSV subject,acl_tear
    cache: str | None = None  #: cache: the prepared cache folder (subjects by hashed key)
    spacing_mm: float | None = None  #: null: the pretrained model's (3.0 from scratch)
    image_size: int | None = None  #: null: the pretrained model's (64 from scratch)
    normalisation: str = "minmax"  #: from scratch; a pretrained model's is used otherwise
    val_fraction: float = 0.25  #: exams held out for validation: model selection (stratified)
    test_fraction: float = 0.0  #: exams held out for testing: the reported metrics (stratified; 0: validation's)
    split_seed: int = 0  #: the train/validation/test split (independent of runtime.seed)
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
    pooling: str = "max"  #: "max" or "attention" (models.exam_classifier)
    hidden: int = 64
    attention_hidden: int = 32
    dropout: float = 0.0
    freeze_encoder: bool = False


@dataclass
class AclOptimConfig:
    lr: float = 1e-3
    encoder_lr: float | None = None  #: null: lr
    weight_decay: float = 1e-4
    epochs: int = 20
    batch_size: int = 2  #: exams per step
    #: steps per epoch, cut from consecutive passes over the training exams, so that the budget does not grow
    #: with the number of labelled exams; null: one pass per epoch
    steps_per_epoch: int | None = None


@dataclass
class AclEvalConfig:
    threshold: float = 0.5  #: decision threshold (stored in the manifest)
    bootstrap: int = 1000  #: bootstrap resamples for the confidence intervals
    confidence: float = 0.95


@dataclass
class AclRuntimeConfig:
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    log_every: int = 1  #: epochs between log lines


@dataclass
class AclConfig:
    data: AclDataConfig = field(default_factory=AclDataConfig)
    model: AclModelConfig = field(default_factory=AclModelConfig)
    optim: AclOptimConfig = field(default_factory=AclOptimConfig)
    evaluation: AclEvalConfig = field(default_factory=AclEvalConfig)
    runtime: AclRuntimeConfig = field(default_factory=AclRuntimeConfig)
    output: str = "runs/acl"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(cfg: AclConfig, origin_of, problems: list[str]) -> None:
    def bad(key: str, message: str) -> None:
        problems.append(f"{origin_of(key)}: {key}: {message}")

    d, m, o, e = cfg.data, cfg.model, cfg.optim, cfg.evaluation
    if d.source not in ("dicom", "cache", "mrnet"):
        bad("data.source", f"must be 'dicom', 'cache' or 'mrnet', got {d.source!r}")
    if d.source in ("dicom", "mrnet") and not d.root:
        bad("data.root", f"required when data.source is {d.source!r}")
    if d.source == "cache" and not (d.cache and d.labels):
        bad("data.cache", "data.cache and data.labels are required when data.source is 'cache'")
    if d.spacing_mm is not None and d.spacing_mm <= 0:
        bad("data.spacing_mm", f"must be > 0, got {d.spacing_mm}")
    if d.image_size is not None and d.image_size < 8:
        bad("data.image_size", f"must be >= 8, got {d.image_size}")
    if not 0.0 <= d.val_fraction < 1.0:
        bad("data.val_fraction", f"must be in [0, 1), got {d.val_fraction}")
    if not 0.0 <= d.test_fraction < 1.0 or d.val_fraction + d.test_fraction >= 1.0:
        bad("data.test_fraction", f"must be in [0, 1) with val_fraction + test_fraction < 1, got {d.test_fraction}")
    if d.max_slices < 0:
        bad("data.max_slices", f"must be >= 0, got {d.max_slices}")
    if d.balance not in ("pos_weight", "sampler", "none"):
        bad("data.balance", f"must be 'pos_weight', 'sampler' or 'none', got {d.balance!r}")
    unknown = sorted(set(d.augment_options) - {f.name for f in dataclasses.fields(AugmentConfig)})
    if unknown:
        bad("data.augment_options", f"unknown option(s) {', '.join(unknown)}")
    if m.pooling not in POOLINGS:
        bad("model.pooling", f"must be one of {', '.join(POOLINGS)}, got {m.pooling!r}")
    if m.norm not in ("batch", "instance", "none"):
        bad("model.norm", f"must be 'batch', 'instance' or 'none', got {m.norm!r}")
    if m.levels < 2 or m.base_filters < 1 or m.hidden < 1 or m.attention_hidden < 1:
        bad("model", "levels must be >= 2; base_filters, hidden and attention_hidden >= 1")
    if not 0.0 <= m.dropout < 1.0:
        bad("model.dropout", f"must be in [0, 1), got {m.dropout}")
    if o.lr <= 0 or (o.encoder_lr is not None and o.encoder_lr < 0):
        bad("optim.lr", "learning rates must be > 0 (encoder_lr >= 0)")
    if o.weight_decay < 0:
        bad("optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    if o.epochs < 1 or o.batch_size < 1:
        bad("optim.epochs", "epochs and batch_size must be >= 1")
    if o.steps_per_epoch is not None and o.steps_per_epoch < 1:
        bad("optim.steps_per_epoch", f"must be >= 1 or null (one pass per epoch), got {o.steps_per_epoch}")
    if not 0.0 < e.threshold < 1.0:
        bad("evaluation.threshold", f"must be in (0, 1), got {e.threshold}")
    if e.bootstrap < 0 or not 0.0 < e.confidence < 1.0:
        bad("evaluation.bootstrap", "bootstrap must be >= 0 and confidence in (0, 1)")
    if cfg.runtime.device not in ("auto", "cpu", "cuda"):
        bad("runtime.device", f"must be 'auto', 'cpu' or 'cuda', got {cfg.runtime.device!r}")
    if cfg.runtime.log_every < 1:
        bad("runtime.log_every", f"must be >= 1, got {cfg.runtime.log_every}")


def acl_config_from_dict(raw: Any, source: str = "<dict>", overrides: dict[str, Any] | None = None) -> AclConfig:
    """Build and validate an :class:`AclConfig`; :class:`ConfigError` lists every problem (file/key)."""
    return build_config(AclConfig, raw, source, overrides, _check)


def load_acl_config(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> AclConfig:
    """Read a YAML file, apply ``--set`` overrides, validate (errors name the file and key)."""
    raw = read_yaml_config(path)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return acl_config_from_dict(raw, str(path), overrides)


# ----------------------------------------------------------------------------- data
_EXAM_MEMO: dict[tuple, list[Exam]] = {}


def load_exams(data: AclDataConfig, prep: PrepareConfig, memo: bool = True) -> list[Exam]:
    """The labelled exams of ``data`` prepared with ``prep`` (memoised in-process per source and settings)."""
    key = (data.source, data.root, data.labels, data.cache, prep.digest())
    if memo and key in _EXAM_MEMO:
        return _EXAM_MEMO[key]
    if data.source == "dicom":
        root = Path(data.root or "")
        labels_path = Path(data.labels) if data.labels else root / "labels.csv"
        labels = read_labels_csv(labels_path)
        exams = attach_labels(exams_from_dicom(root, prep), labels, str(labels_path))
    elif data.source == "cache":
        from ..data.cache import open_cache

        labels = read_labels_csv(Path(data.labels or ""))
        exams = [e for e in exams_from_cache(open_cache(Path(data.cache or "")), labels) if e.label is not None]
        if not exams:
            raise ExamError(f"{data.labels}: names none of the cache's subjects (hashed keys expected)")
    else:
        from ..data.adapters.mrnet import mrnet_exams

        exams = exams_from_mrnet(mrnet_exams(Path(data.root or ""), "train", "acl"), prep)
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
    enc = dataclasses.replace(net.config, line_channels=0, location_head=False)
    state = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    record = {"kind": "pretrained", "task": manifest.get("task"), "data_fingerprint": manifest.get("data_fingerprint"),
              "weights_sha256": hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()[:16]}
    return _Init(enc, state, prep, record)


# ----------------------------------------------------------------------------- training
@dataclass
class AclResult:
    """What :func:`finetune_acl` produced; ``metrics`` are the best epoch's validation metrics."""

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

    def results_rows(self) -> list[dict[str, Any]]:
        """Rows ``task,init,labeled_subjects,seed,metric,value`` (DESIGN.md section 3) for results.csv:
        ``auc``, ``accuracy``, ... (+ ``_ci_low``/``_ci_high``) on the reported split (test, or validation
        without a test split) and ``val_auc``, ... on the validation exams that selected the epoch."""
        rows = []
        for prefix, metrics in (("", self.metrics), ("val_", self.val_metrics or self.metrics)):
            for name in ("auc", "accuracy", "sensitivity", "specificity"):
                mv = metrics.get(name) or {}
                for suffix, key in (("", "value"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
                    value = mv.get(key)
                    rows.append({"task": "acl", "init": self.init, "labeled_subjects": self.labeled_subjects,
                                 "seed": self.seed, "metric": f"{prefix}{name}{suffix}",
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


_CSV_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_auc", "val_accuracy", "epoch_seconds", "best")


def _write_metrics_csv(history: list[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(_CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in _CSV_COLUMNS})
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def finetune_acl(config: AclConfig, init: str | Path = "scratch", labeled_subjects: int | None = None,
                 seed: int | None = None, *, exams: Sequence[Exam] | None = None) -> AclResult:
    """Fine-tune (or train from scratch) the exam classifier and export it; see the module docstring.

    Args:
        config: a validated :class:`AclConfig` (``output`` is where everything goes).
        init: ``"scratch"`` or exported pretraining weights (directory or ``.zip``).
        labeled_subjects: training exams to use (None: the whole training pool).
        seed: overrides ``runtime.seed`` (labelled subset, initialisation, augmentation, order).
        exams: pre-loaded labelled exams (default :func:`load_exams`, memoised in-process), so
            repeated calls in one process (seeds × label counts) load the data once.
    Raises:
        ConfigError (bad settings, too many labelled subjects, output already holds a run),
        ExamError (data), WeightsError (``init``).
    """
    seed = config.runtime.seed if seed is None else int(seed)
    out = Path(config.output)
    if checkpoint_path(out / "checkpoints", "last").is_file():
        raise ConfigError([f"{out}: already holds a fine-tuning run; choose another output directory"])
    device = resolve_device(config.runtime.device)
    set_determinism(config.runtime.deterministic, device)
    start = _resolve_init(init, config)
    m = start.encoder.size_multiple
    if start.prep.size_px % m:
        raise ConfigError([f"data.image_size: {start.prep.size_px} must be divisible by {m} (encoder levels)"])
    all_exams = list(exams) if exams is not None else load_exams(config.data, start.prep)
    for e in all_exams:
        shape = next(iter(e.stacks.values())).shape[1:]
        if shape != (start.prep.size_px, start.prep.size_px):
            raise ExamError(f"exam {e.key}: slices of {shape}, the model takes {start.prep.size_px}² "
                            "(pass exams prepared with the same settings)")
    train_exams, val_exams, test_exams = split_exams(all_exams, config.data.val_fraction, config.data.split_seed,
                                                     labeled_subjects, seed, config.data.test_fraction)
    labels = np.array([e.label for e in train_exams], dtype=np.int64)
    if len(train_exams) == 0:
        raise ExamError("no training exam")
    n_pos, n_neg = int(labels.sum()), int((labels == 0).sum())
    pos_weight = n_neg / n_pos if config.data.balance == "pos_weight" and n_pos and n_neg else None

    seed_everything(seed)
    clf_cfg = ExamClassifierConfig(encoder=start.encoder, views=KNEE_VIEWS, pooling=config.model.pooling,
                                   hidden=config.model.hidden, attention_hidden=config.model.attention_hidden,
                                   dropout=config.model.dropout)
    model = ExamClassifier(clf_cfg).to(device)
    if start.state is not None:
        model.load_encoder_state(start.state)
    enc_params = list(model.encoder.parameters())
    head_params = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    o = config.optim
    groups = [{"params": head_params, "lr": o.lr}]
    if config.model.freeze_encoder:
        for p in enc_params:
            p.requires_grad_(False)
    else:
        groups.append({"params": enc_params, "lr": o.lr if o.encoder_lr is None else o.encoder_lr})
    optimizer = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)

    aug = _augment_config(config.data)
    train_ds = ExamDataset(train_exams, KNEE_VIEWS, config.data.max_slices, train=True, seed=seed)
    val_ds = ExamDataset(val_exams, KNEE_VIEWS)
    val_labels = val_ds.labels()
    run_dict = config.to_dict() | {"init": start.record, "labeled_subjects": len(train_exams), "seed": seed}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "config.yaml", ("# resolved PlaneSSL ACL fine-tuning configuration\n"
                                             + yaml.safe_dump(run_dict, sort_keys=False)).encode("utf-8"))
    log.info("finetune acl (%s): %d training exams (%d torn), %d validation, %d test exams, pos_weight %s",
             start.record["kind"], len(train_exams), n_pos, len(val_exams), len(test_exams),
             "-" if pos_weight is None else f"{pos_weight:.3g}")

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    ckpt_dir = out / "checkpoints"
    for epoch in range(o.epochs):
        t0 = time.perf_counter()
        model.train()
        if config.model.freeze_encoder:
            model.encoder.eval()  # frozen: keep the pretrained BatchNorm statistics
        train_ds.set_epoch(epoch)
        rng = np.random.default_rng([seed, epoch])
        order = _epoch_order(labels, config.data.balance, rng, o.steps_per_epoch, o.batch_size).tolist()
        size = min(o.batch_size, len(labels)) if o.steps_per_epoch else o.batch_size
        losses = []
        for b, first in enumerate(range(0, len(order), size)):
            items = [train_ds[i] for i in order[first:first + size]]
            if aug is not None:
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, b]).generate_state(1)[0]))
                for it in items:
                    it["stacks"] = {v: augment_stack(s, gen, aug) for v, s in it["stacks"].items()}
            batch = collate_exams(items)
            logits = model({v: t.to(device) for v, t in batch["stacks"].items()},
                           {v: t.to(device) for v, t in batch["masks"].items()})
            loss = _bce(logits, batch["label"].to(device), pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        probs = _predict(model, val_ds, device) if len(val_ds) else np.zeros(0)
        row = {
            "epoch": epoch + 1, "lr": o.lr, "train_loss": float(np.mean(losses)),
            "val_loss": _val_loss(probs, val_labels) if len(val_ds) else None,
            "val_auc": _nan_to_none(roc_auc(val_labels, probs)) if len(val_ds) else None,
            "val_accuracy": float(((probs >= config.evaluation.threshold) == val_labels).mean()) if len(val_ds)
            else None,
            "epoch_seconds": time.perf_counter() - t0, "best": False,
        }
        improved = _better(row, best)
        if improved:
            row["best"] = True
            best = row
        history.append(row)
        state = {"epoch": epoch + 1, "history": history, "best_epoch": best["epoch"], "config_hash": config_hash(
            run_dict), "seed": seed}
        if improved:
            save_checkpoint(checkpoint_path(ckpt_dir, "best"), model, optimizer, train_state=state)
        save_checkpoint(checkpoint_path(ckpt_dir, "last"), model, optimizer, train_state=state)
        _write_metrics_csv(history, out / "metrics.csv")
        if (epoch + 1) % config.runtime.log_every == 0 or epoch + 1 == o.epochs:
            auc = row["val_auc"]
            log.info("epoch %d/%d: train loss %.4g, val loss %s, val AUC %s%s (%s)", epoch + 1, o.epochs,
                     row["train_loss"], "-" if row["val_loss"] is None else f"{row['val_loss']:.4g}",
                     "-" if auc is None else f"{auc:.3f}", " [best]" if improved else "",
                     format_duration(row["epoch_seconds"]))

    assert best is not None
    model.load_state_dict(load_checkpoint(checkpoint_path(ckpt_dir, "best")).model_state())
    ev = config.evaluation

    def evaluate(ds: ExamDataset, split: str) -> dict[str, Any]:
        truth = ds.labels()
        probs = _predict(model, ds, device) if len(ds) else np.zeros(0)
        raw = classification_metrics(truth, probs, ev.threshold, ev.bootstrap, seed, ev.confidence)
        return {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in raw.items()} | {
            "split": split, "n_exams": len(ds)}

    val_metrics = evaluate(val_ds, "validation")
    metrics = evaluate(ExamDataset(test_exams, KNEE_VIEWS), "test") if test_exams else dict(val_metrics)
    metrics |= {"best_epoch": best["epoch"], "n_train": len(train_exams), "n_train_positive": n_pos,
                "pos_weight": pos_weight}
    if test_exams:
        metrics["validation"] = val_metrics
    atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode("utf-8"))
    manifest = build_manifest(
        start.encoder, "acl", views=list(KNEE_VIEWS), channels=[],
        input_size_hw=(start.prep.size_px, start.prep.size_px), input_spacing_mm=start.prep.spacing_mm,
        intensity_normalisation=start.prep.normalisation_record(), label_names=list(ACL_LABELS),
        training_config=run_dict, data_fingerprint=_fingerprint(all_exams, start.prep), metrics=metrics,
    )
    manifest["architecture"] = {"name": ARCHITECTURE, "config": clf_cfg.to_dict()}
    manifest["decision"] = {"threshold": ev.threshold, "positive": ACL_LABELS[1]}
    weights = export_classifier(model.cpu(), out / "model", manifest)
    return AclResult(out, start.record["kind"], len(train_exams), seed, best["epoch"], metrics, weights, history,
                     len(train_exams), len(val_exams), len(test_exams), val_metrics)


def _fingerprint(exams: Sequence[Exam], prep: PrepareConfig) -> str:
    """sha256 over the preparation settings and every exam's (hashed key, label, slice counts)."""
    h = hashlib.sha256(prep.digest().encode())
    for e in sorted(exams, key=lambda x: x.key):
        h.update(f"{e.key}:{e.label}:{sorted(e.slices().items())}\n".encode())
    return h.hexdigest()
