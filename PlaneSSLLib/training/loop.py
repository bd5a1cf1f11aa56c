"""The pretraining loop: ``train(config)`` -> checkpoints, logs, plot and exported weights.

Outputs under ``config.output`` (rank 0 writes, the others only compute)::

    config.yaml                 the resolved configuration
    checkpoints/last.*          resumable state after the latest epoch (or every N steps)
    checkpoints/best.*          the state with the lowest validation loss (training loss without validation)
    metrics.csv, progress.png   one row / point per epoch
    tensorboard/                scalars (runtime.tensorboard)
    model/                      exported best weights: model.safetensors + manifest.json

Reproducibility: the epoch's sample order is a pure function of ``(seed, epoch)``, augmentation
draws from a generator seeded by ``(seed, epoch, batch, rank)``, and every checkpoint holds the
model, optimiser, scheduler, GradScaler, RNG states and the position inside the epoch. In
deterministic CPU mode a run resumed after a kill at any point ends with bit-identical weights.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from PlaneSSLLib.models import PlaneSSLNet, UNetConfig

from ..errors import PlaneSSLError
from ..inference.weights import build_manifest, export_weights
from .checkpoint import Checkpoint, checkpoint_path, load_checkpoint, restore_checkpoint, save_checkpoint
from .config import ConfigError, PretrainConfig, config_hash, save_config
from .data_hooks import DataInfo, SamplerFactory, build_datasets
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup_distributed, init_distributed, shard_batches
from .losses import combine_terms, pretext_terms
from .progress import MetricsLog, ProgressReporter, format_duration
from .runtime import amp_dtype, autocast, make_grad_scaler, resolve_device, seed_everything, set_determinism
from .signals import GracefulStop, TrainingInterrupted

__all__ = ["TrainResult", "train", "build_model_config", "task_terms", "RunExistsError", "last_checkpoint"]

log = logging.getLogger("planessl.training")

Datasets = tuple[Dataset, Dataset | None, SamplerFactory, DataInfo]
#: config sections that must not change when resuming (the weights would not fit / mean something else)
_FROZEN_ON_RESUME = ("model", "task")


class RunExistsError(PlaneSSLError, RuntimeError):
    """The output directory already holds a run and ``resume`` was not asked for (or vice versa)."""


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
    cfg = UNetConfig(
        in_channels=m.in_channels,
        base_filters=m.base_filters,
        levels=m.levels,
        line_channels=0 if task == "location" else (m.line_channels or channels),
        location_head=task != "lines",
        location_hidden=m.location_hidden,
        norm=m.norm,
    )
    cfg.validate()
    return cfg


def last_checkpoint(output: str | Path) -> Path:
    """Path of the ``last`` checkpoint of a run directory."""
    return checkpoint_path(Path(output) / "checkpoints", "last")


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
    """``(augment_batch, its config)`` from ``PlaneSSLLib.data.augment`` when present and enabled."""
    if not config.data.augment:
        return None
    try:
        module = importlib.import_module("PlaneSSLLib.data.augment")
    except ImportError:
        return None
    fn = getattr(module, "augment_batch", None)
    if fn is None:
        return None
    options = dict(config.data.augment_options)
    config_cls = getattr(module, "AugmentConfig", None)
    if config_cls is None:
        return fn, options
    known = set(getattr(config_cls, "__dataclass_fields__", {}))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError([f"data.augment_options.{k}: unknown option (known: {', '.join(sorted(known))})"
                           for k in unknown])
    try:
        return fn, config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
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


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


class _Trainer:
    """State and steps of one run (a class only to keep ``train`` readable)."""

    def __init__(self, config: PretrainConfig, datasets: Datasets, dist: DistInfo, stop: GracefulStop) -> None:
        self.config = config
        self.dist = dist
        self.stop = stop
        self.device = dist.device
        self.out = Path(config.output)
        self.ckpt_dir = self.out / "checkpoints"
        self.train_ds, self.val_ds, self.sampler_factory, self.info = datasets
        self.terms = task_terms(config.task.name)
        rt = config.runtime
        self.amp = amp_dtype(rt.amp, self.device)
        self.channels_last = rt.channels_last
        self.model_config = build_model_config(config, self.info)
        world = dist.world_size
        if config.optim.batch_size % world:
            raise ConfigError([
                f"optim.batch_size: the global batch {config.optim.batch_size} must be divisible by the "
                f"number of processes ({world})"
            ])
        self.augment = _find_augment(config)

        seed_everything(rt.seed)
        net = PlaneSSLNet(self.model_config).to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if dist.distributed and self.device.type == "cuda" and rt.sync_batchnorm and self.model_config.norm == "batch":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.net = net
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=config.optim.decay_every, gamma=config.optim.decay_factor
        )
        self.scaler = make_grad_scaler(self.device, self.amp)
        self.state: dict[str, Any] = {
            "epoch": 0, "batch_in_epoch": 0, "global_step": 0, "accum": self._zero_accum(),
            "history": [], "best_metric": None, "best_epoch": None, "complete": False,
        }
        self.model: torch.nn.Module = net
        self.metrics: MetricsLog | None = None
        #: loss, lines, location summed on the device since the last flush (no per-step host sync)
        self._losses = torch.zeros(3, dtype=torch.float64, device=self.device)

    # -- setup -------------------------------------------------------------------------------

    @staticmethod
    def _zero_accum() -> dict[str, float]:
        return {"steps": 0.0, "loss": 0.0, "lines": 0.0, "location": 0.0, "images": 0.0, "seconds": 0.0}

    def resume_from(self, ckpt: Checkpoint) -> None:
        saved = ckpt.train_state.get("config", {})
        current = self.config.to_dict()
        frozen = [k for s in _FROZEN_ON_RESUME for k in _diff_keys(saved.get(s), current.get(s), f"{s}.")]
        if frozen:
            raise ConfigError([f"{ckpt.path}: cannot resume with a different {', '.join(frozen)} (was "
                               f"{', '.join(repr(_lookup(saved, k)) for k in frozen)})"])
        changed = _diff_keys(saved, current)
        if changed and self.dist.is_main:
            log.warning("resuming with changed settings: %s", ", ".join(changed))
        self.state = restore_checkpoint(ckpt, self.net, self.optimizer, self.scheduler, self.scaler)
        self.state.setdefault("accum", self._zero_accum())
        self.state["complete"] = self.state["epoch"] >= self.config.optim.epochs  # epochs may have changed
        self._losses.zero_()
        if not self.dist.is_main:  # the saved accumulators are global sums; rank 0 carries them
            self.state["accum"] = self._zero_accum()

    def wrap(self) -> None:
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        if self.config.runtime.compile:
            self.model = torch.compile(self.model)

    # -- checkpoints -------------------------------------------------------------------------

    def _train_state(self) -> dict[str, Any]:
        state = dict(self.state)
        state["config"] = self.config.to_dict()
        state["config_hash"] = config_hash(self.config)
        state["world_size"] = self.dist.world_size
        state["data_fingerprint"] = self.info.fingerprint
        return state

    def save(self, name: str) -> Path | None:
        if not self.dist.is_main:
            return None
        path = checkpoint_path(self.ckpt_dir, name)
        save_checkpoint(path, self.net, self.optimizer, self.scheduler, self.scaler, self._train_state())
        return path

    def _flush_losses(self) -> None:
        acc = self.state["accum"]
        for name, value in zip(("loss", "lines", "location"), self._losses.tolist(), strict=True):
            acc[name] += value
        self._losses.zero_()

    def _global_accum(self) -> dict[str, float]:
        self._flush_losses()
        acc = self.state["accum"]
        keys = sorted(acc)
        if not self.dist.distributed:
            return dict(acc)
        t = torch.tensor([acc[k] for k in keys], dtype=torch.float64, device=self.device)
        all_reduce_sum(t, self.dist)
        values = dict(zip(keys, t.tolist(), strict=True))
        for k in ("steps", "seconds"):  # the same on every rank: not summed
            values[k] = acc[k]
        return values

    def checkpoint_mid_epoch(self) -> Path | None:
        """Write `last` inside an epoch (every rank calls it: the accumulators are reduced first)."""
        total = self._global_accum()
        self.state["accum"] = total if self.dist.is_main else self._zero_accum()
        return self.save("last")

    # -- steps -------------------------------------------------------------------------------

    def _sync_counts(self, terms: dict, stop_flag: bool) -> tuple[dict[str, torch.Tensor] | None, bool]:
        if not self.dist.distributed:
            return None, stop_flag
        names = list(terms)
        t = torch.tensor([float(terms[n][1]) for n in names] + [1.0 if stop_flag else 0.0],
                         dtype=torch.float64, device=self.device)
        all_reduce_sum(t, self.dist)
        return {n: t[i] for i, n in enumerate(names)}, bool(t[-1].item() > 0)

    def train_step(self, batch: dict[str, Any], epoch: int, index: int) -> tuple[torch.Tensor, bool]:
        """One optimiser step; returns (this rank's share of the global loss, detached; stop?)."""
        cfg = self.config
        batch = _to_device(batch, self.device, self.channels_last)
        if self.augment is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(_batch_seed(cfg.runtime.seed, epoch, index, self.dist.rank))
            augment_batch, augment_config = self.augment
            batch = augment_batch(batch, generator, augment_config)
        self.model.train()
        with autocast(self.device, self.amp):
            outputs = self.model(batch["image"])
        terms = pretext_terms(outputs, batch, cfg.task.name, cfg.data.sigma_px)
        global_counts, stop = self._sync_counts(terms, self.stop.requested)
        loss = combine_terms(terms, cfg.task.alpha, cfg.task.beta, global_counts, self.dist.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        world = self.dist.world_size
        with torch.no_grad():
            share = loss.detach().double() / world
            self._losses[0] += share
            for name, (mean, count) in terms.items():
                value = mean.detach().double()
                if global_counts is not None:
                    value = value * world * count.clamp_min(1.0) / global_counts[name].clamp_min(1.0)
                self._losses[1 if name == "lines" else 2] += value / world
        return share, stop

    @torch.no_grad()
    def validate(self) -> dict[str, float | None]:
        """Validation losses over the whole validation set (sharded over ranks, summed)."""
        if self.val_ds is None or len(self.val_ds) == 0:
            return {"loss": None, **{t: None for t in self.terms}}
        cfg = self.config
        indices = list(range(self.dist.rank, len(self.val_ds), self.dist.world_size))
        per_rank = max(1, cfg.optim.batch_size // self.dist.world_size)
        loader = DataLoader(Subset(self.val_ds, indices), batch_size=per_rank, shuffle=False,
                            num_workers=cfg.data.workers, collate_fn=default_collate)
        net = self.net
        net.eval()
        if self.dist.distributed:  # BatchNorm running statistics as on rank 0 (the saved model)
            for buffer in net.buffers():
                torch.distributed.broadcast(buffer, src=0)
        sums = torch.zeros(2 * len(self.terms), dtype=torch.float64, device=self.device)
        for batch in loader:
            batch = _to_device(batch, self.device, self.channels_last)
            with autocast(self.device, self.amp):
                outputs = net(batch["image"])
            terms = pretext_terms(outputs, batch, cfg.task.name, cfg.data.sigma_px)
            for i, name in enumerate(self.terms):
                mean, count = terms[name]
                sums[2 * i] += mean.double() * count
                sums[2 * i + 1] += count
        all_reduce_sum(sums, self.dist)
        result: dict[str, float | None] = {}
        weights = {"lines": cfg.task.alpha, "location": cfg.task.beta}
        total = 0.0
        for i, name in enumerate(self.terms):
            value = float(sums[2 * i] / sums[2 * i + 1]) if sums[2 * i + 1] > 0 else 0.0
            result[name] = value
            total += weights[name] * value
        result["loss"] = total
        return result

    # -- the loop ----------------------------------------------------------------------------

    def _loader(self, batches: _EpochBatches) -> DataLoader:
        workers = self.config.data.workers
        generator = torch.Generator().manual_seed(_batch_seed(self.config.runtime.seed, 2**31, 0, self.dist.rank))
        return DataLoader(
            self.train_ds, batch_sampler=batches, num_workers=workers, collate_fn=default_collate,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0, generator=generator,
            worker_init_fn=_seed_worker if workers > 0 else None,
        )

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        order = list(self.sampler_factory(self.config.runtime.seed, epoch))
        return shard_batches(order, self.config.optim.batch_size, self.dist.rank, self.dist.world_size)

    def run(self) -> TrainResult:
        cfg, st = self.config, self.state
        epochs = cfg.optim.epochs
        steps_per_epoch = len(self._epoch_batches(0))
        if steps_per_epoch == 0:
            raise ConfigError(["data: the training set is empty"])
        total_steps = epochs * steps_per_epoch
        self.metrics = MetricsLog(self.out, self.dist.is_main, self.terms, cfg.runtime.tensorboard, cfg.runtime.plot)
        progress = ProgressReporter(total_steps, st["global_step"], self.dist.is_main, cfg.runtime.progress,
                                    cfg.runtime.log_every)
        batches = _EpochBatches()
        loader = self._loader(batches)
        ckpt_every = cfg.runtime.checkpoint_every_steps
        try:
            while st["epoch"] < epochs:
                epoch = st["epoch"]
                all_batches = self._epoch_batches(epoch)
                batches.batches = all_batches[st["batch_in_epoch"]:]
                global_images = [len(b) * self.dist.world_size for b in all_batches]
                progress.new_epoch()
                t_epoch = t_last = time.perf_counter()
                stop = False
                for index, batch in enumerate(loader, start=st["batch_in_epoch"]):
                    share, stop = self.train_step(batch, epoch, index)
                    now = time.perf_counter()
                    acc = st["accum"]
                    acc["steps"] += 1
                    acc["images"] += global_images[index] / self.dist.world_size
                    acc["seconds"] += now - t_last
                    t_last = now
                    st["batch_in_epoch"] = index + 1
                    st["global_step"] += 1
                    rank_loss = share * self.dist.world_size  # this rank's batch loss (a tensor)
                    progress.update(global_images[index], epoch, epochs, rank_loss)
                    if st["global_step"] % cfg.runtime.log_every == 0 and self.dist.is_main:
                        self.metrics.scalars(st["global_step"], {"train_step/loss": float(rank_loss)})
                    if not self.dist.distributed:
                        stop = self.stop.requested
                    last_of_epoch = index + 1 == len(all_batches)
                    if stop and not last_of_epoch:
                        path = self.checkpoint_mid_epoch()
                        raise TrainingInterrupted(self.stop.signum or 15, str(path) if path else None,
                                                  st["global_step"])
                    if ckpt_every and st["global_step"] % ckpt_every == 0 and not last_of_epoch:
                        self.checkpoint_mid_epoch()
                self._end_epoch(epoch, time.perf_counter() - t_epoch, progress)
                if stop or self._stop_everywhere():
                    raise TrainingInterrupted(self.stop.signum or 15, str(last_checkpoint(self.out)),
                                              st["global_step"])
            weights = self._export() if self.dist.is_main else None
            barrier(self.dist)
            return TrainResult(self.out, st["epoch"], st["global_step"], st["best_metric"], st["best_epoch"],
                               weights, list(st["history"]))
        finally:
            progress.close()
            self.metrics.close()

    def _stop_everywhere(self) -> bool:
        if not self.dist.distributed:
            return self.stop.requested
        _, stop = self._sync_counts({}, self.stop.requested)
        return stop

    def _end_epoch(self, epoch: int, seconds: float, progress: ProgressReporter) -> None:
        cfg, st = self.config, self.state
        acc = self._global_accum()
        steps = max(acc["steps"], 1.0)
        lr = self.optimizer.param_groups[0]["lr"]
        val = self.validate()
        self.scheduler.step()
        row: dict[str, Any] = {
            "epoch": epoch + 1, "step": st["global_step"], "lr": lr,
            "train_loss": acc["loss"] / steps,
            "train_lines": acc["lines"] / steps if "lines" in self.terms else None,
            "train_location": acc["location"] / steps if "location" in self.terms else None,
            "val_loss": val["loss"], "val_lines": val.get("lines"), "val_location": val.get("location"),
            "images_per_s": acc["images"] / acc["seconds"] if acc["seconds"] > 0 else None,
            "epoch_seconds": seconds, "best": False,
        }
        metric = row["val_loss"] if row["val_loss"] is not None else row["train_loss"]
        improved = math.isfinite(metric) and (st["best_metric"] is None or metric < st["best_metric"])
        st["epoch"] = epoch + 1
        st["batch_in_epoch"] = 0
        st["accum"] = self._zero_accum()
        if improved:
            st["best_metric"], st["best_epoch"], row["best"] = metric, epoch + 1, True
        st["history"] = [*st["history"], row]
        st["complete"] = st["epoch"] >= cfg.optim.epochs
        if improved:
            self.save("best")  # before `last`: a kill in between only repeats this epoch end
        self.save("last")
        if self.dist.is_main:
            self.metrics.epoch(st["history"])
            val_text = f" val {row['val_loss']:.4g}" if row["val_loss"] is not None else ""
            parts = " ".join(f"{t} {row['train_' + t]:.4g}" for t in self.terms)
            progress.message(
                f"epoch {epoch + 1}/{cfg.optim.epochs}: train {row['train_loss']:.4g} ({parts}){val_text} "
                f"lr {lr:.3g} {format_duration(seconds)}"
                + (f" {row['images_per_s']:.1f} img/s" if row["images_per_s"] else "")
                + (" [best]" if improved else "")
            )

    def _export(self) -> Path:
        best = checkpoint_path(self.ckpt_dir, "best")
        source = load_checkpoint(best if best.is_file() else checkpoint_path(self.ckpt_dir, "last"))
        net = PlaneSSLNet(self.model_config)
        net.load_state_dict(source.model_state())
        st = source.train_state
        best_row = next((r for r in st["history"] if r["epoch"] == st.get("best_epoch")), None)
        metrics = {"best_epoch": st.get("best_epoch"), "best_metric": st.get("best_metric"),
                   "epochs": st.get("epoch"), "steps": st.get("global_step")}
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
        return export_weights(net, self.out / "model", manifest)


def _lookup(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


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
    device = resolve_device(config.runtime.device)
    set_determinism(config.runtime.deterministic, device, compiled=config.runtime.compile)
    dist = init_distributed(device)
    own_stop = stop is None
    stop = stop or GracefulStop()
    try:
        if own_stop:
            stop.__enter__()
        out = Path(config.output)
        last = last_checkpoint(out)
        if resume and not last.is_file():
            raise RunExistsError(f"{out}: nothing to resume (no {last.relative_to(out)})")
        if not resume and last.is_file():
            raise RunExistsError(f"{out} already holds a run ({last.relative_to(out)}): pass --resume to "
                                 "continue it, or choose another output directory")
        datasets = datasets if datasets is not None else build_datasets(config)
        trainer = _Trainer(config, datasets, dist, stop)
        if resume:
            trainer.resume_from(load_checkpoint(last))
        trainer.wrap()
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(config, out / "config.yaml")
            info = trainer.info
            log.info(
                "training %s on %s x %d process(es): %d train / %d val subjects, %d parameters, global batch %d",
                config.task.name, device.type, dist.world_size, info.train_subjects, info.val_subjects,
                sum(p.numel() for p in trainer.net.parameters()), config.optim.batch_size,
            )
        barrier(dist)
        return trainer.run()
    finally:
        if own_stop:
            stop.__exit__(None, None, None)
        cleanup_distributed()


