"""The one training loop: ``Engine(task).run(resume=...)`` for pretraining and every fine-tuning task.

A :class:`Task` says what is trained (model, data, a train step, a validation row, which row is
better, what to export); the engine owns everything else, the same way for every task:

- the budget: ``optim.epochs`` epochs of the task's batches (``optim.steps_per_epoch`` fixes the
  steps per epoch for the fine-tuning tasks), the learning-rate policy per parameter group
  (``training.schedule``), validation every ``runtime.val_every`` epochs and at the last one;
- best/last selection on the task's rule, checkpoints ``checkpoints/{best,last}.safetensors``
  written atomically without pickle (``training.checkpoint``), ``last`` also every
  ``runtime.checkpoint_every_steps`` steps;
- ``resume``: model, optimiser, GradScaler, RNG states, step and the position inside the epoch
  come back from ``last``; the batch order of an epoch is a pure function of ``(seed, epoch)`` and
  augmentation draws from generators seeded by ``(seed, epoch, batch)``, so in deterministic CPU
  mode a run resumed after a kill at any point ends with bit-identical weights;
- SIGINT/SIGTERM: the current step finishes, a resumable ``last`` is written, and
  :class:`~PlaneSSLLib.training.signals.TrainingInterrupted` is raised (exit status 128 + signal);
- outputs (rank 0): ``config.yaml`` (the resolved config), ``metrics.csv`` and ``progress.png``
  (one row / point per epoch), TensorBoard scalars, a progress bar or log lines with images/s and ETA;
- DDP under ``torchrun`` (gloo on CPU, NCCL on CUDA; the task gives each rank its share of the global
  batch), AMP (bf16/fp16 with a GradScaler), channels-last and ``torch.compile`` as options.

At the end rank 0 loads the best weights (``last`` when no epoch was ever better) and calls
``task.finish``: test evaluation and export are the task's.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ..errors import PlaneSSLError
from .checkpoint import Checkpoint, checkpoint_path, load_checkpoint, restore_checkpoint, save_checkpoint
from .config import ConfigError, config_hash, save_config
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup_distributed, init_distributed
from .progress import MetricsLog, ProgressReporter, format_duration
from .runtime import amp_dtype, autocast, make_grad_scaler, resolve_device, seed_everything, set_determinism
from .schedule import LRPolicy, build_optimizer, drop_grads
from .signals import GracefulStop, TrainingInterrupted

__all__ = ["Task", "Engine", "EngineResult", "RunExistsError", "finite_or_none", "last_checkpoint"]

log = logging.getLogger("planessl.training")


class NonFiniteLossError(PlaneSSLError):
    """The training loss became NaN or infinite: the run stops; no checkpoint or export is written from then on."""


class RunExistsError(PlaneSSLError):
    """The output directory already holds a run and ``resume`` was not asked for (or vice versa)."""


def last_checkpoint(output: str | Path) -> Path:
    """Path of the ``last`` checkpoint of a run directory."""
    return checkpoint_path(Path(output) / "checkpoints", "last")


class Task(ABC):
    """What one kind of training run supplies to the :class:`Engine` (hooks in the order they are called).

    ``config`` is the run's validated config: it has ``optim`` (:class:`~.config.TrainOptim`),
    ``runtime`` (:class:`~.config.TrainRuntime`), ``output`` and ``to_dict()``.
    """

    #: short name in logs ("pretrain", "seg", "acl")
    name: str = "task"
    #: config sections that must not change when resuming (the weights would not fit / mean something else)
    frozen_on_resume: tuple[str, ...] = ("model",)
    #: metrics.csv columns between "lr" and "images_per_s" (train_* from the step terms, val_* from validate)
    columns: tuple[str, ...] = ("train_loss", "val_loss")
    #: loss terms with a panel of their own in progress.png and TensorBoard (besides the total loss)
    plot_terms: tuple[str, ...] = ()

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def setup(self, device: torch.device, dist: DistInfo) -> torch.nn.Module:
        """Build the data and the model (on ``device``; the engine has seeded the RNGs); return the model."""

    def param_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        """Parameters by group name (``training.schedule.GROUP_NAMES``); default: all ``new``."""
        return {"new": list(model.parameters())}

    def train_mode(self, model: torch.nn.Module) -> None:
        """Put the model in training mode before each epoch's steps."""
        model.train()

    @abstractmethod
    def epoch_batches(self, epoch: int, dist: DistInfo) -> list[Any]:
        """This rank's batches of ``epoch`` (e.g. item indices): a pure function of the seed and ``epoch``."""

    def batch_images(self, batch: Any, dist: DistInfo) -> int:
        """Images the whole step (every rank) trained on, for images/s."""
        return len(batch) * dist.world_size

    def iterate(self, batches: list[Any]) -> Iterable[Any]:
        """Loaded batches for the given batch descriptions (default: as they are)."""
        return iter(batches)

    @abstractmethod
    def train_step(self, model: torch.nn.Module, batch: Any, epoch: int, index: int,
                   dist: DistInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward pass and loss of one step: ``(loss to back-propagate, {term: this rank's share})``.

        The shares are detached scalars whose sum over ranks is the step's value of the term;
        ``"loss"`` must be among them. ``model`` is the wrapped model (DDP, compiled)."""

    @abstractmethod
    def validate(self, model: torch.nn.Module, dist: DistInfo) -> dict[str, Any]:
        """The ``val_*`` columns of this epoch (``model`` is the bare module, in whatever mode). Only rank 0's row
        is saved and selects the best epoch: a task whose validation needs no collective may return empty
        values on the other ranks instead of computing the same figures again."""

    @abstractmethod
    def improved(self, row: dict[str, Any], best: dict[str, Any] | None) -> bool:
        """Whether epoch ``row`` is better than the best so far (``best`` None: none yet)."""

    def describe(self, row: dict[str, Any]) -> str:
        """The epoch's figures in the log line."""
        val = row.get("val_loss")
        return f"train {row['train_loss']:.4g}" + (f" val {val:.4g}" if val is not None else "")

    def fingerprint(self) -> str | None:
        """A fingerprint of the training data (stored in checkpoints)."""
        return None

    def describe_start(self) -> str:
        """One log line about the data before the first step."""
        return ""

    @abstractmethod
    def finish(self, model: torch.nn.Module, state: dict[str, Any]) -> Any:
        """Rank 0, after training: ``model`` holds the best weights, ``state`` the engine's train state.
        Evaluate, export, write the task's result files; return the task's result."""


@dataclass
class EngineResult:
    """What a finished run produced; ``result`` is what ``task.finish`` returned (rank 0, else None)."""

    output: Path
    epochs: int
    global_step: int
    best_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _lookup(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


class Engine:
    """Runs one :class:`Task` (module docstring). Construct, then :meth:`run`."""

    def __init__(self, task: Task, stop: GracefulStop | None = None) -> None:
        self.task = task
        self.config = task.config
        self.stop = stop
        self.out = Path(self.config.output)
        self.ckpt_dir = self.out / "checkpoints"

    # -- setup ------------------------------------------------------------------------------------

    def prepare(self, device: torch.device, dist: DistInfo) -> None:
        """Build the task, the optimiser and the wrapped model without training (benchmarks call :meth:`step`)."""
        self._setup(device, dist)
        self._wrap()

    def _setup(self, device: torch.device, dist: DistInfo) -> None:
        cfg, rt, task = self.config, self.config.runtime, self.task
        self.dist, self.device = dist, device
        if cfg.optim.batch_size % dist.world_size:
            raise ConfigError([f"optim.batch_size: the global batch {cfg.optim.batch_size} must be divisible by "
                               f"the number of processes ({dist.world_size})"])
        self.amp = amp_dtype(rt.amp, device)
        seed_everything(rt.seed)
        net = task.setup(device, dist)
        if rt.channels_last:
            net = net.to(memory_format=torch.channels_last)
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
        if dist.distributed and device.type == "cuda" and rt.sync_batchnorm and has_bn:
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.net = net
        self.optimizer, self.held = build_optimizer(task.param_groups(net), cfg.optim)
        self.scaler = make_grad_scaler(device, self.amp)
        self.steps_per_epoch = len(task.epoch_batches(0, dist))
        if self.steps_per_epoch == 0:
            raise ConfigError(["data: the training set is empty"])
        o = cfg.optim
        self.total_steps = o.epochs * self.steps_per_epoch
        self.policy = LRPolicy(o.schedule, self.total_steps, self.steps_per_epoch, o.decay_factor, o.decay_every,
                               o.warmup_steps, o.min_lr / o.lr, o.poly_power)
        self.state: dict[str, Any] = {
            "epoch": 0, "batch_in_epoch": 0, "global_step": 0, "accum": {}, "history": [],
            "best_epoch": None, "complete": False,
        }
        self.model: torch.nn.Module = net
        self._sums: dict[str, torch.Tensor] = {}
        #: the first global step whose loss was NaN/inf (-1: none), kept on the device so steps are not synchronised
        self._first_nonfinite: torch.Tensor | None = None

    def _resume_from(self, ckpt: Checkpoint) -> None:
        saved = ckpt.train_state.get("config", {})
        current = self.config.to_dict()
        frozen = [k for s in self.task.frozen_on_resume for k in _diff_keys(saved.get(s), current.get(s), f"{s}.")]
        if frozen:
            raise ConfigError([f"{ckpt.path}: cannot resume with a different {', '.join(frozen)} (was "
                               f"{', '.join(repr(_lookup(saved, k)) for k in frozen)})"])
        changed = _diff_keys(saved, current)
        if changed and self.dist.is_main:
            log.warning("resuming with changed settings: %s", ", ".join(changed))
        base_lrs = [g["base_lr"] for g in self.optimizer.param_groups]
        self.state = restore_checkpoint(ckpt, self.net, self.optimizer, None, self.scaler)
        for group, base_lr in zip(self.optimizer.param_groups, base_lrs, strict=True):
            group["base_lr"] = base_lr  # the current config's rates (a changed lr was warned about above)
        self.state.setdefault("accum", {})
        self.state["complete"] = self.state["epoch"] >= self.config.optim.epochs  # epochs may have changed
        if not self.dist.is_main:  # the saved accumulators are global sums; rank 0 carries them
            self.state["accum"] = {}

    def _wrap(self) -> None:
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        if self.config.runtime.compile:
            self.model = torch.compile(self.model)

    # -- checkpoints and accumulators -------------------------------------------------------------

    def _train_state(self) -> dict[str, Any]:
        state = dict(self.state)
        state["config"] = self.config.to_dict()
        state["config_hash"] = config_hash(state["config"])
        state["world_size"] = self.dist.world_size
        state["data_fingerprint"] = self.task.fingerprint()
        state["task"] = self.task.name
        return state

    def _save(self, name: str) -> Path | None:
        if not self.dist.is_main:
            return None
        return save_checkpoint(checkpoint_path(self.ckpt_dir, name), self.net, self.optimizer, None, self.scaler,
                               self._train_state())

    def _flush(self) -> None:
        acc = self.state["accum"]
        for name, value in self._sums.items():
            acc[name] = acc.get(name, 0.0) + float(value)
        self._sums = {}

    def _global_accum(self) -> dict[str, float]:
        """The epoch's accumulators summed over ranks (``steps``, ``images`` and ``seconds`` are rank 0's)."""
        self._flush()
        acc = self.state["accum"]
        if not self.dist.distributed:
            return dict(acc)
        keys = sorted(k for k in acc if k not in ("steps", "images", "seconds"))
        t = torch.tensor([acc[k] for k in keys], dtype=torch.float64, device=self.device)
        all_reduce_sum(t, self.dist)
        return dict(acc) | dict(zip(keys, t.tolist(), strict=True))

    def _checkpoint_mid_epoch(self) -> Path | None:
        """Write ``last`` inside an epoch (every rank calls it: the accumulators are reduced first)."""
        total = self._global_accum()
        self.state["accum"] = total if self.dist.is_main else {}
        return self._save("last")

    def _stop_everywhere(self) -> bool:
        if not self.dist.distributed:
            return self.stop.requested
        t = torch.tensor([1.0 if self.stop.requested else 0.0], dtype=torch.float64, device=self.device)
        all_reduce_sum(t, self.dist)
        return bool(t.item() > 0)

    # -- one step ---------------------------------------------------------------------------------

    def step(self, batch: Any, epoch: int, index: int) -> torch.Tensor:
        """One optimiser step on a loaded batch; returns this rank's loss (detached)."""
        step = self.state["global_step"]
        self.policy.apply(self.optimizer, step)
        with autocast(self.device, self.amp):
            loss, shares = self.task.train_step(self.model, batch, epoch, index, self.dist)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if step < self.config.optim.head_warmup_steps:
            drop_grads(self.held)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            bad = ~torch.isfinite(shares["loss"].detach().double())
            if self._first_nonfinite is None:
                self._first_nonfinite = torch.full((), -1.0, dtype=torch.float64, device=bad.device)
            first = self._first_nonfinite
            self._first_nonfinite = torch.where(bad & (first < 0), torch.full_like(first, float(step)), first)
            for name, value in shares.items():
                value = value.detach().double()
                self._sums[name] = self._sums[name] + value if name in self._sums else value
        return shares["loss"].detach() * self.dist.world_size

    def _check_finite(self) -> None:
        """NonFiniteLossError when any rank's loss was NaN/inf since the run (re)started; the same on every rank."""
        if self._first_nonfinite is None:
            return
        first = float(self._first_nonfinite.item())
        flag = torch.tensor([1.0 if first >= 0 else 0.0], dtype=torch.float64, device=self.device)
        all_reduce_sum(flag, self.dist)
        if flag.item() > 0:
            at = f" at step {int(first) + 1}" if first >= 0 else " on another rank"
            raise NonFiniteLossError(
                f"{self.out}: the training loss became non-finite (NaN or inf){at}, epoch {self.state['epoch'] + 1}; "
                "training stopped and nothing was exported from then on (checkpoints written before are kept). "
                "Lower optim.lr (or use runtime.amp 'none') and check the data")

    # -- the loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        cfg, st, task, dist = self.config, self.state, self.task, self.dist
        epochs = cfg.optim.epochs
        self.metrics = MetricsLog(self.out, dist.is_main, task.plot_terms, cfg.runtime.tensorboard,
                                  cfg.runtime.plot, columns=self._columns(), title=f"PlaneSSL {task.name}")
        progress = ProgressReporter(self.total_steps, st["global_step"], dist.is_main, cfg.runtime.progress,
                                    cfg.runtime.log_every)
        every = cfg.runtime.checkpoint_every_steps
        try:
            while st["epoch"] < epochs:
                epoch = st["epoch"]
                all_batches = task.epoch_batches(epoch, dist)
                progress.new_epoch()
                t_epoch = t_last = time.perf_counter()
                task.train_mode(self.net)
                stop = False
                start = st["batch_in_epoch"]
                for index, batch in enumerate(task.iterate(all_batches[start:]), start=start):
                    loss = self.step(batch, epoch, index)
                    now = time.perf_counter()
                    images = task.batch_images(all_batches[index], dist)
                    acc = st["accum"]
                    acc["steps"] = acc.get("steps", 0.0) + 1
                    acc["images"] = acc.get("images", 0.0) + images
                    acc["seconds"] = acc.get("seconds", 0.0) + now - t_last
                    t_last = now
                    st["batch_in_epoch"] = index + 1
                    st["global_step"] += 1
                    progress.update(images, epoch, epochs, loss)
                    if st["global_step"] % cfg.runtime.log_every == 0:
                        self._check_finite()
                    if st["global_step"] % cfg.runtime.log_every == 0 and dist.is_main:
                        self.metrics.scalars(st["global_step"], {"train_step/loss": float(loss)})
                    stop = self._stop_everywhere()
                    last_of_epoch = index + 1 == len(all_batches)
                    if (stop or (every and st["global_step"] % every == 0)) and not last_of_epoch:
                        self._check_finite()  # never a checkpoint of diverged weights
                    if stop and not last_of_epoch:
                        path = self._checkpoint_mid_epoch()
                        raise TrainingInterrupted(self.stop.signum or 15, str(path) if path else None,
                                                  st["global_step"])
                    if every and st["global_step"] % every == 0 and not last_of_epoch:
                        self._checkpoint_mid_epoch()
                self._check_finite()
                self._end_epoch(epoch, time.perf_counter() - t_epoch, progress)
                if stop or self._stop_everywhere():
                    raise TrainingInterrupted(self.stop.signum or 15, str(last_checkpoint(self.out)),
                                              st["global_step"])
        finally:
            progress.close()
            self.metrics.close()

    def _columns(self) -> tuple[str, ...]:
        return ("epoch", "step", "lr", *self.task.columns, "images_per_s", "epoch_seconds", "best")

    def _end_epoch(self, epoch: int, seconds: float, progress: ProgressReporter) -> None:
        cfg, st, task = self.config, self.state, self.task
        acc = self._global_accum()
        steps = max(acc.get("steps", 0.0), 1.0)
        lr = self.optimizer.param_groups[0]["lr"]
        row: dict[str, Any] = {"epoch": epoch + 1, "step": st["global_step"], "lr": lr}
        for name, value in acc.items():
            if name not in ("steps", "images", "seconds"):
                row[f"train_{name}"] = value / steps
        if (epoch + 1) % cfg.runtime.val_every == 0 or epoch + 1 == cfg.optim.epochs:
            row |= task.validate(self.net, self.dist)
        row |= {"images_per_s": acc.get("images", 0.0) / acc["seconds"] if acc.get("seconds") else None,
                "epoch_seconds": seconds, "best": False}
        best = next((r for r in st["history"] if r["epoch"] == st["best_epoch"]), None)
        improved = task.improved(row, best)
        st["epoch"] = epoch + 1
        st["batch_in_epoch"] = 0
        st["accum"] = {}
        if improved:
            st["best_epoch"], row["best"] = epoch + 1, True
        st["history"] = [*st["history"], row]
        st["complete"] = st["epoch"] >= cfg.optim.epochs
        if improved:
            self._save("best")  # before `last`: a kill in between only repeats this epoch end
        self._save("last")
        if self.dist.is_main:
            self.metrics.epoch(st["history"])
            rate = f" {row['images_per_s']:.1f} img/s" if row["images_per_s"] else ""
            progress.message(f"epoch {epoch + 1}/{cfg.optim.epochs}: {task.describe(row)} lr {lr:.3g} "
                             f"{format_duration(seconds)}{rate}" + (" [best]" if improved else ""))

    def _finish(self) -> Any:
        best = checkpoint_path(self.ckpt_dir, "best")
        source = load_checkpoint(best if best.is_file() else checkpoint_path(self.ckpt_dir, "last"))
        self.net.load_state_dict(source.model_state())
        return self.task.finish(self.net, source.train_state)

    def run(self, resume: bool = False) -> EngineResult:
        """Train (optionally under torchrun/DDP), then ``task.finish`` on rank 0.

        Raises ConfigError, RunExistsError, CheckpointError, the task's data errors, and
        TrainingInterrupted after a signal (a resumable ``last`` checkpoint has been written).
        """
        rt = self.config.runtime
        device = resolve_device(rt.device)
        set_determinism(rt.deterministic, device, compiled=rt.compile)
        dist = init_distributed(device)
        own_stop = self.stop is None
        self.stop = self.stop or GracefulStop()
        try:
            if own_stop:
                self.stop.__enter__()
            last = last_checkpoint(self.out)
            if resume and not last.is_file():
                raise RunExistsError(f"{self.out}: nothing to resume (no {last.relative_to(self.out)})")
            if not resume and last.is_file():
                raise RunExistsError(f"{self.out} already holds a run ({last.relative_to(self.out)}): pass --resume "
                                     "to continue it, or choose another output directory")
            self._setup(device, dist)
            if resume:
                self._resume_from(load_checkpoint(last))
            self._wrap()
            if dist.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                save_config(self.config, self.out / "config.yaml", f"planessl {self.task.name}")
                log.info("training %s on %s x %d process(es): %s; %d parameters, global batch %d, %d steps",
                         self.task.name, device.type, dist.world_size, self.task.describe_start(),
                         sum(p.numel() for p in self.net.parameters()), self.config.optim.batch_size,
                         self.total_steps)
            barrier(dist)
            self._loop()
            result = self._finish() if dist.is_main else None
            barrier(dist)
            st = self.state
            return EngineResult(self.out, st["epoch"], st["global_step"], st["best_epoch"], list(st["history"]),
                                result)
        finally:
            if own_stop:
                self.stop.__exit__(None, None, None)
            cleanup_distributed()


def finite_or_none(value: Any) -> Any:
    """NaN/inf -> None (strict JSON); recursively through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value
