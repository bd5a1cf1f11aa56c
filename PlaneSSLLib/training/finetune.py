"""What every fine-tuning task shares: the ``init`` section, the result, the summary and the task registry.

A fine-tuning task (``finetune_seg``: cardiac segmentation; ``finetune_acl``: knee ACL tear) is an
engine :class:`~PlaneSSLLib.training.engine.Task` plus a :class:`FinetuneKind` entry in
``training/tasks.py``'s ``FINETUNE_KINDS``: how to read its config and how to run it. The command line
(``planessl finetune seg|acl``) and ``planessl experiment transfer`` use only this interface, so
both tasks take the same flags, resume the same way and print the same JSON summary.

Every fine-tuning config has the sections ``data`` (with ``labeled_subjects``), ``model``,
``init`` (:class:`InitConfig`), ``optim`` (:class:`~.config.TrainOptim`), ``runtime``
(:class:`~.config.TrainRuntime`) and ``output``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..data.augment import AugmentConfig
from .config import NORMS, check_choice, check_minimums, parse_overrides
from .engine import finite_or_none

__all__ = ["InitConfig", "FinetuneSummary", "FinetuneKind", "check_finetune", "run_overrides", "write_result_json"]


@dataclass
class InitConfig:
    """Where the weights start: ``scratch`` or pretrained weights, and what of them is transferred."""

    init: str = "scratch"  #: "scratch" or a pretrained weights directory / .zip
    transfer: str = "encoder+decoder"  #: seg: "encoder+decoder" (the paper) or "encoder"; acl: "encoder"


class FinetuneSummary:
    """The part of a fine-tuning result that every task has (mixed into each task's result dataclass).

    Attributes every result defines: ``task``, ``output``, ``weights``, ``init``, ``transfer``,
    ``labeled_subjects``, ``seed``, ``best_epoch``, ``evaluated_on``, ``headline_metric`` and
    ``headline`` (that metric's value on the evaluated split).
    """

    def summary(self) -> dict[str, Any]:
        """The JSON object ``planessl finetune`` prints on stdout (the same keys for every task)."""
        return finite_or_none({
            "task": self.task, "output": str(self.output), "weights": str(self.weights), "init": self.init,
            "transfer": self.transfer, "labeled_subjects": self.labeled_subjects, "seed": self.seed,
            "best_epoch": self.best_epoch, "evaluated_on": self.evaluated_on, "metric": self.headline_metric,
            "value": self.headline,
        })

    def results_rows(self) -> list[dict[str, Any]]:  # pragma: no cover - every result overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class FinetuneKind:
    """One fine-tuning task as the command line and the transfer experiment see it."""

    name: str
    headline: str  #: the metric (as named in results rows) that tables and summaries show
    description: str
    #: the validation score of the epoch the run kept (a results-row metric): a study chooses its best
    #: initialisation on it, not on the test numbers it reports
    validation: str
    #: ``(path, {dotted key: value}) -> validated config``
    load_config: Callable[[str | Path, dict[str, Any]], Any]
    #: ``(config, resume) -> result`` (a :class:`FinetuneSummary`)
    run: Callable[..., FinetuneSummary]
    transfer_modes: tuple[str, ...]


def check_finetune(cfg: Any, bad: Callable[[str, str], None], transfer_modes: tuple[str, ...]) -> None:
    """The checks every fine-tuning config shares: ``init``, ``data.labeled_subjects``,
    ``data.augment_options`` and the encoder's ``model`` settings."""
    d, m = cfg.data, cfg.model
    check_choice(bad, "init.transfer", cfg.init.transfer, transfer_modes)
    if cfg.init.init != "scratch" and not Path(cfg.init.init).exists():
        bad("init.init", f"{cfg.init.init}: no such weights directory or archive (or 'scratch')")
    if d.labeled_subjects is not None and d.labeled_subjects < 1:
        bad("data.labeled_subjects", f"must be >= 1 or null (all), got {d.labeled_subjects}")
    unknown = sorted(set(d.augment_options) - set(AugmentConfig.__dataclass_fields__))
    if unknown:
        bad("data.augment_options", f"unknown option(s) {', '.join(unknown)}")
    check_choice(bad, "model.norm", m.norm, NORMS)
    check_minimums(bad, "model", m, base_filters=1, levels=2)
    if not cfg.output:
        bad("output", "must name a directory")


def run_overrides(sets: list[str] | None, *, init: str | Path | None = None, transfer: str | None = None,
                  labeled_subjects: int | None = None, seed: int | None = None,
                  output: str | Path | None = None) -> dict[str, Any]:
    """The dotted-key overrides of one fine-tuning run: ``--set`` items, then the run's own settings
    (paths as strings, counts and seeds as plain ints, e.g. from numpy)."""
    overrides = parse_overrides(sets)
    for key, value, kind in (("init.init", init, str), ("init.transfer", transfer, str),
                             ("data.labeled_subjects", labeled_subjects, int), ("runtime.seed", seed, int),
                             ("output", output, str)):
        if value is not None:
            overrides[key] = kind(value)
    return overrides


def write_result_json(path: Path, data: dict[str, Any]) -> Path:
    """Strict JSON (NaN/inf as null), atomically."""
    return atomic_write_text(path, json.dumps(finite_or_none(data), indent=1) + "\n")
