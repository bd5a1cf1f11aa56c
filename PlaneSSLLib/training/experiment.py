"""Transfer-learning experiments: every (init, labelled subjects, seed) fine-tuning run, summarised.

``planessl experiment transfer --config FILE --out DIR`` (``training_cli/commands/experiment.py``)
reads an :class:`ExperimentConfig` (YAML, validated up front, :class:`ConfigError` naming the key)::

    task: seg                          # seg (cardiac segmentation) or acl (knee ACL tear)
    finetune_config: Resources/Configs/finetune_seg_demo.yaml
    labeled_subjects: [1, 2, 4]
    seeds: [0, 1, 2]
    inits:                             # name -> "scratch", weights, or {weights, transfer}
      scratch: scratch
      both: runs/demo/pretrain/heart/model
      encoder: {weights: runs/demo/pretrain/heart/model, transfer: encoder}
    finetune_overrides: {optim.epochs: 5}   # applied to the fine-tuning config like --set
    transfer: null                     # encoder+decoder | encoder (null: the fine-tuning config's)

and runs the task (``training/tasks.py``: one interface for seg and acl) in-process for every combination, each in
``OUT/runs/<init>_n<N>_s<seed>/``. A combination whose ``results_rows.json`` exists (written last,
atomically) and whose settings fingerprint matches is reused on a rerun; an unfinished or stale run
directory is removed and run again. Outputs::

    OUT/experiment.yaml   resolved experiment config
    OUT/results.csv       task,init,labeled_subjects,seed,metric,value (docs/conventions.md, 'Results CSV');
                          the init column holds the experiment's init name (a key of ``inits``)
    OUT/results.md        headline metric, mean ± std over seeds: rows = labelled subjects, columns = inits
    OUT/results.png       headline metric vs labelled subjects (log2 axis), one line per init, ±std band

A config with a ``cohorts`` section is a whole study (``training/study.py``: cohorts, pretraining, one grid per
fine-tuning protocol, ``training/study_report.py``'s report); ``labeled_subjects`` may then, as here, hold
``all`` (the whole training pool; its rows carry the pool's size).

Headline metrics: seg -> ``"dice mean"`` (finetune_seg's mean Dice over every structure and phase of
the evaluation subjects); acl -> ``"auc"`` (ROC AUC on the test exams; the validation exams, which also
select the epoch, when the fine-tuning config has no ``data.test_fraction``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_path, atomic_write_bytes, atomic_write_text
from ..errors import PlaneSSLError
from .config import ConfigError, build_config, problem_reporter, read_yaml_config
from .finetune import run_overrides
from .provenance import source_revision
from .tasks import FINETUNE_KINDS

__all__ = [
    "ExperimentConfig", "SummaryTable", "RESULT_COLUMNS", "HEADLINE_METRICS",
    "load_experiment_config", "experiment_config_from_dict", "run_transfer_experiment", "summarise",
]

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("task", "init", "labeled_subjects", "seed", "metric", "value")
#: task -> (metric name in results_rows, description)
HEADLINE_METRICS = {name: (kind.headline, kind.description) for name, kind in FINETUNE_KINDS.items()}
#: an init's weights "pretrained:<name>": the study's pretraining run <name> (training/study.py)
PRETRAINED_PREFIX = "pretrained:"
#: a run's plan, written before it starts (its fingerprint): a stopped run with a checkpoint resumes under it
RUN_PLAN = "run_plan.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class ExperimentConfig:
    task: str = "seg"  #: "seg" or "acl"
    finetune_config: str = ""  #: the fine-tuning YAML (finetune_seg_demo.yaml / finetune_acl_demo.yaml style)
    labeled_subjects: list[Any] = field(default_factory=list)  #: counts >= 1, or "all" (the whole pool)
    seeds: list[int] = field(default_factory=list)
    #: name -> "scratch", pretrained weights dir/.zip, or ``{weights: ..., transfer: encoder | encoder+decoder}``
    inits: dict[str, Any] = field(default_factory=dict)
    finetune_overrides: dict[str, Any] = field(default_factory=dict)  #: dotted key -> value (like --set)
    transfer: str | None = None  #: what to transfer (null: the fine-tuning config's init.transfer)
    #: a study (training/study.py): cohort name (target, pretrain) -> {anatomy, subjects, seed, options}
    cohorts: dict[str, Any] = field(default_factory=dict)
    #: a study's pretraining: {config, tasks: {name: lines|location|both}, overrides}
    pretraining: dict[str, Any] = field(default_factory=dict)
    #: a study's fine-tuning protocols: name -> {config, overrides}; empty: finetune_config alone
    protocols: dict[str, Any] = field(default_factory=dict)
    #: a study's report: {bootstrap: resamples, confidence: 0.95, seed: 0}
    report: dict[str, Any] = field(default_factory=dict)
    #: a study: labelled counts whose runs go first (every seed, one protocol after another), before the grid's
    #: other counts seed by seed; empty: the whole grid seed by seed (training/study.py)
    first_labeled_subjects: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out |= _flatten(value, dotted)
        else:
            out[dotted] = value
    return out


def init_spec(value: Any) -> tuple[str, str | None]:
    """``(weights or "scratch", transfer mode or None)`` of one ``inits`` entry (a string or a mapping)."""
    if isinstance(value, dict):
        return str(value.get("weights") or ""), value.get("transfer")
    return str(value or ""), None


def pretraining_names(inits: dict[str, Any]) -> list[str]:
    """The study's pretraining runs the inits use (``pretrained:<name>``), in order of first use."""
    names: list[str] = []
    for value in inits.values():
        weights, _ = init_spec(value)
        if weights.startswith(PRETRAINED_PREFIX) and weights[len(PRETRAINED_PREFIX):] not in names:
            names.append(weights[len(PRETRAINED_PREFIX):])
    return names


