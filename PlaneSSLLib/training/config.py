"""One configuration object per pretraining run: dataclasses loaded from YAML, validated up front.

``load_config(path, overrides)`` reads a YAML file, applies ``--set section.key=value`` overrides
(values parsed as YAML), checks every key and value, and returns a :class:`PretrainConfig`. All
problems are collected and reported together in one :class:`ConfigError` whose lines name the
file (or ``--set``) and the dotted key, e.g.::

    pretrain.yaml: optim.lrr: unknown key (did you mean 'lr'?)
    --set model.base_filters: expected an integer, got 'eight'

Relative paths (``data.cache``, ``output``) are relative to the working directory. The resolved
configuration is saved as ``config.yaml`` beside the run's outputs (:func:`save_config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..models.configs import LOCATION_POOLINGS
from ..preprocess.config import check_config_size, load_yaml_bounded, read_config_file
from .schedule import SCHEDULES

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TaskConfig",
    "OptimConfig",
    "RuntimeConfig",
    "TrainOptim",
    "TrainRuntime",
    "check_runtime",
    "PretrainConfig",
    "load_config",
    "config_from_dict",
    "parse_overrides",
    "save_config",
    "config_hash",
    "TASKS",
]

TASKS = ("lines", "location", "both")
NORMS = ("batch", "instance", "none")


@dataclass
class DataConfig:
    """Where the slices come from and how targets are drawn."""

    source: str = "cache"  #: "cache" (the data layer's cache) or "synthetic" (tests, benchmarks)
    cache: str | None = None  #: cache directory (required when source is "cache", unless data.root is given)
    #: a data set to prepare the cache from before training (data.sources layouts); the cache goes to
    #: data.cache, else OUTPUT/cache, and is reused while the data and settings are unchanged
    root: str | None = None
    format: str = "auto"  #: layout of data.root: dicom, phantom, kaggle-dsb, ukbb, acdc, mnms2, mrnet or auto
    anatomy: str = "heart"  #: "heart" or "knee"
    #: view -> partner views (one heatmap channel each); empty = the data layer's default for the anatomy
    views: dict[str, list[str]] = field(default_factory=dict)
    sigma_px: float = 6.0  #: heatmap Gaussian width in pixels (reference 6 px at 1.26 mm)
    image_size: int | list[int] = 224  #: network input, square size or [H, W]
    spacing_mm: float = 1.26  #: in-plane spacing after resampling
    val_fraction: float = 0.1  #: fraction of subjects held out for validation
    val_subjects: list[str] = field(default_factory=list)  #: explicit held-out subject ids (overrides the fraction)
    workers: int = 0  #: DataLoader worker processes per rank
    augment: bool = True  #: call PlaneSSLLib.data.augment.augment_batch when the data layer provides it
    augment_options: dict[str, Any] = field(default_factory=dict)  #: passed to augment_batch as-is
    synthetic_subjects: int = 16  #: source "synthetic": number of subjects
    synthetic_slices: int = 4  #: source "synthetic": slices per subject
    synthetic_channels: int = 3  #: source "synthetic": line channels

    @property
    def size_hw(self) -> tuple[int, int]:
        if isinstance(self.image_size, int):
            return (self.image_size, self.image_size)
        return (int(self.image_size[0]), int(self.image_size[1]))


@dataclass
class ModelConfig:
    """Fields of :class:`PlaneSSLLib.models.UNetConfig`; the task decides the heads."""

    in_channels: int = 1
    base_filters: int = 64
    levels: int = 5
    norm: str = "batch"  #: "batch", "instance" or "none"
    location_hidden: int = 512
    line_channels: int | None = None  #: None = one per partner channel the data layer reports
    #: a heatmap head per input view (``UNetConfig.head_views``: the views that have partners), instead of one
    #: head for all: the knee's COR line is vertical in sagittal images and horizontal in axial ones
    view_heads: bool = False
    #: the location head's pooling of the bottleneck: "mean" (global average, the paper's) or "grid" (4 x 4 cells)
    location_pooling: str = "mean"


@dataclass
class TaskConfig:
    """Which pretext task(s) and the loss weights: loss = alpha * L_lines + beta * L_location."""

    name: str = "both"  #: "lines", "location" or "both"
    alpha: float = 1.0
    beta: float = 1.0


@dataclass
class TrainOptim:
    """Optimiser, budget and learning-rate policy, the same keys for every task (``training.schedule``).

    The budget is ``epochs`` × steps per epoch (``steps_per_epoch``, or one pass over the training
    items when null); validation, best/last selection and checkpoints happen at epoch ends.
    ``batch_size`` is the GLOBAL batch (split evenly across DDP ranks).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 500
    batch_size: int = 20
    #: optimiser steps per epoch (a fixed budget whatever the number of labelled items); null: one pass
    steps_per_epoch: int | None = None
    schedule: str = "step"  #: step | cosine | poly | constant
    decay_factor: float = 0.3  #: schedule "step": learning rate multiplied by this ...
    decay_every: int = 100  #: ... every this many epochs
    warmup_steps: int = 0  #: linear warm-up of the learning rate over the first steps
    min_lr: float = 0.0  #: cosine/poly: the rate at the end
    poly_power: float = 0.9
    transferred_lr: float | None = None  #: base rate of the transferred layers (null: lr)
    freeze_transferred: bool = False  #: keep the transferred layers fixed (and their BatchNorm statistics)
    head_warmup_steps: int = 0  #: train only the new layers for this many steps first (linear probe)


