"""Pretraining as an engine task: ``train(config)`` -> checkpoints, logs, plot and exported weights.

:class:`PretextTask` trains the intersection-line heatmaps and/or the relative slice location
(``task.name`` lines | location | both) on the slices of a prepared cache (``data_hooks``); the
loop, checkpoints, resume, signals, DDP and logging are the engine's (``training/engine.py``).

Outputs under ``config.output`` (rank 0 writes, the others only compute)::

    config.yaml                 the resolved configuration
    checkpoints/last.*          resumable state after the latest epoch (or every N steps)
    checkpoints/best.*          the state with the lowest validation loss (training loss without validation)
    metrics.csv, progress.png   one row / point per epoch
    tensorboard/                scalars (runtime.tensorboard)
    model/                      exported best weights: model.safetensors + manifest.json

Reproducibility: the epoch's sample order is a pure function of ``(seed, epoch)``, augmentation
draws from a generator seeded by ``(seed, epoch, batch, rank)``, and every checkpoint holds the
model, optimiser, GradScaler, RNG states and the position inside the epoch. In deterministic CPU
mode a run resumed after a kill at any point ends with bit-identical weights.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from PlaneSSLLib.models import PlaneSSLNet, UNetConfig

from ..inference.weights import build_manifest, export_weights
from ..preprocess.codes import VIEW_CODES
from .config import ConfigError, PretrainConfig
from .data_hooks import DataInfo, SamplerFactory, build_datasets
from .distributed import DistInfo, all_reduce_sum, shard_batches
from .engine import Engine, RunExistsError, Task, last_checkpoint
from .losses import combine_terms, pretext_terms
from .signals import GracefulStop
from .view_heads import batch_heads, head_lookup

__all__ = ["TrainResult", "PretextTask", "train", "build_model_config", "task_terms", "RunExistsError",
           "last_checkpoint"]

log = logging.getLogger("planessl.training")

Datasets = tuple[Dataset, Dataset | None, SamplerFactory, DataInfo]


@dataclass
class TrainResult:
    """What a finished run produced."""

    output: Path
    epochs: int
    global_step: int
    best_metric: float | None
    best_epoch: int | None
    weights: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def task_terms(task: str) -> tuple[str, ...]:
    """The loss terms a task trains."""
    return {"lines": ("lines",), "location": ("location",), "both": ("lines", "location")}[task]


def build_model_config(config: PretrainConfig, info: DataInfo) -> UNetConfig:
    """The network for the task: no decoder for ``location``, no location head for ``lines``."""
    m, task = config.model, config.task.name
    channels = len(info.channel_names)
    if m.line_channels is not None and task != "location" and m.line_channels != channels:
        raise ConfigError([
            f"model.line_channels: {m.line_channels}, but the data gives {channels} partner channel(s) "
            f"({', '.join(info.channel_names)}); set it to {channels} or null"
        ])
    heads: tuple[str, ...] = ()
    if m.view_heads and task != "location":
        known = set(VIEW_CODES)
        heads = tuple(v for v, partners in (info.views or {}).items() if partners and v in known) \
            if isinstance(info.views, dict) else ()
        if len(heads) < 2:
            raise ConfigError([f"model.view_heads: needs lines from two or more views, the data gives "
                               f"{info.views!r}"])
    cfg = UNetConfig(
        in_channels=m.in_channels,
        base_filters=m.base_filters,
        levels=m.levels,
        line_channels=0 if task == "location" else (m.line_channels or channels),
        location_head=task != "lines",
        location_hidden=m.location_hidden,
        norm=m.norm,
        head_views=heads,
        location_pooling=m.location_pooling,
    )
    cfg.validate()
    return cfg


class _EpochBatches:
    """A batch sampler whose batches are replaced every epoch (works with persistent workers)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _find_augment(config: PretrainConfig) -> tuple[Callable, Any] | None:
    """``(augment_batch, its config)`` when augmentation is on."""
    if not config.data.augment:
        return None
    module = importlib.import_module("PlaneSSLLib.data.augment")
    options = dict(config.data.augment_options)
    config_cls = module.AugmentConfig
    known = set(config_cls.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError([f"data.augment_options.{k}: unknown option (known: {', '.join(sorted(known))})"
                           for k in unknown])
    try:
        return module.augment_batch, config_cls(**{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in options.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError([f"data.augment_options: {exc}"]) from exc


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
        out[key] = value
    image = out["image"].float()
    out["image"] = image.contiguous(memory_format=torch.channels_last) if channels_last else image
    return out


class PretextTask(Task):
    """The pretext tasks (lines, location or both) on the slices of a cache (module docstring)."""

    name = "pretrain"
    frozen_on_resume = ("model", "task")
    columns = ("train_loss", "train_lines", "train_location", "val_loss", "val_lines", "val_location")

    def __init__(self, config: PretrainConfig, datasets: Datasets | None = None) -> None:
        super().__init__(config)
        self._datasets = datasets
        self.terms = task_terms(config.task.name)
        self.plot_terms = self.terms

    def setup(self, device: torch.device, dist: DistInfo) -> torch.nn.Module:
        cfg = self.config
        datasets = self._datasets if self._datasets is not None else build_datasets(cfg)
        self.train_ds, self.val_ds, self.sampler_factory, self.info = datasets
        self.device, self.dist = device, dist
        self.channels_last = cfg.runtime.channels_last
        self.model_config = build_model_config(cfg, self.info)
        self.heads = head_lookup(self.model_config)
        self.augment = _find_augment(cfg)
        self._batches = _EpochBatches()
        workers = cfg.data.workers
        generator = torch.Generator().manual_seed(_batch_seed(cfg.runtime.seed, 2**31, 0, dist.rank))
        self._loader = DataLoader(
            self.train_ds, batch_sampler=self._batches, num_workers=workers, collate_fn=default_collate,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0, generator=generator,
            worker_init_fn=_seed_worker if workers > 0 else None,
        )
        return PlaneSSLNet(self.model_config).to(device)

    def describe_start(self) -> str:
        return (f"{self.config.task.name} on {self.info.train_subjects} train / {self.info.val_subjects} val "
                "subjects")

    def fingerprint(self) -> str | None:
        return self.info.fingerprint

    def epoch_batches(self, epoch: int, dist: DistInfo) -> list[list[int]]:
        order = list(self.sampler_factory(self.config.runtime.seed, epoch))
        return shard_batches(order, self.config.optim.batch_size, dist.rank, dist.world_size)

    def iterate(self, batches: list[list[int]]) -> Iterable[Any]:
        self._batches.batches = batches
        return iter(self._loader)

    def _sync_counts(self, terms: dict) -> dict[str, torch.Tensor] | None:
        if not self.dist.distributed:
            return None
        names = list(terms)
        t = torch.tensor([float(terms[n][1]) for n in names], dtype=torch.float64, device=self.device)
        all_reduce_sum(t, self.dist)
        return {n: t[i] for i, n in enumerate(names)}

    def train_step(self, model: torch.nn.Module, batch: dict[str, Any], epoch: int, index: int,
                   dist: DistInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        batch = _to_device(batch, self.device, self.channels_last)
        if self.augment is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(_batch_seed(cfg.runtime.seed, epoch, index, dist.rank))
            augment_batch, augment_config = self.augment
            batch = augment_batch(batch, generator, augment_config)
        outputs = model(batch["image"], batch_heads(self.heads, batch.get("view")))
        terms = pretext_terms(outputs, batch, cfg.task.name, cfg.data.sigma_px)
        global_counts = self._sync_counts(terms)
        loss = combine_terms(terms, cfg.task.alpha, cfg.task.beta, global_counts, dist.world_size)
        world = dist.world_size
        shares = {"loss": loss.detach() / world}
        for name, (mean, count) in terms.items():
            value = mean.detach()
            if global_counts is not None:
                value = value * world * count.clamp_min(1.0) / global_counts[name].clamp_min(1.0)
            shares[name] = value / world
        return loss, shares

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, dist: DistInfo) -> dict[str, Any]:
        """Validation losses over the whole validation set (sharded over ranks, summed)."""
        if self.val_ds is None or len(self.val_ds) == 0:
            return {"val_loss": None, **{f"val_{t}": None for t in self.terms}}
        cfg = self.config
        indices = list(range(dist.rank, len(self.val_ds), dist.world_size))
        per_rank = max(1, cfg.optim.batch_size // dist.world_size)
        loader = DataLoader(Subset(self.val_ds, indices), batch_size=per_rank, shuffle=False,
                            num_workers=cfg.data.workers, collate_fn=default_collate)
        model.eval()
        if dist.distributed:  # BatchNorm running statistics as on rank 0 (the saved model)
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        from .runtime import amp_dtype, autocast

        amp = amp_dtype(cfg.runtime.amp, self.device)
        sums = torch.zeros(2 * len(self.terms), dtype=torch.float64, device=self.device)
        for batch in loader:
            batch = _to_device(batch, self.device, self.channels_last)
            with autocast(self.device, amp):
                outputs = model(batch["image"], batch_heads(self.heads, batch.get("view")))
            terms = pretext_terms(outputs, batch, cfg.task.name, cfg.data.sigma_px)
            for i, name in enumerate(self.terms):
                mean, count = terms[name]
                sums[2 * i] += mean.double() * count
                sums[2 * i + 1] += count
        all_reduce_sum(sums, dist)
        result: dict[str, Any] = {}
        weights = {"lines": cfg.task.alpha, "location": cfg.task.beta}
        total = 0.0
        for i, name in enumerate(self.terms):
            value = float(sums[2 * i] / sums[2 * i + 1]) if sums[2 * i + 1] > 0 else 0.0
            result[f"val_{name}"] = value
            total += weights[name] * value
        result["val_loss"] = total
        return result

    @staticmethod
    def _metric(row: dict[str, Any]) -> float:
        value = row.get("val_loss")
        return row["train_loss"] if value is None else value

    def improved(self, row: dict[str, Any], best: dict[str, Any] | None) -> bool:
        metric = self._metric(row)
        return math.isfinite(metric) and (best is None or metric < self._metric(best))

    def describe(self, row: dict[str, Any]) -> str:
        parts = " ".join(f"{t} {row['train_' + t]:.4g}" for t in self.terms)
        val = f" val {row['val_loss']:.4g}" if row.get("val_loss") is not None else ""
        return f"train {row['train_loss']:.4g} ({parts}){val}"

    def finish(self, model: torch.nn.Module, state: dict[str, Any]) -> Path:
        best_row = next((r for r in state["history"] if r["epoch"] == state.get("best_epoch")), None)
        metrics = {"best_epoch": state.get("best_epoch"),
                   "best_metric": self._metric(best_row) if best_row else None,
                   "epochs": state.get("epoch"), "steps": state.get("global_step")}
        if best_row:
            metrics.update({k: best_row.get(k) for k in ("train_loss", "train_lines", "train_location",
                                                          "val_loss", "val_lines", "val_location")})
        manifest = build_manifest(
            self.model_config, self.config.task.name,
            views=self.info.views,
            channels=[] if self.config.task.name == "location" else list(self.info.channel_names),
            input_size_hw=self.info.image_size_hw,
            input_spacing_mm=self.info.spacing_mm,
            intensity_normalisation=self.info.normalisation,
            label_names=None,
            training_config=self.config.to_dict(),
            data_fingerprint=self.info.fingerprint,
            metrics=metrics,
        )
        net = PlaneSSLNet(self.model_config)
        net.load_state_dict(model.state_dict())
        return export_weights(net, Path(self.config.output) / "model", manifest)


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: seed numpy and ``random`` from torch's per-worker seed."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - third-party code in workers may use the global RNG
    random.seed(seed)


def train(config: PretrainConfig, *, datasets: Datasets | None = None, resume: bool = False,
          stop: GracefulStop | None = None) -> TrainResult:
    """Pretrain (optionally under torchrun/DDP) and export the best weights.

    Args:
        config: a validated :class:`PretrainConfig`.
        datasets: ``(train_ds, val_ds, sampler_factory, info)``; default :func:`build_datasets`.
        resume: continue from ``OUTPUT/checkpoints/last.safetensors`` (required to exist).
        stop: the signal flag; by default SIGINT/SIGTERM are caught while training.
    Raises:
        ConfigError, RunExistsError, CheckpointError; TrainingInterrupted after a signal (a
        resumable ``last`` checkpoint has been written).
    """
    task = PretextTask(config, datasets)
    run = Engine(task, stop).run(resume)
    best_row = next((r for r in run.history if r["epoch"] == run.best_epoch), None)
    return TrainResult(run.output, run.epochs, run.global_step, PretextTask._metric(best_row) if best_row else None,
                       run.best_epoch, run.result, run.history)
