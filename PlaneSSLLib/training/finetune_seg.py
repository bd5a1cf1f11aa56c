"""Fine-tuning for cardiac segmentation (ACDC labels) from scratch or from pretrained weights.

``finetune_seg(config, init, labeled_subjects, seed)`` is the one entry point (``planessl
finetune seg`` wraps it; an experiment calls it in a loop). Steps:

1. data: the seg cache of ``data.dicom`` (``data.segmentation.prepare_seg_cache``; reused by key)
   or an existing one (``data.cache``); subjects split into training pool / validation / test by
   ``data.split_seed`` (independent of the labelled subset), then ``labeled_subjects`` of the pool
   chosen by ``seed`` (``choose_labeled_subjects``; nested in N for one seed);
2. network: ``PlaneSSLNet`` with ``line_channels`` = 4 classes (its decoder output = class
   logits) and no location head; initialised from scratch or by ``training.transfer`` (encoder
   and decoder but the last layer, or encoder only);
3. training: Dice + cross-entropy (``monai.losses.DiceCELoss``), Adam, ±``rotation_deg`` rotation
   with the pretext augmentation's scale/intensity changes (``data.augment.augment_batch``; the
   labels follow the same pixel map by nearest neighbour); each ``val_every`` epochs the mean
   validation Dice over structures, of 3D volumes per subject and phase after largest-connected-
   component post-processing, selects the best weights (training loss without validation subjects);
4. evaluation of the best weights on the test subjects (validation subjects when there is no test
   split): Dice, HD95, ASSD per structure at ED and ES (``training.seg_metrics``), on the prepared
   grid with voxel spacing (slice gap, pixel, pixel) in mm;
5. outputs under ``output``: ``config.yaml``, ``checkpoints/{best,last}.safetensors``,
   ``metrics.csv`` (per epoch), ``progress.png``, ``test_metrics.csv`` (per subject, phase and
   structure; subjects by hashed id), ``result.json`` and ``model/`` (``model.safetensors`` +
   ``manifest.json``, task ``"seg"``, ACDC label names and SNOMED CT codes). All written atomically.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ..atomic import atomic_write_bytes, atomic_write_text
from ..data.augment import AugmentConfig, augment_batch, normalised_from_pixel
from ..data.cache import SliceCache, open_cache
from ..data.config import PrepareConfig
from ..data.segmentation import (
    ACDC_LABEL_NAMES,
    PHASE_KINDS,
    prepare_seg_cache,
    terminology_record,
)
from ..data.splits import choose_labeled_subjects, split_seg_subjects
from ..inference.segment import keep_largest_component, predict_probabilities
from ..inference.weights import build_manifest, export_weights
from ..models import PlaneSSLNet, UNetConfig
from .checkpoint import checkpoint_path, save_checkpoint
from .config import ConfigError, build_config, parse_overrides, read_yaml_config
from .progress import ProgressReporter, format_duration, write_progress_plot
from .runtime import resolve_device, seed_everything, set_determinism
from .seg_metrics import structure_metrics, summarise
from .transfer import TRANSFER_MODES, TransferReport, load_pretrained

__all__ = [
    "FinetuneSegConfig",
    "FinetuneResult",
    "finetune_seg",
    "load_finetune_config",
    "finetune_config_from_dict",
    "build_seg_model_config",
    "epoch_batches",
]

log = logging.getLogger("planessl.training")

#: val_dice_<structure>: mean over validation volumes; a structure stuck at 0 shows a class the network never predicts
VAL_STRUCTURE_COLUMNS = tuple(f"val_dice_{n}" for n in ACDC_LABEL_NAMES[1:])
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_dice", *VAL_STRUCTURE_COLUMNS, "epoch_seconds", "best")
TEST_COLUMNS = ("subject", "phase", "structure", "label", "dice", "hd95_mm", "assd_mm", "status")


# ----------------------------------------------------------------------------- configuration
@dataclass
class SegDataConfig:
    """Labelled data and its preparation (same meaning as ``planessl prepare``'s settings)."""

    dicom: str | None = None  #: DICOM folder with labels (phantom layout); its seg cache is built/reused
    cache: str | None = None  #: seg cache root (default: OUTPUT/../seg_cache when data.dicom is set)
    spacing_mm: float = 1.26
    image_size: int = 224
    normalisation: str = "minmax"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0  #: seed of the pool/val/test split (kept fixed across labelled-subset seeds)
    labeled_subjects: int | None = None  #: labelled training subjects (None: the whole pool)
    augment: bool = True
    rotation_deg: float = 15.0
    augment_options: dict[str, Any] = field(default_factory=dict)  #: other AugmentConfig fields


@dataclass
class SegModelConfig:
    """Architecture (must match the pretraining's when initialising from pretrained weights)."""

    in_channels: int = 1
    base_filters: int = 64
    levels: int = 5
    norm: str = "batch"


@dataclass
class SegInitConfig:
    init: str = "scratch"  #: "scratch" or a pretrained weights directory/.zip
    transfer: str = "encoder+decoder"  #: "encoder+decoder" (reference) or "encoder"


@dataclass
class SegOptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    decay_factor: float = 1.0  #: learning rate × this every decay_every epochs (1: constant, the paper)
    decay_every: int = 100
    epochs: int = 500
    batch_size: int = 20
    #: batches per epoch, drawn from the labelled slices (nnU-Net style), so that the training budget does not
    #: grow with the number of labelled subjects; null: one pass over the labelled slices per epoch
    steps_per_epoch: int | None = None


@dataclass
class SegLossConfig:
    dice_weight: float = 1.0
    ce_weight: float = 1.0


@dataclass
class SegRuntimeConfig:
    device: str = "auto"
    seed: int = 0  #: seeds the labelled subset, initialisation, order and augmentation
    deterministic: bool = False
    val_every: int = 1
    lcc: bool = True  #: keep the largest connected component per structure (validation, test)
    progress: str = "auto"
    log_every: int = 20
    plot: bool = True
    checkpoints: bool = True  #: write checkpoints/{best,last}.safetensors


@dataclass
class FinetuneSegConfig:
    data: SegDataConfig = field(default_factory=SegDataConfig)
    model: SegModelConfig = field(default_factory=SegModelConfig)
    init: SegInitConfig = field(default_factory=SegInitConfig)
    optim: SegOptimConfig = field(default_factory=SegOptimConfig)
    loss: SegLossConfig = field(default_factory=SegLossConfig)
    runtime: SegRuntimeConfig = field(default_factory=SegRuntimeConfig)
    output: str = "runs/finetune_seg"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(cfg: FinetuneSegConfig, origin_of, problems: list[str]) -> None:
    def bad(key: str, message: str) -> None:
        problems.append(f"{origin_of(key)}: {key}: {message}")

    d, m, o, r = cfg.data, cfg.model, cfg.optim, cfg.runtime
    if not d.dicom and not d.cache:
        bad("data.dicom", "set data.dicom (a labelled DICOM folder) or data.cache (a seg cache)")
    if d.spacing_mm <= 0:
        bad("data.spacing_mm", f"must be > 0, got {d.spacing_mm}")
    if d.image_size < 8 or d.image_size % 2 ** (m.levels - 1):
        bad("data.image_size", f"{d.image_size} must be >= 8 and divisible by 2**(model.levels-1)")
    if d.normalisation not in ("minmax", "zscore"):
        bad("data.normalisation", f"must be minmax or zscore, got {d.normalisation!r}")
    for key in ("val_fraction", "test_fraction"):
        if not 0.0 <= getattr(d, key) < 1.0:
            bad(f"data.{key}", f"must be in [0, 1), got {getattr(d, key)}")
    if d.labeled_subjects is not None and d.labeled_subjects < 1:
        bad("data.labeled_subjects", f"must be >= 1 or null (all), got {d.labeled_subjects}")
    if m.levels < 2 or m.base_filters < 1 or m.in_channels < 1:
        bad("model.levels", "levels >= 2, base_filters >= 1, in_channels >= 1 needed")
    if m.norm not in ("batch", "instance", "none"):
        bad("model.norm", f"must be batch, instance or none, got {m.norm!r}")
    if cfg.init.transfer not in TRANSFER_MODES:
        bad("init.transfer", f"must be one of {', '.join(TRANSFER_MODES)}, got {cfg.init.transfer!r}")
    if cfg.init.init != "scratch" and not Path(cfg.init.init).exists():
        bad("init.init", f"{cfg.init.init}: no such weights directory or archive (or 'scratch')")
    if o.lr <= 0 or o.epochs < 1 or o.batch_size < 1 or o.decay_every < 1 or not 0 < o.decay_factor <= 1:
        bad("optim", "lr > 0, epochs >= 1, batch_size >= 1, decay_every >= 1 and 0 < decay_factor <= 1 needed")
    if o.steps_per_epoch is not None and o.steps_per_epoch < 1:
        bad("optim.steps_per_epoch", f"must be >= 1 or null (one pass per epoch), got {o.steps_per_epoch}")
    if cfg.loss.dice_weight < 0 or cfg.loss.ce_weight < 0 or cfg.loss.dice_weight + cfg.loss.ce_weight == 0:
        bad("loss", "weights must be >= 0 and not both 0")
    if r.device not in ("auto", "cpu", "cuda"):
        bad("runtime.device", f"must be auto, cpu or cuda, got {r.device!r}")
    if r.val_every < 1 or r.log_every < 1 or r.seed < 0:
        bad("runtime", "val_every >= 1, log_every >= 1 and seed >= 0 needed")
    if r.progress not in ("auto", "bar", "log", "none"):
        bad("runtime.progress", f"must be auto, bar, log or none, got {r.progress!r}")
    extra = set(d.augment_options) - set(AugmentConfig.__dataclass_fields__)
    if extra:
        bad("data.augment_options", f"unknown option(s) {sorted(extra)}")
    if not cfg.output:
        bad("output", "must name a directory")


def finetune_config_from_dict(raw: Any, source: str = "<dict>",
                              overrides: dict[str, Any] | None = None) -> FinetuneSegConfig:
    """Build and validate a config from a mapping (``--set`` overrides applied); ConfigError lists problems."""
    return build_config(FinetuneSegConfig, raw, source, overrides, _check)


def load_finetune_config(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> FinetuneSegConfig:
    """Read, override and validate a YAML fine-tuning config; ConfigError names file and key."""
    raw = read_yaml_config(path)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return finetune_config_from_dict(raw, str(path), overrides)


def build_seg_model_config(config: FinetuneSegConfig) -> UNetConfig:
    """PlaneSSLNet for segmentation: decoder output = ``len(ACDC_LABEL_NAMES)`` class logits, no location head."""
    m = config.model
    cfg = UNetConfig(in_channels=m.in_channels, base_filters=m.base_filters, levels=m.levels,
                     line_channels=len(ACDC_LABEL_NAMES), location_head=False, norm=m.norm)
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------------- result
@dataclass
class FinetuneResult:
    """What a fine-tuning run produced. ``rows``: per (subject, phase, structure) test metrics."""

    output: Path
    weights: Path
    init: str
    transfer: str | None
    labeled_subjects: int
    seed: int
    best_epoch: int
    best_val_dice: float | None
    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    evaluated_on: str  # "test" or "val"
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    transfer_report: dict[str, Any] | None = None

    def results_rows(self, task: str = "seg") -> list[dict[str, Any]]:
        """Rows ``task,init,labeled_subjects,seed,metric,value`` (DESIGN.md section 3), one per summary
        entry and metric, metric named ``"<metric> <phase> <structure>"`` (e.g. ``"dice ED LV"``)."""
        init = "scratch" if self.init == "scratch" else f"pretrained:{self.transfer}"
        out = []
        for key, entry in self.summary.items():
            for m in ("dice", "hd95_mm", "assd_mm", "n_empty_pred"):
                out.append({"task": task, "init": init, "labeled_subjects": self.labeled_subjects, "seed": self.seed,
                            "metric": f"{m} {key}", "value": entry[m]})
        return out

    def as_dict(self) -> dict[str, Any]:
        return _json_safe({
            "output": str(self.output), "weights": str(self.weights), "init": self.init, "transfer": self.transfer,
            "labeled_subjects": self.labeled_subjects, "seed": self.seed, "best_epoch": self.best_epoch,
            "best_val_dice": self.best_val_dice, "evaluated_on": self.evaluated_on, "summary": self.summary,
            "seconds": self.seconds, "transfer_report": self.transfer_report,
        })


def _json_safe(value: Any) -> Any:
    """NaN/inf → None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ----------------------------------------------------------------------------- training pieces
def _open_data(config: FinetuneSegConfig) -> SliceCache:
    d = config.data
    if d.dicom:
        prep = PrepareConfig(spacing_mm=d.spacing_mm, size_px=d.image_size, normalisation=d.normalisation,
                             dtype="float32", anatomy="heart")
        root = Path(d.cache) if d.cache else Path(config.output).parent / "seg_cache"
        cache = prepare_seg_cache(Path(d.dicom), root, prep)
    else:
        cache = open_cache(Path(d.cache), content="seg")
    h, w = cache.image_shape
    if (h, w) != (d.image_size, d.image_size) or abs(cache.spacing_mm - d.spacing_mm) > 1e-9:
        raise ConfigError([f"data.cache: {cache.path} holds {h}x{w} px at {cache.spacing_mm} mm, the config asks for "
                           f"{d.image_size} px at {d.spacing_mm} mm"])
    return cache


def _warp_labels(labels: torch.Tensor, affine_px: torch.Tensor) -> torch.Tensor:
    """Labels ``(B, H, W)`` moved by the pixel maps ``p' = M p`` (nearest neighbour, background outside)."""
    b, h, w = labels.shape
    n = normalised_from_pixel(h, w, device=labels.device)
    theta = (n @ torch.linalg.inv(affine_px.double()) @ torch.linalg.inv(n))[:, :2, :].float()
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    return F.grid_sample(labels.unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros",
                         align_corners=False).squeeze(1).round().long()


def _batch_seed(seed: int, epoch: int, batch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, batch, 0x5E6]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _predict_volume(net: PlaneSSLNet, images: np.ndarray, lcc: bool, batch_size: int) -> np.ndarray:
    """Labels ``(k, H, W)`` of one volume's prepared slices (arg-max, then LCC per structure)."""
    probs = predict_probabilities(net, images, batch_size)
    labels = np.argmax(probs, axis=1).astype(np.uint8)
    return keep_largest_component(labels, range(1, len(ACDC_LABEL_NAMES))) if lcc else labels


def _structure_dice(pred: np.ndarray, ref: np.ndarray) -> list[float]:
    """Dice of RV, Myo, LV in one volume (1 for a structure absent from both)."""
    scores = []
    for c in range(1, len(ACDC_LABEL_NAMES)):
        p, r = pred == c, ref == c
        total = int(p.sum()) + int(r.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((p & r).sum()) / total)
    return scores



def epoch_batches(n_slices: int, batch_size: int, steps: int | None, seed: int) -> list[torch.Tensor]:
    """Slice indices of each batch of one epoch: one shuffled pass over ``n_slices`` (``steps`` None), or
    ``steps`` batches of ``min(batch_size, n_slices)`` cut from consecutive shuffled passes, so every slice is
    drawn equally often (±1) and the budget in optimiser steps does not depend on how many slices are labelled."""
    gen = torch.Generator().manual_seed(seed)
    if steps is None:
        order = torch.randperm(n_slices, generator=gen)
        return list(order.split(batch_size))
    size = min(batch_size, n_slices)
    need = steps * size
    order = torch.cat([torch.randperm(n_slices, generator=gen) for _ in range(math.ceil(need / n_slices))])
    return list(order[:need].split(size))


class _Run:
    """One fine-tuning run (a class only to keep ``finetune_seg`` short)."""

    def __init__(self, config: FinetuneSegConfig, cache: SliceCache, labeled: list[int], val: list[int],
                 test: list[int]) -> None:
        from monai.losses import DiceCELoss

        self.config, self.cache = config, cache
        self.device = resolve_device(config.runtime.device)
        set_determinism(config.runtime.deterministic, self.device)
        seed_everything(config.runtime.seed)
        self.model_config = build_seg_model_config(config)
        self.net = PlaneSSLNet(self.model_config).to(self.device)
        self.transfer: TransferReport | None = None
        if config.init.init != "scratch":
            self.transfer = load_pretrained(self.net, config.init.init, config.init.transfer)
            self.net.to(self.device)
            inp = self.transfer.pretrained_input or {}
            d = config.data
            if (list(inp.get("size_hw", [])) != [d.image_size, d.image_size]
                    or any(abs(float(s) - d.spacing_mm) > 1e-6 for s in inp.get("spacing_mm", []))):
                log.warning("%s was pretrained on %s px at %s mm, fine-tuning on %d px at %g mm: the features may "
                            "transfer less well", config.init.init, inp.get("size_hw"), inp.get("spacing_mm"),
                            d.image_size, d.spacing_mm)
        o = config.optim
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, o.decay_every, o.decay_factor)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=config.loss.dice_weight,
                                  lambda_ce=config.loss.ce_weight)
        rows = np.flatnonzero(np.isin(cache.index["subject"], labeled))
        self.train_x = torch.from_numpy(np.asarray(cache.images[rows], dtype=np.float32)).unsqueeze(1)
        self.train_y = torch.from_numpy(np.asarray(cache.labels[rows], dtype=np.int64))
        self.val_volumes = cache.volumes(val)
        self.test_volumes = cache.volumes(test)
        d = config.data
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in d.augment_options.items()}
        options.setdefault("rotation_deg", d.rotation_deg)
        self.augment = AugmentConfig(**options) if d.augment else None

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits.float(), labels.unsqueeze(1))

    def batches(self, epoch: int) -> list[torch.Tensor]:
        o = self.config.optim
        return epoch_batches(len(self.train_x), o.batch_size, o.steps_per_epoch,
                             _batch_seed(self.config.runtime.seed, epoch, 0xFFFF))

    def steps_per_epoch(self) -> int:
        o = self.config.optim
        return o.steps_per_epoch or math.ceil(len(self.train_x) / o.batch_size)

    def train_epoch(self, epoch: int, progress: ProgressReporter) -> float:
        cfg = self.config
        self.net.train()
        total, n = 0.0, 0
        for b, idx in enumerate(self.batches(epoch)):
            x, y = self.train_x[idx].to(self.device), self.train_y[idx].to(self.device)
            if self.augment is not None:
                g = torch.Generator(device=self.device).manual_seed(_batch_seed(cfg.runtime.seed, epoch, b))
                out = augment_batch({"image": x}, g, self.augment)
                x = out["image"]
                if "affine_px" in out:
                    y = _warp_labels(y, out["affine_px"])
            if len(idx) == 1 and self.model_config.norm == "batch":
                x, y = x.repeat(2, 1, 1, 1), y.repeat(2, 1, 1)  # BatchNorm needs two samples in training
            loss = self.loss(self.net(x)["lines"], y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = float(loss.detach())
            total += value * len(idx)
            n += len(idx)
            progress.update(len(idx), epoch, cfg.optim.epochs, value)
        return total / max(n, 1)

    @torch.no_grad()
    def validate(self) -> tuple[float | None, float | None, list[float] | None]:
        """(validation loss, mean Dice over volumes and structures, mean Dice per structure RV/Myo/LV) or
        (None, None, None) without validation subjects."""
        if not self.val_volumes:
            return None, None, None
        self.net.eval()
        losses, dices = [], []
        for rows in self.val_volumes.values():
            x = np.asarray(self.cache.images[rows], dtype=np.float32)
            ref = np.asarray(self.cache.labels[rows])
            logits = self.net(torch.from_numpy(x).unsqueeze(1).to(self.device))["lines"]
            losses.append(float(self.loss(logits, torch.from_numpy(ref.astype(np.int64)).to(self.device))))
            pred = np.argmax(logits.float().cpu().numpy(), axis=1).astype(np.uint8)
            if self.config.runtime.lcc:
                pred = keep_largest_component(pred, range(1, len(ACDC_LABEL_NAMES)))
            dices.append(_structure_dice(pred, ref))
        per_structure = np.mean(dices, axis=0)
        return float(np.mean(losses)), float(per_structure.mean()), [float(d) for d in per_structure]

    def evaluate(self, volumes: dict[tuple[int, int], np.ndarray]) -> list[dict[str, Any]]:
        """Per (subject, phase, structure) metrics of the current weights."""
        rows: list[dict[str, Any]] = []
        keys = self.cache.subject_keys
        for (subject, kind), idx in volumes.items():
            x = np.asarray(self.cache.images[idx], dtype=np.float32)
            ref = np.asarray(self.cache.labels[idx])
            pred = _predict_volume(self.net, x, self.config.runtime.lcc, self.config.optim.batch_size)
            for r in structure_metrics(pred, ref, self.cache.volume_spacing_mm(idx)):
                rows.append({"subject": keys[subject], "phase": PHASE_KINDS[kind], **r})
        return rows


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def finetune_seg(config: FinetuneSegConfig, init: str | None = None, labeled_subjects: int | None = None,
                 seed: int | None = None, *, transfer: str | None = None, output: str | Path | None = None,
                 overwrite: bool = False) -> FinetuneResult:
    """Fine-tune a segmentation network (module docstring) and return its test metrics.

    ``init`` ("scratch" or a weights path), ``labeled_subjects``, ``seed``, ``transfer`` and
    ``output`` override the config's values when given. Raises ConfigError (bad settings, output
    already used without ``overwrite``, too many labelled subjects), SegDataError (data/labels),
    TransferError (pretrained weights that do not fit).
    """
    start = time.perf_counter()
    changes: dict[str, Any] = {}
    if init is not None:
        changes["init.init"] = str(init)
    if transfer is not None:
        changes["init.transfer"] = transfer
    if labeled_subjects is not None:
        changes["data.labeled_subjects"] = int(labeled_subjects)
    if seed is not None:
        changes["runtime.seed"] = int(seed)
    if output is not None:
        changes["output"] = str(output)
    if changes:
        config = finetune_config_from_dict(config.to_dict(), "config", changes)
    out = Path(config.output)
    if (out / "result.json").exists() and not overwrite:
        raise ConfigError([f"output: {out} already holds a fine-tuning result (result.json); choose another --out"])
    cache = _open_data(config)
    d = config.data
    pool, val, test = split_seg_subjects(cache.subject_keys, d.val_fraction, d.test_fraction, d.split_seed)
    try:
        labeled = choose_labeled_subjects(pool, cache.subject_keys, d.labeled_subjects, config.runtime.seed)
    except ValueError as exc:
        raise ConfigError([f"data.labeled_subjects: {exc} ({len(cache.subject_keys)} subjects: {len(pool)} pool, "
                           f"{len(val)} validation, {len(test)} test)"]) from None
    run = _Run(config, cache, labeled, val, test)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", "# resolved PlaneSSL fine-tuning configuration (planessl finetune seg)\n"
                      + yaml.safe_dump(config.to_dict(), sort_keys=False))
    log.info("fine-tuning seg (%s) on %s: %d labelled / %d val / %d test subjects, %d slices", config.init.init,
             run.device.type, len(labeled), len(val), len(test), len(run.train_x))
    history, best_state, best = _train(run, out)
    run.net.load_state_dict(best_state)
    volumes, on = (run.test_volumes, "test") if run.test_volumes else (run.val_volumes, "val")
    rows = run.evaluate(volumes)
    summary = summarise(rows)
    _write_csv(out / "test_metrics.csv", rows, TEST_COLUMNS)
    best_row = history[best - 1]
    metrics = _json_safe({"best_epoch": best, "val_dice": best_row["val_dice"], "evaluated_on": on,
                          "summary": summary})
    manifest = build_manifest(
        run.model_config, "seg", views=["SAX"], channels=list(ACDC_LABEL_NAMES),
        input_size_hw=cache.image_shape, input_spacing_mm=cache.spacing_mm,
        intensity_normalisation=cache.meta["normalisation"], label_names=list(ACDC_LABEL_NAMES),
        terminology=terminology_record(),
        training_config=_json_safe({**config.to_dict(), "labeled_subject_count": len(labeled),
                                    "transfer_report": run.transfer.as_dict() if run.transfer else None}),
        data_fingerprint=cache.meta["data_fingerprint"], metrics=metrics,
    )
    weights = export_weights(run.net, out / "model", manifest)
    result = FinetuneResult(
        output=out, weights=weights, init=config.init.init,
        transfer=config.init.transfer if config.init.init != "scratch" else None, labeled_subjects=len(labeled),
        seed=config.runtime.seed, best_epoch=best, best_val_dice=best_row["val_dice"], rows=rows, summary=summary,
        evaluated_on=on, seconds=time.perf_counter() - start, history=history,
        transfer_report=run.transfer.as_dict() if run.transfer else None,
    )
    atomic_write_text(out / "result.json", json.dumps(result.as_dict(), indent=1) + "\n")
    return result


