"""Where the training loop gets its data: :func:`build_datasets` (the one place to wire the cache).

The loop needs ``(train_ds, val_ds, sampler_factory, info)``:

- ``train_ds`` / ``val_ds``: torch Datasets whose items are dicts ``image`` (1, H, W) float32,
  ``lines`` (C, 3) float32 ``(a, b, d)`` with a²+b²=1 in pixel coordinates, ``line_valid`` (C,)
  bool, ``location`` () float32 in [0, 1], ``location_valid`` () bool, ``subject`` int.
  ``val_ds`` may be ``None`` (no validation: ``best`` is then chosen by training loss).
- ``sampler_factory(seed, epoch) -> Sequence[int]``: the GLOBAL order of train-set indices for
  that epoch (e.g. one random slice per subject, shuffled). It must be a pure function of
  ``(seed, epoch)``; the loop pads and splits it across ranks (``distributed.shard_batches``) and
  skips the batches already done when resuming mid-epoch, so a resumed run draws the same slices.
- ``info``: :class:`DataInfo` (channel names, views, spacing, size, normalisation, fingerprint).

A caller can also bypass this module: ``train(config, datasets=(train_ds, val_ds, factory, info))``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..data.splits import split_ids_permuted
from .config import ConfigError, PretrainConfig
from .synthetic import SyntheticPlanesDataset

__all__ = [
    "DataInfo",
    "SamplerFactory",
    "build_datasets",
    "check_data_source",
    "ensure_cache",
    "subject_epoch_sampler",
]

SamplerFactory = Callable[[int, int], Sequence[int]]


@dataclass
class DataInfo:
    """What the data layer tells the trainer (and, through it, the exported manifest)."""

    channel_names: list[str]
    views: dict[str, list[str]] | list[str] | None = None
    spacing_mm: float = 1.26
    image_size_hw: tuple[int, int] = (224, 224)
    normalisation: dict[str, Any] | None = None
    fingerprint: str | None = None
    train_subjects: int = 0
    val_subjects: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def subject_epoch_sampler(subject_of_item: Sequence[int], slices_per_subject: int = 1) -> SamplerFactory:
    """Per epoch, ``slices_per_subject`` random items of every subject (without replacement), shuffled.

    Deterministic in ``(seed, epoch)`` (numpy ``default_rng([seed, epoch])``).
    """
    groups: dict[int, list[int]] = {}
    for index, subject in enumerate(subject_of_item):
        groups.setdefault(int(subject), []).append(index)
    ordered = [groups[s] for s in sorted(groups)]

    def factory(seed: int, epoch: int) -> list[int]:
        rng = np.random.default_rng([seed, epoch, 0x5EED])
        chosen: list[int] = []
        for items in ordered:
            k = min(slices_per_subject, len(items))
            chosen.extend(int(i) for i in rng.choice(items, size=k, replace=False))
        return [chosen[i] for i in rng.permutation(len(chosen))]

    return factory


def ensure_cache(config: PretrainConfig, rank: int = 0, wait_s: float = 3600.0) -> Any:
    """Prepare the cache from ``data.root`` (``data.format``) when the config names a data set.

    The cache goes to ``data.cache``, else ``OUTPUT/cache``; ``config.data.cache`` is set to it (so
    the resolved config saved beside the outputs names both). Rank 0 prepares (an up-to-date cache
    is reused); other ranks wait for it. Returns the ``data.prepare.PrepareReport`` on rank 0, else
    None (also when no ``data.root`` is given). Raises PlaneSSLError subclasses with the data set named.
    """
    import time

    from ..data.prepare import expected_cache_key, prepare_cache
    from ..data.sources import parse_data_spec, resolve_data_spec
    from ..preprocess.config import PrepareConfig

    d = config.data
    if d.source != "cache" or not d.root:
        return None
    spec = resolve_data_spec(parse_data_spec(f"{d.format}:{d.root}"))
    cache_root = Path(d.cache) if d.cache else Path(config.output) / "cache"
    prepare = PrepareConfig(spacing_mm=d.spacing_mm, size_px=d.size_hw[0], anatomy=d.anatomy)
    report = None
    if rank == 0:
        report = prepare_cache(spec, cache_root, prepare, jobs=1)
    else:
        from ..data.cache import reuse_cache

        key = expected_cache_key(spec, prepare, cache_root)
        deadline = time.monotonic() + wait_s
        while reuse_cache(cache_root, key, "slices") is None:
            if time.monotonic() > deadline:
                raise ConfigError([f"data.root: {d.root}: rank {rank} waited {wait_s:.0f} s for rank 0 to prepare "
                                   f"the cache in {cache_root}"])
            time.sleep(2.0)
    d.cache, d.format = str(cache_root), spec.format  # the saved config names the layout read
    return report


def check_data_source(config: PretrainConfig) -> None:
    """Before any work: the cache opens (when the data layer provides ``open_cache``).

    Config validation has already checked that ``data.cache`` exists and is a non-empty
    directory; this asks the data layer for a deeper check. Raises :class:`ConfigError`.
    """
    if config.data.source != "cache":
        return
    try:
        cache_module = importlib.import_module("PlaneSSLLib.data.cache")
    except ImportError:
        return
    open_cache = getattr(cache_module, "open_cache", None)
    if open_cache is None:
        return
    try:
        open_cache(Path(config.data.cache))
    except Exception as exc:  # the data layer's own error types
        raise ConfigError([f"data.cache: {config.data.cache}: cannot open the cache ({exc})"]) from exc


def _synthetic(config: PretrainConfig) -> tuple[Dataset, Dataset | None, SamplerFactory, DataInfo]:
    d = config.data
    ids = [f"synthetic-{i:03d}" for i in range(d.synthetic_subjects)]
    train_ids, val_ids = split_ids_permuted(ids, d.val_fraction, d.val_subjects, config.runtime.seed)
    number = {s: i for i, s in enumerate(ids)}
    train = SyntheticPlanesDataset([number[s] for s in train_ids], d.synthetic_slices, d.size_hw,
                                   d.synthetic_channels, seed=config.runtime.seed)
    val = (SyntheticPlanesDataset([number[s] for s in val_ids], d.synthetic_slices, d.size_hw,
                                  d.synthetic_channels, seed=config.runtime.seed) if val_ids else None)
    info = DataInfo(
        channel_names=[f"line{c}" for c in range(d.synthetic_channels)],
        views={"synthetic": [f"line{c}" for c in range(d.synthetic_channels)]},
        spacing_mm=d.spacing_mm,
        image_size_hw=d.size_hw,
        normalisation={"method": "zscore", "scope": "image"},
        fingerprint=train.fingerprint(),
        train_subjects=len(train_ids),
        val_subjects=len(val_ids),
    )
    return train, val, subject_epoch_sampler(train.subject_of_item, config.optim.slices_per_subject), info


def _from_cache(config: PretrainConfig) -> tuple[Dataset, Dataset | None, SamplerFactory, DataInfo]:
    """The real data: ``PlaneSSLLib.data`` cache -> ``PretextDataset`` + ``SubjectEpochSampler``."""
    from PlaneSSLLib.data.cache import CacheError, open_cache
    from PlaneSSLLib.data.datasets import NoPartnerWarning, PretextDataset
    from PlaneSSLLib.data.pairs import DEFAULT_PARTNERS, PairConfig
    from PlaneSSLLib.data.sampler import SubjectEpochSampler
    from PlaneSSLLib.data.splits import split_subjects as split_cache_subjects

    d = config.data
    try:
        cache = open_cache(Path(d.cache))
    except CacheError as exc:
        raise ConfigError([f"data.cache: {exc}"]) from exc
    problems = []
    if tuple(cache.image_shape) != d.size_hw:
        problems.append(f"data.image_size: {d.image_size}, but the cache {cache.path} holds "
                        f"{cache.image_shape[0]}x{cache.image_shape[1]} images (prepare it with --size, or change it)")
    spacing = float(cache.meta.get("spacing_mm", cache.config.spacing_mm))
    if abs(spacing - d.spacing_mm) > 1e-6:
        problems.append(f"data.spacing_mm: {d.spacing_mm}, but the cache {cache.path} is resampled to {spacing} mm")
    if d.anatomy not in cache.anatomies():
        present = cache.anatomies() or "nothing"
        problems.append(f"data.anatomy: {d.anatomy!r}, but the cache {cache.path} holds {present}")
    try:
        partners = dict(DEFAULT_PARTNERS)
        if d.views:
            partners[d.anatomy] = {view: tuple(p) for view, p in d.views.items()}
        pairs = PairConfig(partners=partners)
    except ValueError as exc:
        problems.append(f"data.views: {exc}")
    if problems:
        raise ConfigError(problems)
    keys = cache.subject_keys
    anatomy_subjects = sorted({int(s) for s in cache.index["subject"][cache.index["anatomy"] ==
                                                                   _anatomy_code(d.anatomy)]})
    if d.val_subjects:
        unknown = sorted(set(d.val_subjects) - {keys[i] for i in anatomy_subjects})
        if unknown:
            raise ConfigError([f"data.val_subjects: not in the cache: {', '.join(unknown)}"])
        val_idx = [i for i in anatomy_subjects if keys[i] in set(d.val_subjects)]
        train_idx = [i for i in anatomy_subjects if keys[i] not in set(d.val_subjects)]
    else:
        sub_keys = [keys[i] for i in anatomy_subjects]
        tr, va = split_cache_subjects(sub_keys, d.val_fraction, seed=config.runtime.seed)
        train_idx, val_idx = [anatomy_subjects[i] for i in tr], [anatomy_subjects[i] for i in va]
    views = list(d.views) or None
    with warnings.catch_warnings():  # the dataset logs its partner summary itself; once is enough
        warnings.simplefilter("ignore", NoPartnerWarning)
        train = PretextDataset(cache, subjects=train_idx, pairs=pairs, anatomy=d.anatomy, views=views)
        val = PretextDataset(cache, subjects=val_idx, pairs=pairs, anatomy=d.anatomy, views=views) if val_idx else None
    if len(train) == 0:
        raise ConfigError([f"data: no training slice of {d.anatomy} views {views or 'any'} in {cache.path}"])
    if config.task.name in ("lines", "both") and not bool(train.line_valid.any()):
        raise ConfigError([
            f"task.name: {config.task.name!r} needs intersection lines, but no training slice in {cache.path} has a "
            f"partner view ({', '.join(getattr(train, 'warnings', [])) or 'no partner views in the studies'}); "
            "add the partner series, or train the location task alone (--set task.name=location)"
        ])
    sampler = SubjectEpochSampler(train, slices_per_subject=config.optim.slices_per_subject)

    def factory(seed: int, epoch: int) -> list[int]:
        sampler.seed = int(seed)
        sampler.set_epoch(epoch)
        return sampler.epoch_indices()

    info = DataInfo(
        channel_names=list(train.channels),
        views={view: list(p) for view, p in pairs.partners.get(d.anatomy, {}).items()},
        spacing_mm=spacing,
        image_size_hw=tuple(cache.image_shape),
        normalisation=cache.meta.get("normalisation"),
        fingerprint=cache.meta.get("data_fingerprint") or f"cache-key:{cache.key}",
        train_subjects=len(train_idx),
        val_subjects=len(val_idx),
        extra={"cache": str(cache.path), "partner_summary": getattr(train, "summary", None)},
    )
    return train, val, factory, info


def _anatomy_code(anatomy: str) -> int:
    from PlaneSSLLib.preprocess.codes import anatomy_code

    return int(anatomy_code(anatomy))


def build_datasets(config: PretrainConfig) -> tuple[Dataset, Dataset | None, SamplerFactory, DataInfo]:
    """``(train_ds, val_ds, sampler_factory, info)`` for ``config.data`` (see the module docstring)."""
    if config.data.source == "synthetic":
        return _synthetic(config)
    return _from_cache(config)
