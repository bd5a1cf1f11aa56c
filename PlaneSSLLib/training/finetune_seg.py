"""Fine-tuning for cardiac segmentation (ACDC labels) from scratch or from pretrained weights.

:class:`SegTask` is the engine task (``training/engine.py`` runs the loop, checkpoints, resume,
signals, DDP and logs); ``finetune_seg(config, init, labeled_subjects, seed)`` runs it
(``planessl finetune seg`` and the transfer experiment call it through :data:`SEG_KIND`). Steps:

1. data: the seg cache of the data set ``data.format``:``data.root`` (``phantom``, ``dicom`` with
   labels in the phantom layout, ``acdc``, ``mnms2`` or ``auto``; ``data.dicom`` is the old name of
   a ``dicom`` root; ``data.segmentation.prepare_seg_cache``; reused by key) or an existing one
   (``data.cache``); subjects split into training pool / validation / test by ``data.split_seed``
   (independent of the labelled subset; ``split.test_subjects`` / ``split.val_subjects`` fix the
   counts and ``split.stratify_by`` stratifies both by a subject attribute such as ``pathology``:
   ``split_seg_subjects_stratified``), then ``labeled_subjects`` of the pool chosen by ``seed``
   (``choose_labeled_subjects``; nested in N for one seed);
2. network: ``PlaneSSLNet`` with ``line_channels`` = 4 classes (its decoder output = class
   logits) and no location head; initialised from scratch or by ``training.transfer`` (encoder
   and decoder but the last layer, or encoder only);
3. training: Dice + cross-entropy (``monai.losses.DiceCELoss``), Adam with the engine's learning-rate
   policy (``transferred``: the layers the transfer mode fills; ``new``: the rest), ±``rotation_deg`` rotation
   with the pretext augmentation's scale/intensity changes (``data.augment.augment_batch``; the
   labels follow the same pixel map by nearest neighbour); each ``val_every`` epochs the mean
   validation Dice over structures, of 3D volumes per subject and phase after largest-connected-
   component post-processing, selects the best weights (training loss without validation subjects);
4. evaluation of the best weights on the test subjects (validation subjects when there is no test
   split): Dice, HD95, ASSD per structure at ED and ES (``training.seg_metrics``), on the prepared
   grid with voxel spacing (slice gap, pixel, pixel) in mm; and the mean Dice by basal / mid / apical
   third of each stack and by the subjects' ``pathology`` (``region_dice``, extra result rows ``dice basal``,
   ``dice pathology NOR``...);
5. outputs under ``output``: ``config.yaml``, ``checkpoints/{best,last}.safetensors``,
   ``metrics.csv`` (per epoch), ``progress.png``, ``tensorboard/``, ``test_metrics.csv`` (per subject, phase and
   structure; subjects by hashed id), ``result.json`` and ``model/`` (``model.safetensors`` +
   ``manifest.json``, task ``"seg"``, ACDC label names and SNOMED CT codes). All written atomically.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.augment import AugmentConfig, augment_batch, normalised_from_pixel
from ..data.cache import SliceCache, open_cache
from ..data.segmentation import PHASE_KINDS, prepare_seg_cache
from ..data.sources import DataSpec, resolve_data_spec
from ..data.splits import choose_labeled_subjects, split_seg_subjects, split_seg_subjects_stratified
from ..data.subject_groups import read_subject_attributes, subject_groups
from ..inference.segment import keep_largest_component, predict_probabilities
from ..inference.weights import build_manifest, export_weights
from ..models import PlaneSSLNet, UNetConfig
from ..preprocess.config import PrepareConfig
from ..preprocess.labels import ACDC_LABEL_NAMES, terminology_record
from ..preprocess.resample import SAX_ORIENTATIONS
from .config import ConfigError, RunConfig, TrainOptim, TrainRuntime, check_choice, check_minimums, run_config_loaders
from .distributed import DistInfo, barrier
from .engine import Engine, Task
from .finetune import FinetuneKind, FinetuneSummary, InitConfig, check_finetune, run_overrides, write_result_json
from .progress import write_metrics_csv
from .seg_metrics import never_found, one_hot_volume, region_dice, stack_thirds, structure_metrics, summarise
from .signals import GracefulStop
from .transfer import TRANSFER_MODES, TransferReport, load_pretrained, transfer_keys

__all__ = [
    "FinetuneSegConfig",
    "FinetuneResult",
    "SegTask",
    "SEG_KIND",
    "finetune_seg",
    "load_finetune_config",
    "finetune_config_from_dict",
    "build_seg_model_config",
    "epoch_batches",
]

log = logging.getLogger("planessl.training")

#: val_dice_<structure>: mean over validation volumes; a structure stuck at 0 shows a class the network never predicts
VAL_STRUCTURE_COLUMNS = tuple(f"val_dice_{n}" for n in ACDC_LABEL_NAMES[1:])
TEST_COLUMNS = ("subject", "phase", "structure", "label", "dice", "hd95_mm", "assd_mm", "status")


# ----------------------------------------------------------------------------- configuration
@dataclass
class SegDataConfig:
    """Labelled data and its preparation (same meaning as ``planessl prepare``'s settings)."""

    format: str = "auto"  #: the data set's layout (SEG_DATA_FORMATS; auto: detected and logged)
    root: str | None = None  #: the data set's folder; its seg cache is built/reused
    dicom: str | None = None  #: the old name of data.root with data.format dicom (still read)
    cache: str | None = None  #: seg cache root (default: OUTPUT/../seg_cache when data.root is set)
    spacing_mm: float = 1.26
    image_size: int = 224
    normalisation: str = "minmax"
    #: stored: SAX slices in the file's orientation; canonical: resampled onto the standard display orientation
    #: from the geometry (sites store images rotated and mirrored), in training and in every prediction after
    sax_orientation: str = "stored"
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
class SegOptimConfig(TrainOptim):
    """Adam; the learning rate constant by default (decay_factor 1), as the paper's fine-tuning."""

    decay_factor: float = 1.0


@dataclass
class SegLossConfig:
    dice_weight: float = 1.0
    ce_weight: float = 1.0


@dataclass
class SegRuntimeConfig(TrainRuntime):
    lcc: bool = True  #: keep the largest connected component per structure (validation, test)


@dataclass
class SegSplitConfig:
    """Who is tested and who validates, when counts or strata are wanted (all null: ``data.*_fraction``'s split)."""

    test_subjects: int | None = None  #: test subjects (null: round(data.test_fraction * n))
    val_subjects: int | None = None  #: validation subjects, which choose the epoch (null: data.val_fraction)
    stratify_by: str | None = None  #: subjects.csv column (e.g. pathology) the test/validation sets follow


@dataclass
class FinetuneSegConfig(RunConfig):
    data: SegDataConfig = field(default_factory=SegDataConfig)
    split: SegSplitConfig = field(default_factory=SegSplitConfig)
    model: SegModelConfig = field(default_factory=SegModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optim: SegOptimConfig = field(default_factory=SegOptimConfig)
    loss: SegLossConfig = field(default_factory=SegLossConfig)
    runtime: SegRuntimeConfig = field(default_factory=SegRuntimeConfig)
    output: str = "runs/finetune_seg"


#: the data-set formats ``finetune seg`` reads (``data.sources``)
SEG_DATA_FORMATS = ("phantom", "dicom", "acdc", "mnms2")


def _subject_attributes(config: FinetuneSegConfig, cache: SliceCache) -> dict[str, dict[str, str]]:
    """Per-subject attributes by cache key: the cohort's ``subjects.csv`` (phantom, DICOM trees) and the
    groups the data set records itself (ACDC ``Group``, M&Ms-2 ``DISEASE``, kept in the seg cache) as
    ``pathology``."""
    d = config.data
    root = d.root or d.dicom
    attributes = read_subject_attributes(root) if root and Path(root).is_dir() else {}
    for key, group in zip(cache.subject_keys, cache.subject_groups, strict=True):
        if group:
            attributes.setdefault(key, {}).setdefault("pathology", str(group))
    return attributes


def _check(cfg: FinetuneSegConfig, bad) -> None:
    d, m = cfg.data, cfg.model
    if not d.root and not d.dicom and not d.cache:
        bad("data.root", "set data.root (a labelled data set, with data.format) or data.cache (a seg cache)")
    if d.root and d.dicom:
        bad("data.dicom", "the old name of data.root (with data.format dicom): set only data.root")
    check_choice(bad, "data.format", d.format, (*SEG_DATA_FORMATS, "auto"))
    if d.spacing_mm <= 0:
        bad("data.spacing_mm", f"must be > 0, got {d.spacing_mm}")
    if d.image_size < 8 or d.image_size % 2 ** (m.levels - 1):
        bad("data.image_size", f"{d.image_size} must be >= 8 and divisible by 2**(model.levels-1)")
    check_choice(bad, "data.normalisation", d.normalisation, ("minmax", "zscore"))
    check_choice(bad, "data.sax_orientation", d.sax_orientation, SAX_ORIENTATIONS)
    for key in ("val_fraction", "test_fraction"):
        if not 0.0 <= getattr(d, key) < 1.0:
            bad(f"data.{key}", f"must be in [0, 1), got {getattr(d, key)}")
    check_minimums(bad, "model", m, in_channels=1)
    for key in ("test_subjects", "val_subjects"):
        value = getattr(cfg.split, key)
        if value is not None and value < 0:
            bad(f"split.{key}", f"must be >= 0 or null, got {value}")
    if cfg.split.stratify_by is not None and not (d.root or d.dicom):
        bad("split.stratify_by", "needs data.root (its subjects.csv or the data set's own records hold the groups)")
    if cfg.loss.dice_weight < 0 or cfg.loss.ce_weight < 0 or cfg.loss.dice_weight + cfg.loss.ce_weight == 0:
        bad("loss", "weights must be >= 0 and not both 0")
    check_finetune(cfg, bad, TRANSFER_MODES)


#: validated configs from a mapping or a YAML file (ConfigError naming the file or --set, and the key)
finetune_config_from_dict, load_finetune_config = run_config_loaders(FinetuneSegConfig, _check)


def build_seg_model_config(config: FinetuneSegConfig) -> UNetConfig:
    """PlaneSSLNet for segmentation: decoder output = ``len(ACDC_LABEL_NAMES)`` class logits, no location head."""
    m = config.model
    cfg = UNetConfig(in_channels=m.in_channels, base_filters=m.base_filters, levels=m.levels,
                     line_channels=len(ACDC_LABEL_NAMES), location_head=False, norm=m.norm)
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------------- result
@dataclass
class FinetuneResult(FinetuneSummary):
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
    summary_metrics: dict[str, dict[str, Any]]
    evaluated_on: str  # "test" or "val"
    seconds: float
    #: mean Dice by region of the stack ("basal", "mid", "apical") and by subject group ("pathology NOR")
    region_dice: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    transfer_report: dict[str, Any] | None = None
    task: str = "seg"
    headline_metric: str = "dice mean"

    @property
    def headline(self) -> float | None:
        return self.summary_metrics.get("mean", {}).get("dice")

    def results_rows(self) -> list[dict[str, Any]]:
        """Rows ``task,init,labeled_subjects,seed,metric,value`` (docs/conventions.md, 'Results CSV'), one per
        summary entry and metric, metric named ``"<metric> <phase> <structure>"`` (e.g. ``"dice ED LV"``)."""
        init = "scratch" if self.init == "scratch" else f"pretrained:{self.transfer}"
        out = []
        for key, entry in self.summary_metrics.items():
            for m in ("dice", "hd95_mm", "assd_mm", "n_empty_pred"):
                out.append({"task": self.task, "init": init, "labeled_subjects": self.labeled_subjects,
                            "seed": self.seed, "metric": f"{m} {key}", "value": entry[m]})
        for key, value in self.region_dice.items():
            out.append({"task": self.task, "init": init, "labeled_subjects": self.labeled_subjects,
                        "seed": self.seed, "metric": f"dice {key}", "value": value})
        # the validation Dice of the kept epoch (what chose it), so a study can choose between inits on it
        out.append({"task": self.task, "init": init, "labeled_subjects": self.labeled_subjects, "seed": self.seed,
                    "metric": "val_dice mean",
                    "value": float("nan") if self.best_val_dice is None else float(self.best_val_dice)})
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output), "weights": str(self.weights), "init": self.init, "transfer": self.transfer,
            "labeled_subjects": self.labeled_subjects, "seed": self.seed, "best_epoch": self.best_epoch,
            "best_val_dice": self.best_val_dice, "evaluated_on": self.evaluated_on, "summary": self.summary_metrics,
            "seconds": self.seconds, "transfer_report": self.transfer_report, "region_dice": self.region_dice,
        }