@dataclass
class TrainRuntime:
    """Device, precision, reproducibility, logging and checkpointing, the same keys for every task."""

    device: str = "auto"  #: "auto", "cpu" or "cuda"
    amp: str = "none"  #: "none", "bf16" or "fp16" (fp16 uses a GradScaler; CUDA only)
    channels_last: bool = False
    compile: bool = False  #: torch.compile the model
    seed: int = 0
    deterministic: bool = False  #: torch.use_deterministic_algorithms(True), cuDNN deterministic
    log_every: int = 20  #: steps between log lines (and TensorBoard points)
    val_every: int = 1  #: epochs between validations (the last epoch is always validated)
    checkpoint_every_steps: int = 0  #: also write `last` every N steps (0: at the end of each epoch only)
    tensorboard: bool = True
    plot: bool = True  #: write progress.png each epoch
    sync_batchnorm: bool = True  #: convert BatchNorm to SyncBatchNorm under DDP on CUDA
    progress: str = "auto"  #: "auto" (bar on a TTY, else log lines), "bar", "log" or "none"


def check_minimums(bad: Callable[[str, str], None], section: str, values: Any, **minimums: int) -> None:
    """``bad("section.key", "must be >= N, got V")`` for every field of ``values`` below its minimum."""
    for key, low in minimums.items():
        value = getattr(values, key)
        if value < low:
            bad(f"{section}.{key}", f"must be >= {low}, got {value}")