def _load_finetune(cfg: ExperimentConfig, init: Any = None, **run: Any) -> Any:
    """The validated fine-tuning config with the experiment's overrides, ``init``'s weights and transfer mode (the
    entry's own, else the experiment's ``transfer``, else the fine-tuning config's) and the run's own settings
    (``labeled_subjects``, ``seed``, ``output``)."""
    overrides = _flatten(cfg.finetune_overrides)
    weights, transfer = init_spec(init) if init is not None else (None, None)
    overrides |= run_overrides(None, init=weights, transfer=transfer or cfg.transfer, **run)
    return FINETUNE_KINDS[cfg.task].load_config(cfg.finetune_config, overrides)


def labeled_count(value: Any) -> int | None:
    """A ``labeled_subjects`` entry as the fine-tuning config takes it: an int, or None for ``all``."""
    return None if value == "all" else int(value)


def _check_study(cfg: ExperimentConfig, bad) -> None:
    """The sections of a whole study (``training/study.py``)."""
    study = bool(cfg.cohorts)
    unknown = [n for n in cfg.first_labeled_subjects if str(n) not in {str(m) for m in cfg.labeled_subjects}]
    if unknown:
        bad("first_labeled_subjects", f"{unknown} not among labeled_subjects {cfg.labeled_subjects}")
    if not study:
        for key in ("pretraining", "protocols", "first_labeled_subjects"):
            if getattr(cfg, key):
                bad(key, "needs a cohorts section (a study: training/study.py)")
        return
    for name in ("target", "pretrain"):
        c = cfg.cohorts.get(name)
        if not isinstance(c, dict):
            bad(f"cohorts.{name}", "required: {anatomy, subjects, seed, options}")
            continue
        extra = set(c) - {"anatomy", "subjects", "seed", "options"}
        if extra:
            bad(f"cohorts.{name}", f"unknown key(s) {sorted(extra)} (anatomy, subjects, seed, options)")
        for key in ("subjects", "seed"):
            if not isinstance(c.get(key), int) or c[key] < 0:
                bad(f"cohorts.{name}.{key}", f"must be an integer >= 0, got {c.get(key)!r}")
        if c.get("options") is not None and not isinstance(c["options"], dict):
            bad(f"cohorts.{name}.options", "must map phantom options to values (passed as --key value)")
    extra = set(cfg.cohorts) - {"target", "pretrain"}
    if extra:
        bad("cohorts", f"unknown cohort(s) {sorted(extra)} (target, pretrain)")
    t, p = cfg.cohorts.get("target"), cfg.cohorts.get("pretrain")
    if isinstance(t, dict) and isinstance(p, dict) and t.get("seed") == p.get("seed"):
        bad("cohorts.pretrain.seed", "must differ from the target cohort's (pretraining never sees the target images)")
    names = pretraining_names(cfg.inits)
    if names:
        pt = cfg.pretraining
        if not pt.get("config") or not Path(str(pt.get("config"))).is_file():
            bad("pretraining.config", f"{pt.get('config')!r}: no such pretraining config file")
        tasks = pt.get("tasks") or {}
        for name in names:
            if tasks.get(name) not in ("lines", "location", "both"):
                bad(f"pretraining.tasks.{name}", f"the inits use {PRETRAINED_PREFIX}{name}: map it to lines, location "
                                                 f"or both, got {tasks.get(name)!r}")
        for init_name, value in cfg.inits.items():  # a location-only network has no decoder to transfer
            weights, transfer = init_spec(value)
            pretrained = weights[len(PRETRAINED_PREFIX):] if weights.startswith(PRETRAINED_PREFIX) else None
            if pretrained and tasks.get(pretrained) == "location" and cfg.task == "seg" \
                    and (transfer or cfg.transfer or "encoder+decoder") != "encoder":
                bad(f"inits.{init_name}", f"{weights} is a location-only pretraining (no decoder): give it "
                                          "{weights: ..., transfer: encoder}")
    for name, entry in cfg.protocols.items():
        if not _NAME.match(name):
            bad(f"protocols.{name}", "name must be letters, digits, '_', '-', '.' or '+' (it names a directory)")
        if not isinstance(entry, dict) or not entry.get("config") or not Path(str(entry["config"])).is_file():
            bad(f"protocols.{name}.config", "must name an existing fine-tuning config file")
        elif set(entry) - {"config", "overrides"}:
            bad(f"protocols.{name}", f"unknown key(s) {sorted(set(entry) - {'config', 'overrides'})} (config, "
                                     "overrides)")