# ----------------------------------------------------------------------------- training pieces
def _open_data(config: FinetuneSegConfig) -> SliceCache:
    d = config.data
    if d.root or d.dicom:
        spec = DataSpec(d.format, Path(d.root)) if d.root else DataSpec("dicom", Path(d.dicom or ""))
        spec = resolve_data_spec(spec, allowed=SEG_DATA_FORMATS)
        if d.format == "auto":
            log.info("data.root %s: detected the %s layout", spec.root, spec.format)
        prep = PrepareConfig(spacing_mm=d.spacing_mm, size_px=d.image_size, normalisation=d.normalisation,
                             dtype="float32", anatomy="heart", sax_orientation=d.sax_orientation)
        root = Path(d.cache) if d.cache else Path(config.output).parent / "seg_cache"
        cache = prepare_seg_cache(spec, root, prep)
    else:
        cache = open_cache(Path(d.cache), content="seg")
    h, w = cache.image_shape
    if (h, w) != (d.image_size, d.image_size) or abs(cache.spacing_mm - d.spacing_mm) > 1e-9:
        raise ConfigError([f"data.cache: {cache.path} holds {h}x{w} px at {cache.spacing_mm} mm, the config asks for "
                           f"{d.image_size} px at {d.spacing_mm} mm"])
    held = str(cache.meta.get("config", {}).get("sax_orientation", "stored"))
    if held != d.sax_orientation:
        raise ConfigError([f"data.cache: {cache.path} holds SAX slices in the {held} orientation, the config asks "
                           f"for {d.sax_orientation} (data.sax_orientation)"])
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
    """Dice of RV, Myo, LV in one volume (``monai.metrics.compute_dice``; 1 for a structure absent from both)."""
    from monai.metrics import compute_dice

    classes = range(1, len(ACDC_LABEL_NAMES))
    dice = compute_dice(torch.from_numpy(one_hot_volume(pred, classes)), torch.from_numpy(one_hot_volume(ref, classes)),
                        include_background=True, ignore_empty=False)
    return [float(d) for d in dice[0]]



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