def _train(run: _Run, out: Path) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor], int]:
    """The epoch loop; returns (history, best weights, best epoch)."""
    cfg = run.config
    epochs = cfg.optim.epochs
    steps = epochs * run.steps_per_epoch()
    progress = ProgressReporter(steps, 0, True, cfg.runtime.progress, cfg.runtime.log_every)
    history: list[dict[str, Any]] = []
    best_state, best_epoch, best_score = copy.deepcopy(run.net.state_dict()), 1, -math.inf
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            lr = run.optimizer.param_groups[0]["lr"]
            train_loss = run.train_epoch(epoch, progress)
            run.scheduler.step()
            val_loss, val_dice, per_structure = (None, None, None)
            if (epoch + 1) % cfg.runtime.val_every == 0 or epoch + 1 == epochs:
                val_loss, val_dice, per_structure = run.validate()
            score = val_dice if val_dice is not None else (-train_loss if not run.val_volumes else None)
            improved = score is not None and score > best_score
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
                   **dict(zip(VAL_STRUCTURE_COLUMNS, per_structure or [None] * len(VAL_STRUCTURE_COLUMNS),
                              strict=True)),
                   "epoch_seconds": time.perf_counter() - t0, "best": improved}
            history.append(row)
            if improved:
                best_score, best_epoch = score, epoch + 1
                best_state = copy.deepcopy(run.net.state_dict())
                if cfg.runtime.checkpoints:
                    save_checkpoint(checkpoint_path(out / "checkpoints", "best"), run.net,
                                    train_state={"epoch": epoch + 1, "val_dice": val_dice, "history": history})
            if cfg.runtime.checkpoints and epoch + 1 == epochs:
                save_checkpoint(checkpoint_path(out / "checkpoints", "last"), run.net, run.optimizer, run.scheduler,
                                train_state={"epoch": epoch + 1, "history": history})
            _write_csv(out / "metrics.csv", history, EPOCH_COLUMNS)
            if cfg.runtime.plot:
                try:
                    write_progress_plot(history, out / "progress.png", ())
                except Exception as exc:  # a plot must never stop training
                    log.warning("progress plot not written: %s", exc)
            dice_text = f" val Dice {val_dice:.3f}" if val_dice is not None else ""
            progress.message(f"epoch {epoch + 1}/{epochs}: train {train_loss:.4g}{dice_text} lr {lr:.3g} "
                             f"{format_duration(row['epoch_seconds'])}" + (" [best]" if improved else ""))
    finally:
        progress.close()
    return history, best_state, best_epoch