def check_choice(bad: Callable[[str, str], None], key: str, value: Any, choices: Sequence[str]) -> None:
    """``bad(key, "must be one of ..., got V")`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        bad(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")


#: Network and input size bounds, checked before anything is built: the same as ``models.unet``'s
#: (``UNetConfig.validate``; repeated here so that reading a config does not import torch) and the
#: weights manifest's largest input (``inference.manifest.MAX_SIZE_PX``).
MAX_LEVELS = 8
MAX_DEEPEST_FILTERS = 8192
MAX_CHANNELS = 8192
MAX_IMAGE_SIZE_PX = 4096

#: The largest seed accepted (numpy's legacy seeding takes 32 bits; a larger one was a traceback in torch).
MAX_SEED = 2**32 - 1

#: The largest learning rate accepted: Adam's step (rate / bias correction) must stay a float32.
MAX_LR = 1e30


def check_schedule(optim: TrainOptim, bad: Callable[[str, str], None]) -> None:
    """Range checks of the shared ``optim`` settings (the learning-rate policy, training/schedule.py)."""
    check_choice(bad, "optim.schedule", optim.schedule, SCHEDULES)
    if not math.isfinite(optim.lr) or not 0 < optim.lr <= MAX_LR:
        bad("optim.lr", f"must be in (0, {MAX_LR:g}], got {optim.lr}")
    if optim.transferred_lr is not None and (not math.isfinite(optim.transferred_lr)
                                             or not 0 <= optim.transferred_lr <= MAX_LR):
        bad("optim.transferred_lr", f"must be in [0, {MAX_LR:g}] or null (optim.lr), got {optim.transferred_lr}")
    if not math.isfinite(optim.weight_decay) or optim.weight_decay < 0:
        bad("optim.weight_decay", f"must be >= 0, got {optim.weight_decay}")
    if not 0 < optim.decay_factor <= 1:
        bad("optim.decay_factor", f"must be in (0, 1], got {optim.decay_factor}")
    check_minimums(bad, "optim", optim, decay_every=1, epochs=1, batch_size=1, warmup_steps=0, head_warmup_steps=0)
    if optim.steps_per_epoch is not None and optim.steps_per_epoch < 1:
        bad("optim.steps_per_epoch", f"must be >= 1 or null (one pass per epoch), got {optim.steps_per_epoch}")
    if not math.isfinite(optim.min_lr) or not 0 <= optim.min_lr <= optim.lr:
        bad("optim.min_lr", f"must be in [0, optim.lr], got {optim.min_lr}")
    if not math.isfinite(optim.poly_power) or optim.poly_power <= 0:
        bad("optim.poly_power", f"must be > 0, got {optim.poly_power}")


def check_runtime(r: TrainRuntime, bad: Callable[[str, str], None]) -> None:
    """Range checks of the shared ``runtime`` settings; ``bad(key, message)`` records a problem."""
    check_choice(bad, "runtime.device", r.device, ("auto", "cpu", "cuda"))
    check_choice(bad, "runtime.amp", r.amp, ("none", "bf16", "fp16"))
    check_choice(bad, "runtime.progress", r.progress, ("auto", "bar", "log", "none"))
    check_minimums(bad, "runtime", r, log_every=1, val_every=1, checkpoint_every_steps=0, seed=0)
    if isinstance(r.seed, int) and r.seed > MAX_SEED:  # torch and numpy take seeds of 64 and 32 bits
        bad("runtime.seed", f"must be an integer in 0..{MAX_SEED}, got {r.seed}")


@dataclass
class OptimConfig(TrainOptim):
    """Adam with step decay (the paper); one or more slices per subject per epoch."""

    slices_per_subject: int = 1  #: slices drawn per subject per epoch (reference 1)


@dataclass
class RuntimeConfig(TrainRuntime):
    """Pretraining's runtime settings (the shared ones)."""


class RunConfig:
    """Base of every run's config dataclass (pretraining, each fine-tuning task, experiments)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def problem_reporter(origin_of: Callable[[str], str], problems: list[str]) -> Callable[[str, str], None]:
    """``bad(dotted key, message)``: records a problem naming its origin (file or ``--set``) and key."""

    def bad(key: str, message: str) -> None:
        problems.append(f"{origin_of(key)}: {key}: {message}")

    return bad


@dataclass
class PretrainConfig(RunConfig):
    """The whole run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output: str = "runs/pretrain"  #: output directory (checkpoints, logs, exported weights)


# ---------------------------------------------------------------------------------------------
# loading and type checking