class SegTask(Task):
    """Cardiac segmentation as an engine task (module docstring)."""

    name = "finetune seg"
    columns = ("train_loss", "val_loss", "val_dice", *VAL_STRUCTURE_COLUMNS)

    def __init__(self, config: FinetuneSegConfig) -> None:
        super().__init__(config)
        self.start = time.perf_counter()

    def _open(self, dist: DistInfo) -> None:
        """The seg cache (rank 0 prepares it first under torchrun) and the subject split."""
        config = self.config
        if dist.distributed and not dist.is_main:
            barrier(dist)
        self.cache = _open_data(config)
        if dist.distributed and dist.is_main:
            barrier(dist)
        d, sp = config.data, config.split
        keys = self.cache.subject_keys
        attributes = _subject_attributes(config, self.cache)
        self.groups = subject_groups(list(keys), attributes, sp.stratify_by or "pathology")
        if sp.test_subjects is None and sp.val_subjects is None and sp.stratify_by is None:
            pool, self.val, self.test = split_seg_subjects(keys, d.val_fraction, d.test_fraction, d.split_seed)
        else:
            n = len(keys)
            n_test = sp.test_subjects if sp.test_subjects is not None else int(round(d.test_fraction * n))
            n_val = sp.val_subjects if sp.val_subjects is not None else int(round(d.val_fraction * n))
            strata = self.groups if sp.stratify_by else [None] * n
            if sp.stratify_by and not any(strata):
                log.warning("split.stratify_by: no subject of %s has a '%s' (subjects.csv); the split is not "
                            "stratified", d.root or d.dicom, sp.stratify_by)
            try:
                pool, self.val, self.test = split_seg_subjects_stratified(keys, strata, n_test, n_val, d.split_seed)
            except ValueError as exc:
                raise ConfigError([f"split: {exc}"]) from None
        try:
            self.labeled = choose_labeled_subjects(pool, keys, d.labeled_subjects, config.runtime.seed)
        except ValueError as exc:
            raise ConfigError([f"data.labeled_subjects: {exc} ({len(keys)} subjects: {len(pool)} pool, "
                               f"{len(self.val)} validation, {len(self.test)} test)"]) from None

    def setup(self, device: torch.device, dist: DistInfo) -> torch.nn.Module:
        from monai.losses import DiceCELoss

        self._open(dist)
        config, cache = self.config, self.cache
        self.device = device
        self.model_config = build_seg_model_config(config)
        net = PlaneSSLNet(self.model_config).to(device)
        self.transfer: TransferReport | None = None
        if config.init.init != "scratch":
            self.transfer = load_pretrained(net, config.init.init, config.init.transfer)
            net.to(device)
            inp = self.transfer.pretrained_input or {}
            d = config.data
            if (list(inp.get("size_hw", [])) != [d.image_size, d.image_size]
                    or any(abs(float(s) - d.spacing_mm) > 1e-6 for s in inp.get("spacing_mm", []))):
                log.warning("%s was pretrained on %s px at %s mm, fine-tuning on %d px at %g mm: the features may "
                            "transfer less well", config.init.init, inp.get("size_hw"), inp.get("spacing_mm"),
                            d.image_size, d.spacing_mm)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=config.loss.dice_weight,
                                  lambda_ce=config.loss.ce_weight)
        rows = np.flatnonzero(np.isin(cache.index["subject"], self.labeled))
        self.train_x = torch.from_numpy(np.asarray(cache.images[rows], dtype=np.float32)).unsqueeze(1)
        self.train_y = torch.from_numpy(np.asarray(cache.labels[rows], dtype=np.int64))
        self.val_volumes = cache.volumes(self.val)
        self.test_volumes = cache.volumes(self.test)
        d = config.data
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in d.augment_options.items()}
        options.setdefault("rotation_deg", d.rotation_deg)
        self.augment = AugmentConfig(**options) if d.augment else None
        return net

    def param_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        named = dict(model.named_parameters())
        moved = set(transfer_keys(list(named), self.config.init.transfer))
        return {"new": [p for k, p in named.items() if k not in moved],
                "transferred": [p for k, p in named.items() if k in moved]}

    def describe_start(self) -> str:
        return (f"init {self.config.init.init}, {len(self.labeled)} labelled / {len(self.val)} val / "
                f"{len(self.test)} test subjects, {len(self.train_x)} slices")

    def fingerprint(self) -> str | None:
        return self.cache.meta.get("data_fingerprint")

    def epoch_batches(self, epoch: int, dist: DistInfo) -> list[torch.Tensor]:
        """Global batches (``epoch_batches``), each split evenly across the ranks."""
        o = self.config.optim
        batches = epoch_batches(len(self.train_x), o.batch_size, o.steps_per_epoch,
                                _batch_seed(self.config.runtime.seed, epoch, 0xFFFF))
        if dist.world_size == 1:
            return batches
        return [b.tensor_split(dist.world_size)[dist.rank] for b in batches]

    def train_step(self, model: torch.nn.Module, idx: torch.Tensor, epoch: int, index: int,
                   dist: DistInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = self.train_x[idx].to(self.device), self.train_y[idx].to(self.device)
        if self.augment is not None:
            g = torch.Generator(device=self.device).manual_seed(_batch_seed(self.config.runtime.seed, epoch, index))
            out = augment_batch({"image": x}, g, self.augment)
            x = out["image"]
            if "affine_px" in out:
                y = _warp_labels(y, out["affine_px"])
        if len(idx) == 1 and self.model_config.norm == "batch":
            x, y = x.repeat(2, 1, 1, 1), y.repeat(2, 1, 1)  # BatchNorm needs two samples in training
        if self.config.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = self.loss(model(x)["lines"], y)
        return loss, {"loss": loss.detach() / dist.world_size}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits.float(), labels.unsqueeze(1))

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, dist: DistInfo) -> dict[str, Any]:
        """Validation loss, mean Dice over volumes and structures, and the mean Dice per structure (RV, Myo,
        LV); empty without validation subjects, and on ranks other than 0 under torchrun (only rank 0 saves
        checkpoints and selects the best)."""
        empty = {"val_loss": None, "val_dice": None, **dict.fromkeys(VAL_STRUCTURE_COLUMNS)}
        if not self.val_volumes or not dist.is_main:
            return empty
        model.eval()
        losses, dices = [], []
        for rows in self.val_volumes.values():
            x = np.asarray(self.cache.images[rows], dtype=np.float32)
            ref = np.asarray(self.cache.labels[rows])
            logits = model(torch.from_numpy(x).unsqueeze(1).to(self.device))["lines"]
            losses.append(float(self.loss(logits, torch.from_numpy(ref.astype(np.int64)).to(self.device))))
            pred = np.argmax(logits.float().cpu().numpy(), axis=1).astype(np.uint8)
            if self.config.runtime.lcc:
                pred = keep_largest_component(pred, range(1, len(ACDC_LABEL_NAMES)))
            dices.append(_structure_dice(pred, ref))
        per_structure = np.mean(dices, axis=0)
        return {"val_loss": float(np.mean(losses)), "val_dice": float(per_structure.mean()),
                **dict(zip(VAL_STRUCTURE_COLUMNS, (float(d) for d in per_structure), strict=True))}

    def _score(self, row: dict[str, Any]) -> float | None:
        if row.get("val_dice") is not None:
            return row["val_dice"]
        return -row["train_loss"] if not self.val_volumes else None

    def improved(self, row: dict[str, Any], best: dict[str, Any] | None) -> bool:
        score = self._score(row)
        if score is None:
            return False
        return best is None or score > self._score(best)

    def describe(self, row: dict[str, Any]) -> str:
        dice = f" val Dice {row['val_dice']:.3f}" if row.get("val_dice") is not None else ""
        return f"train {row['train_loss']:.4g}{dice}"

    def evaluate(self, model: torch.nn.Module, volumes: dict[tuple[int, int], np.ndarray]) -> list[dict[str, Any]]:
        """Per (subject, phase, structure) metrics of the model's weights; ``self.region_dice`` (mean Dice by
        basal / mid / apical third of each stack, and by subject group) as a side result."""
        rows: list[dict[str, Any]] = []
        keys = self.cache.subject_keys
        regions: dict[str, list[float]] = {}
        for (subject, kind), idx in volumes.items():
            x = np.asarray(self.cache.images[idx], dtype=np.float32)
            ref = np.asarray(self.cache.labels[idx])
            pred = _predict_volume(model, x, self.config.runtime.lcc, self.config.optim.batch_size)
            volume_rows = structure_metrics(pred, ref, self.cache.volume_spacing_mm(idx))
            for r in volume_rows:
                rows.append({"subject": keys[subject], "phase": PHASE_KINDS[kind], **r})
            idx_rows = self.cache.index[idx]
            thirds = stack_thirds(idx_rows["location_mm"], idx_rows["x_dir_lps"][0], idx_rows["y_dir_lps"][0])
            for name, value in region_dice(pred, ref, thirds).items():
                regions.setdefault(name, []).append(value)
            group = self.groups[subject] if subject < len(self.groups) else None
            if group:
                regions.setdefault(f"pathology {group}", []).append(float(np.mean([r["dice"] for r in volume_rows])))
        self.region_dice = {k: float(np.mean(v)) for k, v in regions.items() if v}
        return rows

    def finish(self, model: torch.nn.Module, state: dict[str, Any]) -> FinetuneResult:
        config, cache, out = self.config, self.cache, Path(self.config.output)
        volumes, on = (self.test_volumes, "test") if self.test_volumes else (self.val_volumes, "val")
        rows = self.evaluate(model, volumes)
        summary = summarise(rows)
        write_metrics_csv(rows, out / "test_metrics.csv", TEST_COLUMNS)
        for structure, (empty, n) in never_found(rows).items():
            log.warning("%s: the fine-tuned network never finds %s (Dice 0 on all %d %s volumes that have it, "
                        "none of it predicted in %d): the run failed for that structure. The full rate for the "
                        "transferred layers (optim.transferred_lr: null), a transfer of the encoder only "
                        "(init.transfer: encoder) or another seed may find it.", out, structure, n, on, empty)
        history = state["history"]
        best = state.get("best_epoch") or state["epoch"]
        best_row = history[best - 1]
        transfer = self.transfer.as_dict() if self.transfer else None
        metrics = {"best_epoch": best, "val_dice": best_row.get("val_dice"), "evaluated_on": on, "summary": summary}
        manifest = build_manifest(
            self.model_config, "seg", views=["SAX"], channels=list(ACDC_LABEL_NAMES),
            input_size_hw=cache.image_shape, input_spacing_mm=cache.spacing_mm,
            input_sax_orientation=str(cache.meta["config"].get("sax_orientation", "stored")),
            intensity_normalisation=cache.meta["normalisation"], label_names=list(ACDC_LABEL_NAMES),
            terminology=terminology_record(),
            training_config={**config.to_dict(), "labeled_subject_count": len(self.labeled),
                             "transfer_report": transfer},
            data_fingerprint=cache.meta["data_fingerprint"], metrics=metrics,
        )
        weights = export_weights(model, out / "model", manifest)
        result = FinetuneResult(
            output=out, weights=weights, init=config.init.init,
            transfer=config.init.transfer if config.init.init != "scratch" else None,
            labeled_subjects=len(self.labeled), seed=config.runtime.seed, best_epoch=best,
            best_val_dice=best_row.get("val_dice"), rows=rows, summary_metrics=summary, evaluated_on=on,
            seconds=time.perf_counter() - self.start, history=history, transfer_report=transfer,
            region_dice=self.region_dice,
        )
        write_result_json(out / "result.json", result.as_dict())
        return result