def _check(cfg: ExperimentConfig, origin_of, problems: list[str]) -> None:
    bad = problem_reporter(origin_of, problems)
    if cfg.task not in FINETUNE_KINDS:
        bad("task", f"must be one of {', '.join(FINETUNE_KINDS)}, got {cfg.task!r}")
        return
    modes = FINETUNE_KINDS[cfg.task].transfer_modes
    _check_study(cfg, bad)
    if not cfg.finetune_config and not cfg.protocols:
        bad("finetune_config", "required: the fine-tuning YAML (e.g. Resources/Configs/finetune_seg_demo.yaml)")
    elif cfg.finetune_config and not Path(cfg.finetune_config).is_file():
        bad("finetune_config", f"{cfg.finetune_config}: no such file")
    counts = [n for n in cfg.labeled_subjects if n != "all"]
    if not cfg.labeled_subjects:
        bad("labeled_subjects", "must list at least one number of labelled subjects, e.g. [1, 2, 4]")
    elif (any(not isinstance(n, int) or n < 1 for n in counts)
          or len(set(map(str, cfg.labeled_subjects))) != len(cfg.labeled_subjects)):
        bad("labeled_subjects", f"must be distinct integers >= 1 or 'all', got {cfg.labeled_subjects}")
    if not cfg.seeds:
        bad("seeds", "must list at least one seed, e.g. [0, 1, 2]")
    elif any(s < 0 for s in cfg.seeds) or len(set(cfg.seeds)) != len(cfg.seeds):
        bad("seeds", f"must be distinct integers >= 0, got {cfg.seeds}")
    if not cfg.inits:
        bad("inits", "must map at least one name to 'scratch' or a pretrained weights directory")
    for name, value in cfg.inits.items():
        if not _NAME.match(name):
            bad(f"inits.{name}", "name must be letters, digits, '_', '-', '.' or '+' (it names run directories)")
        if isinstance(value, dict):
            extra = set(value) - {"weights", "transfer"}
            if extra:
                bad(f"inits.{name}", f"unknown key(s) {sorted(extra)} (weights, transfer)")
            if value.get("transfer") not in modes:
                bad(f"inits.{name}.transfer", f"must be one of {', '.join(modes)} for task {cfg.task}, got "
                                              f"{value.get('transfer')!r}")
        elif value is not None and not isinstance(value, str):
            bad(f"inits.{name}", f"must be 'scratch', a weights path or {{weights, transfer}}, got {value!r}")
            continue
        init, _ = init_spec(value)
        if not init:
            bad(f"inits.{name}", "must be 'scratch' or a pretrained weights directory/.zip")
        elif init.startswith(PRETRAINED_PREFIX):
            if not cfg.cohorts:
                bad(f"inits.{name}", f"{init}: '{PRETRAINED_PREFIX}NAME' names a study's pretraining (needs cohorts)")
        elif init != "scratch" and not Path(init).exists():
            bad(f"inits.{name}", f"{init}: no such weights directory or archive (or 'scratch')")
    if cfg.transfer is not None and cfg.transfer not in modes:
        bad("transfer", f"must be one of {', '.join(modes)} for task {cfg.task} or null, got {cfg.transfer!r}")
    if problems or cfg.cohorts:  # a study checks each protocol's config when it runs it (its data is written first)
        return
    # the fine-tuning config itself, with the overrides (its own messages name its keys)
    try:
        _load_finetune(cfg)
    except ConfigError as exc:
        for p in exc.problems:
            problems.append(f"{origin_of('finetune_overrides')}: finetune_config/finetune_overrides: {p}")