_MISSING = object()


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(value: Any, annotation: Any) -> tuple[Any, str | None]:
    """``(converted value, None)`` or ``(None, problem)`` for a value against a type annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        problems = []
        for option in typing.get_args(annotation):
            converted, problem = _coerce(value, option)
            if problem is None:
                return converted, None
            problems.append(problem)
        names = " or ".join(_type_name(o) for o in typing.get_args(annotation))
        return None, f"expected {names}, got {_describe(value)}"
    if annotation is type(None):
        return (None, None) if value is None else (None, f"expected null, got {_describe(value)}")
    if annotation is Any:
        return value, None
    if annotation is bool:
        return (value, None) if isinstance(value, bool) else (None, f"expected true or false, got {_describe(value)}")
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (value, None) if ok else (None, f"expected an integer, got {_describe(value)}")
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return None, f"must be a finite number, got {value}"
        return (float(value), None) if ok else (None, f"expected a number, got {_describe(value)}")
    if annotation is str:
        return (value, None) if isinstance(value, str) else (None, f"expected a string, got {_describe(value)}")
    if origin is list:
        if not isinstance(value, list):
            return None, f"expected a list, got {_describe(value)}"
        (item_type,) = typing.get_args(annotation)
        out = []
        for i, item in enumerate(value):
            converted, problem = _coerce(item, item_type)
            if problem is not None:
                return None, f"item {i}: {problem}"
            out.append(converted)
        return out, None
    if origin is dict:
        if not isinstance(value, dict):
            return None, f"expected a mapping, got {_describe(value)}"
        key_type, value_type = typing.get_args(annotation)
        result = {}
        for k, v in value.items():
            if key_type is str and not isinstance(k, str):
                return None, f"key {_describe(k)}: expected a string key"
            converted, problem = _coerce(v, value_type)
            if problem is not None:
                return None, f"{k}: {problem}"
            result[k] = converted
        return result, None
    raise TypeError(f"unsupported annotation {annotation!r}")  # pragma: no cover - programming error


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(
        annotation, str(annotation)
    )


#: keys of earlier releases -> their names now (a config that still uses one is told so)
RENAMED_KEYS = {"optim.encoder_lr": "optim.transferred_lr", "model.freeze_encoder": "optim.freeze_transferred"}


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known)
    return f"unknown key ({hint})"


def _build_section(cls: type, raw: Any, prefix: str, origin_of: typing.Callable[[str], str],
                   problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{origin_of(prefix)}: {prefix}: expected a mapping, got {_describe(raw)}")
        return cls()
    known = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            hint = f"renamed to {RENAMED_KEYS[dotted]}" if dotted in RENAMED_KEYS else _unknown_key(str(key), known)
            problems.append(f"{origin_of(dotted)}: {dotted}: {hint}")
            continue
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            values[key] = _build_section(annotation, value, dotted, origin_of, problems)
            continue
        converted, problem = _coerce(value, annotation)
        if problem is not None:
            problems.append(f"{origin_of(dotted)}: {dotted}: {problem}")
        else:
            values[key] = converted
    return cls(**values)


def _check_ranges(cfg: PretrainConfig, origin_of: typing.Callable[[str], str], problems: list[str],
                  check_paths: bool) -> None:
    bad = problem_reporter(origin_of, problems)
    d, m, t, o, r = cfg.data, cfg.model, cfg.task, cfg.optim, cfg.runtime
    if d.source not in ("cache", "synthetic"):
        bad("data.source", f"must be 'cache' or 'synthetic', got {d.source!r}")
    if d.anatomy not in ("heart", "knee"):
        bad("data.anatomy", f"must be 'heart' or 'knee', got {d.anatomy!r}")
    for view, partners in d.views.items():
        if not partners:
            bad(f"data.views.{view}", "lists no partner view (each view needs at least one partner)")
        if view in partners:
            bad(f"data.views.{view}", "a view cannot be its own partner")
        if len(set(partners)) != len(partners):
            bad(f"data.views.{view}", "lists a partner twice")
    if d.sigma_px <= 0:
        bad("data.sigma_px", f"must be > 0, got {d.sigma_px}")
    if d.spacing_mm <= 0:
        bad("data.spacing_mm", f"must be > 0, got {d.spacing_mm}")
    if isinstance(d.image_size, list) and len(d.image_size) != 2:
        bad("data.image_size", f"must be one integer or [H, W], got {d.image_size}")
    elif any(s < 8 for s in d.size_hw):
        bad("data.image_size", f"must be at least 8 pixels, got {d.image_size}")
    elif any(s > MAX_IMAGE_SIZE_PX for s in d.size_hw):
        bad("data.image_size", f"must be at most {MAX_IMAGE_SIZE_PX} pixels, got {d.image_size}")
    elif 1 <= m.levels <= MAX_LEVELS and any(s % 2 ** (m.levels - 1) for s in d.size_hw):
        bad("data.image_size", f"{d.image_size} must be divisible by 2**(model.levels-1) = {2 ** (m.levels - 1)}")
    if not 0.0 <= d.val_fraction < 1.0:
        bad("data.val_fraction", f"must be in [0, 1), got {d.val_fraction}")
    if d.workers < 0:
        bad("data.workers", f"must be >= 0, got {d.workers}")
    if d.synthetic_subjects < 1 or d.synthetic_slices < 1 or d.synthetic_channels < 1:
        bad("data.synthetic_subjects", "synthetic subjects, slices and channels must be >= 1")
    check_minimums(bad, "model", m, in_channels=1, base_filters=1, levels=2, location_hidden=1)
    if m.levels > MAX_LEVELS:
        bad("model.levels", f"must be at most {MAX_LEVELS}, got {m.levels}")
    elif m.base_filters >= 1 and m.base_filters * 2 ** (max(m.levels, 2) - 1) > MAX_DEEPEST_FILTERS:
        bad("model.base_filters", f"{m.base_filters} with {m.levels} levels gives "
                                  f"{m.base_filters * 2 ** (m.levels - 1)} filters at the deepest level "
                                  f"(at most {MAX_DEEPEST_FILTERS})")
    for name in ("in_channels", "location_hidden", "line_channels"):
        value = getattr(m, name)
        if value is not None and value > MAX_CHANNELS:
            bad(f"model.{name}", f"must be at most {MAX_CHANNELS}, got {value}")
    check_choice(bad, "model.norm", m.norm, NORMS)
    check_choice(bad, "model.location_pooling", m.location_pooling, LOCATION_POOLINGS)
    if m.line_channels is not None and m.line_channels < 1:
        bad("model.line_channels", f"must be >= 1 or null (from the data), got {m.line_channels}")
    if t.name not in TASKS:
        bad("task.name", f"must be one of {', '.join(TASKS)}, got {t.name!r}")
    if t.alpha < 0 or t.beta < 0:
        bad("task.alpha" if t.alpha < 0 else "task.beta", "loss weights must be >= 0")
    if t.name == "both" and t.alpha == 0 and t.beta == 0:
        bad("task.alpha", "alpha and beta are both 0: nothing to train")
    check_schedule(o, bad)
    if o.steps_per_epoch is not None:
        bad("optim.steps_per_epoch", "pretraining draws optim.slices_per_subject slices per subject each epoch; "
                                     "leave steps_per_epoch null")
    check_minimums(bad, "optim", o, slices_per_subject=1)
    check_runtime(r, bad)
    if not cfg.output:
        bad("output", "must name a directory")
    if d.root is not None:
        from ..data.sources import DATA_FORMATS

        check_choice(bad, "data.format", d.format, DATA_FORMATS)
        if d.source != "cache":
            bad("data.root", "only with data.source 'cache' (the data set is prepared into the cache)")
        elif check_paths and not Path(d.root).is_dir():
            bad("data.root", f"data set folder {str(d.root)!r} does not exist")
        if isinstance(d.image_size, list) and len(set(d.image_size)) > 1:
            bad("data.image_size", "must be square when the cache is prepared from data.root")
    elif d.source == "cache":
        if not d.cache:
            bad("data.cache", "required when data.source is 'cache' (the directory the data layer's cache is in), "
                              "or give data.root (and data.format) to prepare it")
        elif check_paths:
            path = Path(d.cache)
            if not path.exists():
                bad("data.cache", f"cache directory {str(path)!r} does not exist (build it first)")
            elif not path.is_dir():
                bad("data.cache", f"{str(path)!r} is not a directory")
            elif not any(path.iterdir()):
                bad("data.cache", f"cache directory {str(path)!r} is empty")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["model.base_filters=8", "optim.epochs=3"]`` -> ``{"model.base_filters": 8, ...}`` (YAML values)."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError([f"--set {item}: expected KEY=VALUE, e.g. optim.epochs=3"])
        try:
            value = load_yaml_bounded(text, f"--set {key}") if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError([f"--set {key}: value {text!r} is not valid YAML ({exc})"]) from exc
        result[key] = value
    return result


def _apply_override(raw: dict, dotted: str, value: Any) -> str | None:
    parts = dotted.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            return f"--set {dotted}: {'.'.join(parts[: i + 1])} is not a section"
        node = nxt
    node[parts[-1]] = value
    return None


def build_config(cls: type, raw: Any, source: str, overrides: dict[str, Any] | None,
                 check: Callable[[Any, Callable[[str], str], list[str]], None] | None = None) -> Any:
    """Build and validate a config dataclass ``cls`` from a parsed mapping.

    ``overrides`` (dotted key -> value) are applied first; every problem is collected, each naming
    its origin (``source`` or ``--set``) and dotted key; ``check(cfg, origin_of, problems)`` adds
    the range checks of the config kind. Raises :class:`ConfigError` listing them all.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of sections, got {_describe(raw)}"])
    check_config_size(raw, source)  # before the copy expands anything
    for key, value in (overrides or {}).items():
        check_config_size(value, f"--set {key}")
    raw = json.loads(json.dumps(raw, default=str))  # deep copy, plain types
    problems: list[str] = []
    overridden: set[str] = set()
    for key, value in (overrides or {}).items():
        problem = _apply_override(raw, key, value)
        if problem:
            problems.append(problem)
        overridden.add(key)

    def origin_of(dotted: str) -> str:
        for key in overridden:
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                return "--set"
        return source

    cfg = _build_section(cls, raw, "", origin_of, problems)
    if not problems and check is not None:
        check(cfg, origin_of, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def run_config_loaders(cls: type, check: Callable[[Any, Callable[[str, str], None]], None]) -> tuple[
        Callable[..., Any], Callable[..., Any]]:
    """``(from_dict, load)`` for a fine-tuning run's config dataclass ``cls``: ``from_dict(raw, source="<dict>",
    overrides=None)`` and ``load(path, overrides=None)`` (a YAML file; ``overrides`` a mapping of dotted keys or
    ``--set`` items). The shared ``optim`` and ``runtime`` checks run first, then ``check(cfg, bad)``. Both raise
    :class:`ConfigError` naming file (or ``--set``) and key."""

    def check_all(cfg: Any, origin_of: Callable[[str], str], problems: list[str]) -> None:
        bad = problem_reporter(origin_of, problems)
        check_schedule(cfg.optim, bad)
        check_runtime(cfg.runtime, bad)
        check(cfg, bad)

    def from_dict(raw: Any, source: str = "<dict>", overrides: dict[str, Any] | None = None) -> Any:
        return build_config(cls, raw, source, overrides, check_all)

    def load(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> Any:
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides)
        return from_dict(read_yaml_config(path), str(path), overrides)

    return from_dict, load


#: The parsed YAML of a config file; ConfigError naming the file (one reader for every config).
read_yaml_config = read_config_file


def config_from_dict(raw: Any, source: str = "<dict>", overrides: dict[str, Any] | None = None,
                     check_paths: bool = True) -> PretrainConfig:
    """Build and validate a config from a parsed mapping; ``source`` names it in messages."""
    return build_config(PretrainConfig, raw, source, overrides,
                        lambda cfg, origin_of, problems: _check_ranges(cfg, origin_of, problems, check_paths))


def load_config(path: str | Path, overrides: list[str] | dict[str, Any] | None = None,
                check_paths: bool = True) -> PretrainConfig:
    """Read, override and validate a YAML config; raises :class:`ConfigError` naming file and key."""
    raw = read_yaml_config(path)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return config_from_dict(raw, str(path), overrides, check_paths=check_paths)


def save_config(cfg: RunConfig, path: str | Path, command: str = "planessl pretrain") -> Path:
    """Write a run's resolved config as YAML (atomically); ``command`` names the run in its first line."""
    from ..atomic import atomic_write_bytes

    text = f"# resolved PlaneSSL configuration ({command})\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    return atomic_write_bytes(Path(path), text.encode("utf-8"))


def config_hash(cfg: PretrainConfig | dict) -> str:
    """SHA-256 of the canonical JSON of the config (a dict or a config)."""
    data = cfg.to_dict() if isinstance(cfg, PretrainConfig) else cfg
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()