def finetune_seg(config: FinetuneSegConfig, init: str | None = None, labeled_subjects: int | None = None,
                 seed: int | None = None, *, transfer: str | None = None, output: str | Path | None = None,
                 resume: bool = False, stop: GracefulStop | None = None) -> FinetuneResult:
    """Fine-tune a segmentation network (module docstring) and return its test metrics.

    ``init`` ("scratch" or a weights path), ``labeled_subjects``, ``seed``, ``transfer`` and
    ``output`` override the config's values when given; ``resume`` continues the run in ``output``.
    Raises ConfigError (bad settings, too many labelled subjects), RunExistsError (output already
    used without ``resume``), SegDataError (data/labels), TransferError (pretrained weights that do
    not fit), TrainingInterrupted (a signal; resumable).
    """
    changes = run_overrides(None, init=init, transfer=transfer, labeled_subjects=labeled_subjects, seed=seed,
                            output=output)
    if changes:
        config = finetune_config_from_dict(config.to_dict(), "config", changes)
    return Engine(SegTask(config), stop).run(resume).result


#: the task as ``planessl finetune seg`` and ``planessl experiment transfer`` see it
SEG_KIND = FinetuneKind(
    name="seg", headline="dice mean",
    description="mean Dice over structures (RV, Myo, LV) and phases (ED, ES)", validation="val_dice mean",
    load_config=load_finetune_config, run=finetune_seg, transfer_modes=TRANSFER_MODES,
)