def experiment_config_from_dict(raw: Any, source: str = "<dict>",
                                overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Build and validate an experiment config; :class:`ConfigError` lists every problem."""
    return build_config(ExperimentConfig, raw, source, overrides, _check)


def load_experiment_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read, override (dotted key -> value) and validate an experiment YAML."""
    return experiment_config_from_dict(read_yaml_config(path), str(path), overrides)


# ----------------------------------------------------------------------------- summary
@dataclass
class SummaryTable:
    """Headline metric per (labelled subjects, init): mean, std (ddof 1; 0 for one seed), n seeds."""

    metric: str
    inits: list[str]
    labeled_subjects: list[int]
    cells: dict[tuple[int, str], tuple[float, float, int]]

    def to_markdown(self) -> str:
        head = f"| labelled subjects | {' | '.join(self.inits)} |"
        sep = "|---:|" + "---:|" * len(self.inits)
        lines = [f"Headline metric: `{self.metric}` (mean ± std over seeds)", "", head, sep]
        for n in self.labeled_subjects:
            cells = []
            for init in self.inits:
                cell = self.cells.get((n, init))
                if cell is None or cell[2] == 0:
                    cells.append("–")
                else:
                    cells.append(f"{cell[0]:.4f} ± {cell[1]:.4f} (n={cell[2]})")
            lines.append(f"| {n} | {' | '.join(cells)} |")
        return "\n".join(lines) + "\n"


def _headline(rows: list[dict[str, Any]]) -> str:
    tasks = {r["task"] for r in rows}
    if len(tasks) != 1 or next(iter(tasks)) not in HEADLINE_METRICS:
        raise ValueError(f"rows must be of one task among {sorted(HEADLINE_METRICS)}, got {sorted(tasks)}")
    return HEADLINE_METRICS[next(iter(tasks))][0]


def summarise(rows: list[dict[str, Any]], metric: str | None = None) -> SummaryTable:
    """Mean ± std over seeds of ``metric`` (default: the task's headline metric) per (labelled subjects, init).

    Non-finite values (undefined metrics) are left out of the mean; ``n`` counts the finite ones.
    Inits keep their first-seen order; labelled subjects are sorted.
    """
    rows = list(rows)
    metric = metric or _headline(rows)
    inits: list[str] = []
    values: dict[tuple[int, str], list[float]] = {}
    for r in rows:
        if r["init"] not in inits:
            inits.append(r["init"])
        key = (int(r["labeled_subjects"]), r["init"])
        values.setdefault(key, [])
        if r["metric"] == metric:
            v = float(r["value"])
            if math.isfinite(v):
                values[key].append(v)
    cells = {}
    for key, vals in values.items():
        n = len(vals)
        mean = sum(vals) / n if n else math.nan
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else (0.0 if n else math.nan)
        cells[key] = (mean, std, n)
    return SummaryTable(metric, inits, sorted({k[0] for k in values}), cells)


def plot_summary(table: SummaryTable, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for init in table.inits:
            pts = [(n, *table.cells[(n, init)][:2]) for n in table.labeled_subjects
                   if (n, init) in table.cells and table.cells[(n, init)][2] > 0]
            if not pts:
                continue
            xs, means, stds = zip(*pts, strict=True)
            line = ax.plot(xs, means, marker="o", label=init)[0]
            ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                            [m + s for m, s in zip(means, stds, strict=True)], color=line.get_color(), alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(table.labeled_subjects)
        ax.set_xticklabels([str(n) for n in table.labeled_subjects])
        ax.set_xlabel("labelled subjects")
        ax.set_ylabel(table.metric)
        ax.set_title(title or f"{table.metric} vs labelled subjects (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------- running
#: how a path under a study's folder is written in its stamps and run fingerprints (see :func:`portable_paths`)
STUDY_ROOT_TOKEN = "<study>"


def portable_paths(value: Any, root: str | Path | None) -> Any:
    """``value`` (nested dicts, lists, strings) with every string that names ``root`` or a path under it written
    as ``<study>/relative/path``: a study's stamps and run fingerprints then stay the same when its folder is
    moved or copied to another machine (its record: ``training.study.copy_study_record``). ``root`` None:
    ``value`` unchanged."""
    if root is None:
        return value
    base = str(root).rstrip("/\\") or str(root)
    if isinstance(value, dict):
        return {k: portable_paths(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_paths(v, base) for v in value]
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and (value == base or value.startswith((base + "/", base + "\\"))):
        return STUDY_ROOT_TOKEN + value[len(base):].replace("\\", "/")
    return value


#: fine-tuning settings added after runs were recorded, each with the value that does what the code did
#: before it existed ("section.field": value). A run's fingerprint leaves such a setting out while it holds that
#: value, so adding an option does not make every recorded run stale (a study's record stays reusable); set to
#: any other value, it enters the fingerprint and the run is redone. Add an entry with every new field.
NEUTRAL_ADDITIONS: dict[str, Any] = {
    "model.spatial_pooling": "mean",  # ACL classifier, 2026-12-01: the mean over the bottleneck, as before
}


def _without_neutral_additions(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (a fine-tuning config's ``to_dict``, changed in place) less each :data:`NEUTRAL_ADDITIONS` key
    at its value."""
    for dotted, neutral in NEUTRAL_ADDITIONS.items():
        *sections, field = dotted.split(".")
        node: Any = settings
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and field in node and node[field] == neutral:
            del node[field]
    return settings


def _fingerprint(task: str, finetune: Any, init: Any, n: int | str, seed: int,
                 root: str | Path | None = None) -> str:
    """The settings of one run; paths under ``root`` (a study's folder) enter relative to it; settings added
    later leave it unchanged while they hold their neutral value (:data:`NEUTRAL_ADDITIONS`)."""
    settings = _without_neutral_additions(finetune.to_dict())  # to_dict: a fresh copy (dataclasses.asdict)
    settings.pop("output", None)
    data = portable_paths({"task": task, "finetune": settings, "init": init, "labeled_subjects": n, "seed": seed},
                          root)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _run_one(cfg: ExperimentConfig, name: str, init: Any, n: int | str, seed: int,
             run_dir: Path, resume: bool = False) -> list[dict[str, Any]]:
    count = labeled_count(n)
    config = _load_finetune(cfg, init, labeled_subjects=count, seed=seed, output=run_dir)
    if count is None:  # 'all', whatever finetune_overrides say
        config.data.labeled_subjects = None
    rows = FINETUNE_KINDS[cfg.task].run(config, resume=resume).results_rows()
    # 'all': the rows keep the pool's size that the run reports
    return [{**r, "init": name, "labeled_subjects": count if count is not None else r["labeled_subjects"],
             "seed": seed, "labeled_setting": n} for r in rows]


def _with_validation_row(rows: list[dict[str, Any]], run_dir: Path, task: str) -> list[dict[str, Any]]:
    """A recorded run's rows with its validation score (the task's ``validation`` metric). Every run gives it
    today; a segmentation run recorded before its rows carried ``val_dice mean`` (2026-12-01: the clinical
    heart study's first 120 runs) gets it from its ``result.json`` (``best_val_dice``: the same number), so a
    study's validation-chosen comparison covers every run."""
    metric = FINETUNE_KINDS[task].validation
    if not rows or any(r.get("metric") == metric for r in rows) or task != "seg":
        return rows
    result = _read_json(run_dir / "result.json")
    value = result.get("best_val_dice") if isinstance(result, dict) else None
    value = float("nan") if value is None else float(value)
    return [*rows, {**{k: rows[0][k] for k in ("task", "init", "labeled_subjects", "seed") if k in rows[0]},
                    "metric": metric, "value": value}]


def _csv_value(value: Any) -> Any:
    return "nan" if value is None else value


def _run_and_record(config: ExperimentConfig, name: str, init: Any, n: int | str, seed: int, run_dir: Path,
                    fp: str, resume: bool = False) -> list[dict[str, Any]]:
    """One fine-tuning run, then its ``results_rows.json`` (written last, atomically: a run without it is
    unfinished). ``RUN/run_plan.json`` (the run's fingerprint, written first) lets a stopped run resume from its
    ``last`` checkpoint (``resume``) instead of starting again."""
    started = time.perf_counter()
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / RUN_PLAN, json.dumps({"fingerprint": fp}) + "\n")
    rows = _run_one(config, name, init, n, seed, run_dir, resume)
    payload = {"fingerprint": fp, "init": init, "rows": rows,
               # this machine's time for the run (a resumed run: the time since it resumed)
               "wall_s": round(time.perf_counter() - started, 1), **({"resumed": True} if resume else {}),
               # the code that finished it (a git checkout's revision; not part of the fingerprint)
               **({"code": code} if (code := source_revision()) else {})}
    atomic_write_text(run_dir / "results_rows.json", json.dumps(payload, indent=1, default=_csv_value) + "\n")
    return [{**r, "wall_s": payload["wall_s"]} for r in rows]


def _worker_start(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_run(*args: Any) -> tuple[str, Any]:
    """:func:`_run_and_record` in a worker process; an error comes back as its message (exception classes with
    their own constructors do not always survive pickling)."""
    try:
        return "ok", _run_and_record(*args)
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which stops the grid
        return "error", f"{type(exc).__name__}: {exc}"


def threads_per_job(jobs: int) -> int:
    """CPU threads each of ``jobs`` parallel runs gets: the machine's cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


class ExperimentRunError(PlaneSSLError):
    """A fine-tuning run of the grid failed in a worker process (the message names the run folder)."""


def _run_parallel(pending: list[tuple[int, tuple[Any, ...]]], jobs: int, announce: Any,
                  done: dict[int, list[dict[str, Any]]], total: int) -> None:
    """``pending`` runs in ``jobs`` worker processes (spawned: no state shared with this one); the first error
    stops the grid (runs not yet started are cancelled; finished ones keep their results)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_start,
                             initargs=(threads_per_job(jobs),)) as pool:
        futures = {}
        for i, args in pending:
            announce(i, args)
            futures[pool.submit(_worker_run, *args)] = (i, args[5])
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in finished:
                i, run_dir = futures[future]
                status, value = future.result()
                if status == "error":
                    for f in remaining:
                        f.cancel()
                    raise ExperimentRunError(f"{run_dir}: {value}")
                done[i] = value
                log.info("[%d/%d] %s: finished", i, total, run_dir.name)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class RunPlan:
    """The grid of an experiment folder: finished runs' rows and the runs still to do (with ``resume`` set for
    a stopped run that left a checkpoint under the same settings)."""

    total: int
    done: dict[int, list[dict[str, Any]]]
    pending: list[tuple[int, tuple[Any, ...]]]
    reused: int


def run_folder_name(init: str, n: int | str, seed: int) -> str:
    """The folder of one run of an experiment's grid under ``OUT/runs/`` (``n``: a count or "all")."""
    return f"{init}_n{n}_s{seed}"


def plan_runs(config: ExperimentConfig, out: Path, tidy: bool = True, root: str | Path | None = None) -> RunPlan:
    """Which runs of ``config``'s grid under ``out`` are finished (same fingerprint), resumable or to start;
    ``tidy``: remove folders of stale runs (other settings) and of unfinished runs that cannot resume; ``root``:
    the study folder the grid belongs to (its paths enter the fingerprints relative to it)."""
    from .engine import last_checkpoint

    combos = [(name, init, n, seed) for name, init in config.inits.items()
              for n in config.labeled_subjects for seed in config.seeds]
    plan = RunPlan(len(combos), {}, [], 0)
    for i, (name, init, n, seed) in enumerate(combos, 1):
        run_dir = out / "runs" / run_folder_name(name, n, seed)
        fp = _fingerprint(config.task, _load_finetune(config, init), init, n, seed, root)
        saved = _read_json(run_dir / "results_rows.json")
        if isinstance(saved, dict) and saved.get("fingerprint") == fp:
            if tidy:
                log.info("[%d/%d] %s: reusing %s", i, len(combos), run_dir.name, run_dir / "results_rows.json")
            plan.done[i] = [{**r, "init": name, "labeled_setting": n, "wall_s": saved.get("wall_s")}
                            for r in _with_validation_row(saved["rows"], run_dir, config.task)]
            plan.reused += 1
            continue
        started = _read_json(run_dir / RUN_PLAN)
        resume = (saved is None and isinstance(started, dict) and started.get("fingerprint") == fp
                  and last_checkpoint(run_dir).is_file())
        if tidy and run_dir.exists() and not resume:
            log.info("[%d/%d] %s: removing an unfinished or stale run", i, len(combos), run_dir.name)
            shutil.rmtree(run_dir)
        plan.pending.append((i, (config, name, init, n, seed, run_dir, fp, resume)))
    return plan


def run_transfer_experiment(config: ExperimentConfig, out: str | Path, jobs: int = 1,
                            report_only: bool = False, root: str | Path | None = None) -> dict[str, Any]:
    """Run (or reuse) every combination and write the outputs (module docstring); returns a summary dict.

    ``jobs`` > 1 runs that many fine-tuning runs at once in worker processes, each with
    :func:`threads_per_job` CPU threads (when no run has finished in ``out`` yet, the first goes alone, so it
    prepares the shared caches). A run's numbers do not depend on ``jobs`` beyond floating-point summation order.
    A run stopped part-way resumes from its last checkpoint. ``report_only``: run nothing; the outputs hold the
    finished runs. ``root``: the study folder this grid belongs to (:func:`plan_runs`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not report_only:
        header = "# resolved PlaneSSL transfer experiment (planessl experiment transfer)\n"
        atomic_write_text(out / "experiment.yaml", header + yaml.safe_dump(config.to_dict(), sort_keys=False))
    plan = plan_runs(config, out, tidy=not report_only, root=root)
    done, pending, total = plan.done, ([] if report_only else plan.pending), plan.total

    def announce(i: int, args: tuple[Any, ...]) -> None:
        _, name, init, n, seed, run_dir, _, resume = args
        weights, transfer = init_spec(init)
        log.info("[%d/%d] %s: %s %s (init %s%s, %s labelled, seed %d)", i, total, run_dir.name,
                 "resuming" if resume else "fine-tuning", config.task, weights,
                 f", transfer {transfer}" if transfer else "", n, seed)

    # with jobs > 1 the first run goes alone when none has finished here yet (it writes the shared caches)
    alone = pending if jobs <= 1 else pending[:1] if not done else []
    for i, args in alone:
        announce(i, args)
        done[i] = _run_and_record(*args)
    if len(pending) > len(alone):
        _run_parallel(pending[len(alone):], jobs, announce, done, total)
    all_rows = [r for i in sorted(done) for r in done[i]]
    ran = len(pending)
    if not all_rows:
        raise ExperimentRunError(f"{out}: no finished fine-tuning run to report")

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in all_rows:
        writer.writerow({k: _csv_value(r.get(k)) for k in RESULT_COLUMNS})
    atomic_write_bytes(out / "results.csv", buffer.getvalue().encode("utf-8"))

    metric, description = HEADLINE_METRICS[config.task]
    table = summarise(all_rows, metric)
    # keep the config's order of inits and labelled subjects
    table.inits = list(config.inits)
    table.labeled_subjects = sorted({int(r["labeled_subjects"]) for r in all_rows})
    markdown = table.to_markdown()
    atomic_write_text(out / "results.md", f"{markdown}\n`{metric}`: {description}.\n")
    plot_summary(table, out / "results.png", f"{config.task}: {metric} vs labelled subjects")
    return {"output": str(out), "task": config.task, "metric": metric, "metric_description": description,
            "runs": total, "ran": ran, "reused": plan.reused, "finished": len(done),
            "results_csv": str(out / "results.csv"),
            "results_md": str(out / "results.md"), "results_png": str(out / "results.png"),
            "table": table, "markdown": markdown, "rows": all_rows}
