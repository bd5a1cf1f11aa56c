"""A whole transfer study from one config: cohorts, pretraining, the fine-tuning grid, the report.

``planessl experiment transfer --config FILE --out DIR`` runs a study when the experiment config
(``training.experiment``) has a ``cohorts`` section; the stages, each reused when finished (a stage
writes its stamp ``stage.json`` last, atomically, so a killed study resumes where it stopped)::

    cohorts:                          # written by 'planessl phantom ANATOMY' with options as flags
      target:   {anatomy: heart, subjects: 48, seed: 101, options: {realism: clinical}}
      pretrain: {anatomy: heart, subjects: 120, seed: 202, options: {realism: clinical}}
    pretraining:                      # on the pretrain cohort only, never on the target's images
      config: Resources/Configs/pretrain_demo.yaml
      tasks: {lines: lines, location: location, multitask: both}   # name -> task.name
      overrides: {optim.epochs: 40}
    protocols:                        # name -> fine-tuning config (+ overrides); one grid each
      paper:  {config: Resources/Configs/finetune_seg_paper.yaml}
      strong: {config: Resources/Configs/finetune_seg_strong.yaml, overrides: {}}
    labeled_subjects: [1, 2, 4, 8, all]
    seeds: [0, 1, 2, 3, 4]
    inits: {scratch: scratch, lines: pretrained:lines, lines-enc: {weights: pretrained:lines, transfer: encoder}}

Outputs under ``OUT``: ``cohorts/<name>/`` (DICOM cohorts), ``pretrain_cache/`` (the pretraining
cohort prepared as the pretraining config asks), ``pretrain/<name>/`` (pretraining runs; weights in
``model/``), ``seg_cache/`` (the target cohort's seg cache), ``runs/<protocol>/`` (one transfer
experiment per protocol: ``runs/<protocol>/runs/<init>_n<N>_s<seed>/``), and the report
(``training.study_report``): ``results.csv``, ``results.md``, ``results.png``, and ``settings/``
(every config file the study read, the resolved study, the cohorts' own records, software versions).
:func:`copy_study_record` copies the study's record (all but the cohorts, caches, checkpoints and fine-tuned
networks), from which the study resumes in another folder or on another machine.

An init's weights ``pretrained:<name>`` name the study's pretraining run ``<name>``. The target
cohort reaches every protocol as ``data.dicom`` (its seg cache in ``OUT/seg_cache``; an ACL study:
``data.root``, the knee tree with its ``labels.csv``), so the protocols' own data paths are replaced.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_text
from .config import ConfigError
from .experiment import (
    PRETRAINED_PREFIX,
    ExperimentRunError,
    experiment_config_from_dict,
    plan_runs,
    portable_paths,
    pretraining_names,
    run_folder_name,
    run_transfer_experiment,
)
from .provenance import source_revision

__all__ = ["CohortSpec", "StudyStages", "PRETRAINED_PREFIX", "run_study", "cohort_flags"]

log = logging.getLogger(__name__)

STAMP = "stage.json"
#: a pretraining run's pretext errors on its held-out subjects (written after it finishes)
PRETEXT_REPORT = "pretext_eval.json"
#: cohort names a study uses: the target (labelled, split into pool / validation / test) and the pretraining one
COHORT_NAMES = ("target", "pretrain")


@dataclass(frozen=True)
class CohortSpec:
    """One synthetic cohort: ``planessl phantom ANATOMY --subjects N --seed S`` plus ``options`` as flags."""

    name: str
    anatomy: str
    subjects: int
    seed: int
    options: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"anatomy": self.anatomy, "subjects": self.subjects, "seed": self.seed, "options": dict(self.options)}


def cohort_flags(spec: CohortSpec) -> list[str]:
    """The ``planessl phantom`` arguments of a cohort (options as ``--key value``; ``true`` as a bare flag)."""
    argv = [spec.anatomy, "--subjects", str(spec.subjects), "--seed", str(spec.seed)]
    for key, value in spec.options.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return argv


@dataclass
class StudyStages:
    """What the study needs from outside the library: writing a cohort (the ``planessl phantom`` command) and,
    optionally, what to do after each report (``--save-record``: copy the study's record)."""

    write_cohort: Callable[[CohortSpec, Path], None]
    after_report: Callable[[], None] | None = None


def _read_stamp(folder: Path) -> Any:
    """A folder's stamp, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _stamp_matches(folder: Path, wanted: dict[str, Any]) -> bool:
    saved = _read_stamp(folder)
    return saved is not None and saved == json.loads(json.dumps(wanted, default=str))


def _write_stamp(folder: Path, wanted: dict[str, Any]) -> None:
    atomic_write_text(folder / STAMP, json.dumps(wanted, indent=1, sort_keys=True, default=str) + "\n")


def cohort_specs(cohorts: dict[str, Any]) -> dict[str, CohortSpec]:
    return {name: CohortSpec(name, str(c.get("anatomy", "heart")), int(c["subjects"]), int(c["seed"]),
                             dict(c.get("options") or {}))
            for name, c in cohorts.items()}


def cohort_stamp(spec: CohortSpec) -> dict[str, Any]:
    """What a cohort's stamp holds: its generator's settings."""
    return {"stage": "cohort", **spec.as_dict()}


def _cohort_stage(specs: dict[str, CohortSpec], out: Path, stages: StudyStages) -> dict[str, Path]:
    folders = {}
    for name, spec in specs.items():
        folder = out / "cohorts" / name
        wanted = cohort_stamp(spec)
        if _stamp_matches(folder, wanted):
            log.info("cohort %s: reusing %s", name, folder)
        else:
            if folder.exists():
                shutil.rmtree(folder)
            log.info("cohort %s: writing %d %s subjects (seed %d) to %s", name, spec.subjects, spec.anatomy,
                     spec.seed, folder)
            stages.write_cohort(spec, folder)
            _write_stamp(folder, wanted)
        folders[name] = folder
    return folders


def _pretraining_preparation(pretraining: dict[str, Any]) -> Any:
    """The slice preparation the pretraining config asks for (read as a synthetic run: no cache exists yet)."""
    from ..preprocess.config import PrepareConfig
    from .config import load_config

    base = load_config(str(pretraining["config"]),
                       {**dict(pretraining.get("overrides") or {}), "data.source": "synthetic"})
    d = base.data
    return PrepareConfig(spacing_mm=d.spacing_mm, size_px=d.image_size, anatomy=d.anatomy)


def _pretraining_overrides(pretraining: dict[str, Any], name: str, out: Path, cache_dir: Path) -> dict[str, Any]:
    return {**dict(pretraining.get("overrides") or {}), "data.source": "cache", "data.cache": str(cache_dir),
            "task.name": str(pretraining["tasks"][name]), "output": str(out / "pretrain" / name)}


def pretraining_stamp(pretraining: dict[str, Any], name: str, out: Path, cohort_stamp: Any,
                      cache_name: str, prep: Any = None) -> dict[str, Any]:
    """The settings a pretraining run's stamp holds: the config file's text, the overrides (the study's paths
    relative to ``out``: ``training.experiment.portable_paths``; the cache by its folder, not its key) and its
    data: a cohort this study wrote by that cohort's stamp (``cohort_stamp``: its generator's settings; the
    phantom writes the same bytes from them, so a copied record (:func:`copy_study_record`) still matches once
    the cohort is written again on another machine) with the cache format and preparation; other data by its
    cache's name ``cache_name`` (which changes with the files' sizes and times). ``prep``: the preparation, when
    the caller has it (else read from the pretraining config)."""
    from ..data.cache import CACHE_FORMAT, CACHE_VERSION

    overrides = _pretraining_overrides(pretraining, name, out, out / "pretrain_cache")
    if isinstance(cohort_stamp, dict) and cohort_stamp.get("stage") == "cohort":
        prep = prep if prep is not None else _pretraining_preparation(pretraining)
        data: dict[str, Any] = {"cohort": cohort_stamp,
                                "cache": f"{CACHE_FORMAT}:{CACHE_VERSION}:{prep.digest()}"}
    else:
        data = {"cache": cache_name}
    return {"stage": "pretrain", "config": Path(str(pretraining["config"])).read_text(encoding="utf-8"),
            "overrides": portable_paths(overrides, out), "data": data}


def _pretrain_stage(pretraining: dict[str, Any], cohort: Path, out: Path, names: list[str]) -> dict[str, Path]:
    """Prepare the pretraining cohort and pretrain each named task on it (resumed after a stop); each run's stamp:
    :func:`pretraining_stamp`."""
    from ..data.prepare import prepare_cache
    from .config import load_config
    from .pretrain import train

    if not names:
        return {}
    config_path = str(pretraining["config"])
    prep = _pretraining_preparation(pretraining)
    report = prepare_cache(cohort, out / "pretrain_cache", prep)
    cohort_written = _read_stamp(cohort)
    weights = {}
    for name in names:
        task = str(pretraining["tasks"][name])
        run_dir = out / "pretrain" / name
        overrides = _pretraining_overrides(pretraining, name, out, report.cache_dir)
        wanted = pretraining_stamp(pretraining, name, out, cohort_written, report.cache_dir.name, prep)
        done = run_dir / "done.json"
        if _stamp_matches(run_dir, wanted) and done.is_file() and (run_dir / "model" / "manifest.json").is_file():
            log.info("pretraining %s: reusing %s", name, run_dir)
        else:
            resume = _stamp_matches(run_dir, wanted) and (run_dir / "checkpoints" / "last.safetensors").is_file()
            if not resume and run_dir.exists():
                shutil.rmtree(run_dir)
            if not resume:
                run_dir.mkdir(parents=True)
                _write_stamp(run_dir, wanted)  # the plan first: a stopped run resumes under the same settings
            log.info("pretraining %s (task %s) on %s%s", name, task, cohort, ", resuming" if resume else "")
            result = train(load_config(config_path, overrides), resume=resume)
            atomic_write_text(done, json.dumps({"epochs": result.epochs, "best_epoch": result.best_epoch,
                                                "best_metric": result.best_metric}, default=str) + "\n")
        if not (run_dir / PRETEXT_REPORT).is_file():
            _evaluate_pretext_stage(run_dir)
        weights[name] = run_dir / "model"
    return weights


def _evaluate_pretext_stage(run_dir: Path) -> None:
    """``RUN/pretext_eval.json``: the pretrained network's pretext errors on the run's held-out subjects (the
    pretraining cohort's validation split: subjects it never trained on), as ``planessl evaluate-pretext``."""
    from ..inference.weights import load_exported
    from .config import load_config
    from .data_hooks import build_datasets
    from .pretext_eval import evaluate_pretext

    config = load_config(run_dir / "config.yaml")
    _, val_ds, _, _ = build_datasets(config)
    if val_ds is None:
        return
    model, _ = load_exported(run_dir / "model")
    report = evaluate_pretext(model, val_ds)
    summary = {"subjects": "held-out subjects of the pretraining cohort (its validation split)",
               **report.as_dict()}
    atomic_write_text(run_dir / PRETEXT_REPORT, json.dumps(summary, indent=1, default=str) + "\n")
    log.info("pretraining %s: held-out median line angle %.1f deg, location MAE %.3f", run_dir.name,
             report.overall_median_angle_deg, report.location_mae)


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages a study's numbers depend on, and the CPU threads used."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("planessl", "torch", "monai", "numpy", "scipy", "pydicom", "nibabel"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    import torch

    revision = source_revision()
    if revision:
        out["planessl_commit"] = str(revision["commit"])
        if "modified" in revision:
            out["planessl_modified"] = str(revision["modified"]).lower()
    out["torch_threads"] = str(torch.get_num_threads())
    out["cpu_count"] = str(os.cpu_count())
    return out


def _record_settings(config: Any, out: Path, folders: dict[str, Path]) -> None:
    """``settings/``: the resolved study, every config file it read, the cohorts' records, software versions."""
    settings = out / "settings"
    settings.mkdir(parents=True, exist_ok=True)
    atomic_write_text(settings / "study.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    files = {"finetune_config": config.finetune_config}
    files |= {f"protocol_{name}": str(p["config"]) for name, p in config.protocols.items()}
    if config.pretraining:
        files["pretraining"] = str(config.pretraining["config"])
    for label, path in files.items():
        if path and Path(path).is_file():
            text = Path(path).read_text(encoding="utf-8")
            atomic_write_text(settings / f"{label}.yaml", f"# copy of {path}\n{text}")
    for name, folder in folders.items():
        record = folder / "cohort.json"
        if record.is_file():
            atomic_write_text(settings / f"cohort_{name}.json", record.read_text(encoding="utf-8"))
    atomic_write_text(settings / "software.json", json.dumps(software_versions(), indent=1) + "\n")


def _resolve_inits(inits: dict[str, Any], weights: dict[str, Path]) -> dict[str, Any]:
    def resolve(value: str) -> str:
        return str(weights[value[len(PRETRAINED_PREFIX):]]) if value.startswith(PRETRAINED_PREFIX) else value

    return {name: ({**v, "weights": resolve(str(v.get("weights") or ""))} if isinstance(v, dict) else resolve(str(v)))
            for name, v in inits.items()}


def protocol_entries(config: Any) -> dict[str, Any]:
    """The study's fine-tuning protocols, name -> ``{config, overrides}``; none named: ``default``, the
    experiment's ``finetune_config``. A protocol's grid lives in ``OUT/runs/<name>/``."""
    return config.protocols or {"default": {"config": config.finetune_config}}


def _protocol_configs(config: Any, folders: dict[str, Path], out: Path,
                      weights: dict[str, Path]) -> dict[str, Any]:
    """One transfer-experiment config per protocol (all seeds), the target cohort as its data."""
    protocols = protocol_entries(config)
    subs = {}
    for protocol, entry in protocols.items():
        target = ({"data.root": str(folders["target"])} if config.task == "acl"  # DICOM tree + its labels.csv
                  else {"data.dicom": str(folders["target"]), "data.cache": str(out / "seg_cache")})
        overrides = {**config.finetune_overrides, **dict(entry.get("overrides") or {}), **target}
        raw = {"task": config.task, "finetune_config": str(entry["config"]),
               "labeled_subjects": list(config.labeled_subjects), "seeds": list(config.seeds),
               "inits": _resolve_inits(config.inits, weights), "finetune_overrides": overrides,
               "transfer": config.transfer}
        try:
            subs[protocol] = experiment_config_from_dict(raw, f"protocols.{protocol}")
        except ConfigError as exc:
            raise ConfigError([f"protocol {protocol}: {p}" for p in exc.problems]) from None
    return subs


def _pretext_summaries(out: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for name in names:
        path = out / "pretrain" / name / PRETEXT_REPORT
        if path.is_file():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def _pretraining_time(out: Path, names: list[str]) -> dict[str, dict[str, float]]:
    """name -> ``{epochs, train_s}`` from each pretraining's metrics.csv (``epoch_seconds``: training only)."""
    import csv

    found = {}
    for name in names:
        path = out / "pretrain" / name / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as fh:
            seconds = [float(r["epoch_seconds"]) for r in csv.DictReader(fh) if r.get("epoch_seconds")]
        if seconds:
            found[name] = {"epochs": len(seconds), "train_s": sum(seconds)}
    return found


def _finished_seeds(finished: set[tuple[str, str, str, Any]], config: Any, protocols: list[str]) -> list[Any]:
    """The seeds whose every (protocol, init, labelled count) run is among ``finished`` (``run_key``s)."""
    return [seed for seed in config.seeds
            if all((p, i, str(n), seed) in finished for p in protocols for i in config.inits
                   for n in config.labeled_subjects)]


def study_report_now(config: Any, out: str | Path) -> dict[str, Any]:
    """The report of the runs a study has finished so far, running nothing (``experiment transfer --report-only``):
    every finished run counts, each initialisation's gain paired with scratch on the seeds both have."""
    from .study_report import run_key, write_study_report

    out = Path(out)
    names = pretraining_names(config.inits)
    folders = {name: out / "cohorts" / name for name in cohort_specs(config.cohorts)}
    weights = {name: out / "pretrain" / name / "model" for name in names}
    # the pretrained weights name the runs; the cohorts need not be there (a study's record leaves them out)
    missing = [f"{p}" for p in weights.values() if not p.is_dir()]
    if missing:
        raise ExperimentRunError(f"{out}: nothing to report yet (not written: {', '.join(missing)}); run the study "
                                 "command without --report-only")
    subs = _protocol_configs(config, folders, out, weights)
    protocols = list(subs)
    rows: list[dict[str, Any]] = []
    for protocol, sub in subs.items():
        plan = plan_runs(sub, out / "runs" / protocol, tidy=False, root=out)
        rows += [{**r, "protocol": protocol} for i in sorted(plan.done) for r in plan.done[i]]
    if not rows:
        raise ExperimentRunError(f"{out}: no fine-tuning run of the study has finished yet")
    total = len(protocols) * len(config.inits) * len(config.labeled_subjects) * len(config.seeds)
    finished = {run_key(r) for r in rows}
    done = len(finished)
    per_count = {(p, str(n)): sum((p, i, str(n), s) in finished for i in config.inits for s in config.seeds)
                 for p in protocols for n in config.labeled_subjects}
    progress = {"runs_done": done, "runs_total": total, "seeds_done": _finished_seeds(finished, config, protocols),
                "per_count": per_count, "per_count_total": len(config.inits) * len(config.seeds)}
    return write_study_report(rows, out, config, protocols, pretext=_pretext_summaries(out, names),
                              progress=progress if done < total else None,
                              pretraining_time=_pretraining_time(out, names))


def _grid_steps(config: Any, protocols: list[str]) -> list[tuple[str, list[Any], Any]]:
    """The fine-tuning grid's order as (protocol, labelled counts, seed) steps: ``first_labeled_subjects`` for every
    seed, one protocol after another (in the config's order), then the other counts seed by seed, every protocol."""
    first = {str(n) for n in config.first_labeled_subjects}
    head = [n for n in config.labeled_subjects if str(n) in first]
    rest = [n for n in config.labeled_subjects if str(n) not in first]
    steps = [(p, head, seed) for p in protocols for seed in config.seeds] if head else []
    return steps + ([(p, rest, seed) for seed in config.seeds for p in protocols] if rest else [])


def run_study(config: Any, out: str | Path, stages: StudyStages, jobs: int = 1) -> dict[str, Any]:
    """Every stage of a study (module docstring); returns the report's summary.

    The fine-tuning grid runs in steps (:func:`_grid_steps`): by default seed by seed (every protocol, count and
    init of seed 0, then of seed 1, ...); with ``first_labeled_subjects`` those counts first, for every seed. The
    report is rewritten after each step from every run finished so far (each initialisation paired with scratch
    on the seeds both have, marked partial with how far it got), so a study stopped part-way still reports.
    ``jobs``: fine-tuning runs at once (``training.experiment.run_transfer_experiment``)."""
    from .study_report import write_study_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = cohort_specs(config.cohorts)
    folders = _cohort_stage(specs, out, stages)
    _record_settings(config, out, folders)
    names = pretraining_names(config.inits)
    weights = _pretrain_stage(config.pretraining, folders["pretrain"], out, names) if names else {}
    pretext = _pretext_summaries(out, names)
    subs = _protocol_configs(config, folders, out, weights)
    protocols = list(subs)
    steps = _grid_steps(config, protocols)
    for k, (protocol, counts, seed) in enumerate(steps[:-1], 1):
        log.info("protocol %s, seed %s, labelled %s: fine-tuning grid in %s (step %d of %d)", protocol, seed,
                 ", ".join(map(str, counts)), out / "runs" / protocol, k, len(steps))
        run_transfer_experiment(replace(subs[protocol], seeds=[seed], labeled_subjects=counts),
                                out / "runs" / protocol, jobs, root=out)
        summary = study_report_now(config, out)
        log.info("study report after step %d of %d (%d runs finished): %s", k, len(steps), summary["runs"],
                 out / "results.md")
        if stages.after_report is not None:
            stages.after_report()
    rows = []
    for protocol, sub in subs.items():  # the last step, then each protocol's whole grid (finished runs reused)
        log.info("protocol %s: fine-tuning grid in %s", protocol, out / "runs" / protocol)
        summary = run_transfer_experiment(sub, out / "runs" / protocol, jobs, root=out)
        rows += [{**r, "protocol": protocol} for r in summary["rows"]]
    return write_study_report(rows, out, config, protocols, pretext=pretext,
                              pretraining_time=_pretraining_time(out, names))


#: folders of a study that its record leaves out: the cohorts (written again from their settings), the caches
#: (prepared again from the cohorts); and in every run its checkpoints and TensorBoard events, and in every
#: fine-tuning run its fine-tuned network (model/: half a megabyte each at the demo size, hundreds of runs)
RECORD_LEFT_OUT = ("cohorts", "pretrain_cache", "seg_cache")
RECORD_LEFT_OUT_OF_RUNS = ("checkpoints", "tensorboard")
RECORD_NOTE = "record.json"


def _record_files(out: Path) -> list[Path]:
    """The files of a study's record (:func:`copy_study_record`), relative to ``out``."""
    files = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if (not path.is_file() or rel.parts[0] in RECORD_LEFT_OUT
                or set(RECORD_LEFT_OUT_OF_RUNS) & set(rel.parts[:-1])):
            continue
        if rel.name == RECORD_NOTE and len(rel.parts) == 1:
            continue
        # runs/<protocol>/runs/<run>/...: a fine-tuning run counts once it has finished (its results_rows.json is
        # written last), without its network
        if len(rel.parts) >= 5 and rel.parts[0] == "runs" and rel.parts[2] == "runs":
            if rel.parts[4] == "model" or not (out / Path(*rel.parts[:4]) / "results_rows.json").is_file():
                continue
        files.append(rel)
    return files


def copy_study_record(out: str | Path, dest: str | Path) -> dict[str, Any]:
    """Copy a study's record to ``dest``: everything a report and a resumed study need, without what the study
    can write again or does not need to resume (:data:`RECORD_LEFT_OUT`, :data:`RECORD_LEFT_OUT_OF_RUNS`, the
    fine-tuned networks, unfinished fine-tuning runs): a few kilobytes per run. The record is portable:
    stamps and run fingerprints hold the study's paths relative to its folder, and the cohorts are written again
    identically from their settings (the phantom is deterministic), so a study started with ``--out`` on a copy
    of the record writes its cohorts and caches, then reuses every finished pretraining and fine-tuning run.
    ``dest`` must not exist or must hold an earlier record (it is replaced whole, through a temporary sibling)."""
    out, dest = Path(out), Path(dest)
    if not (out / "settings").is_dir():
        raise ExperimentRunError(f"{out}: not a study folder (no settings/ written yet)")
    if dest.exists() and not (dest / RECORD_NOTE).is_file():
        raise ExperimentRunError(f"{dest}: exists and is not a study record ({RECORD_NOTE} missing); "
                                 "choose a new folder")
    if dest.resolve() == out.resolve() or out.resolve() in dest.resolve().parents:
        raise ExperimentRunError(f"{dest}: a record cannot be written inside its own study folder {out}")
    files = _record_files(out)
    tmp = dest.with_name(f".{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    size = 0
    for rel in files:
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / rel, target)
        size += target.stat().st_size
    finished = sum(1 for rel in files if rel.name == "results_rows.json")
    note = {"what": "the record of a PlaneSSL study (planessl experiment transfer --save-record): its settings, "
                    "pretrained weights, finished fine-tuning runs and report",
            "left_out": [*RECORD_LEFT_OUT, *RECORD_LEFT_OUT_OF_RUNS, "fine-tuned networks (runs/*/runs/*/model)",
                         "unfinished fine-tuning runs"],
            "resume": "copy this folder to a new --out and run the study command with the same --config",
            "report": "planessl experiment transfer --config CONFIG --out THIS_FOLDER --report-only",
            "finished_finetuning_runs": finished, "files": len(files) + 1}
    atomic_write_text(tmp / RECORD_NOTE, json.dumps(note, indent=1) + "\n")
    # the earlier record steps aside before the new one takes its name: a stop in between leaves one of them
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    if old.exists():
        shutil.rmtree(old)
    return {"dest": str(dest), "files": len(files) + 1, "bytes": size, "finished_runs": finished}


#: the caches a study prepares from its cohorts (reused from another study only with every cohort)
STUDY_CACHES = ("pretrain_cache", "seg_cache")


def _link_or_copy(src: str, dst: str) -> None:
    """A file of a cohort: a hard link (the study never writes a cohort's files in place; a rewritten cohort is
    removed first), else a copy where the file system has no links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_whole(src: Path, dst: Path, **copytree: Any) -> None:
    """Copy folder ``src`` to ``dst`` (absent) through a temporary name: whole or not at all, so a copy cut short
    is never taken for a cohort or a run (and is replaced by the next attempt)."""
    tmp = dst.with_name(dst.name + ".copying")
    if tmp.exists():
        shutil.rmtree(tmp)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp, **copytree)
    tmp.rename(dst)


def _copy_run_folder(src: Path, dst: Path) -> None:
    """A pretraining or fine-tuning run without what reuse does not need (checkpoints, TensorBoard events)."""
    _copy_whole(src, dst, ignore=shutil.ignore_patterns(*RECORD_LEFT_OUT_OF_RUNS))


def reuse_study_outputs(config: Any, out: str | Path, source: str | Path) -> dict[str, Any]:
    """Start study ``out`` from what another study folder ``source`` has already done with the same settings
    (``experiment transfer --reuse-from``): a follow-up that adds a protocol or an init to a finished study
    runs only what is new. Taken, where ``out`` lacks it: each cohort whose stamp is the one this config asks
    for (hard links), then, when every cohort was taken, the caches prepared from them; the pretraining runs the
    inits name; every finished fine-tuning run of this config's grid (``runs/<protocol>/runs/<run>``). Nothing
    is trusted: the study then checks all of it as it checks its own folder (stamps, run fingerprints), so a
    pretraining or run done under other settings is done again. Returns what was taken."""
    out, source = Path(out), Path(source)
    if not (source / "settings").is_dir():
        raise ExperimentRunError(f"--reuse-from {source}: not a study folder (no settings/ written yet)")
    if source.resolve() == out.resolve():
        raise ExperimentRunError(f"--reuse-from {source}: the same folder as --out")
    out.mkdir(parents=True, exist_ok=True)
    taken: dict[str, Any] = {"cohorts": [], "caches": [], "pretraining": [], "runs": 0}
    specs = cohort_specs(config.cohorts)
    cohorts_ok = True
    for name, spec in specs.items():
        src, dst = source / "cohorts" / name, out / "cohorts" / name
        if _stamp_matches(dst, cohort_stamp(spec)):
            continue
        if not _stamp_matches(src, cohort_stamp(spec)):
            cohorts_ok = False
            continue
        if dst.exists():
            shutil.rmtree(dst)
        _copy_whole(src, dst, copy_function=_link_or_copy)
        taken["cohorts"].append(name)
    for cache in STUDY_CACHES if cohorts_ok and taken["cohorts"] else ():
        if (source / cache).is_dir() and not (out / cache).exists():
            shutil.copytree(source / cache, out / cache)
            taken["caches"].append(cache)
    for name in pretraining_names(config.inits):
        src, dst = source / "pretrain" / name, out / "pretrain" / name
        if (src / "done.json").is_file() and not dst.exists():
            _copy_run_folder(src, dst)
            taken["pretraining"].append(name)
    grid = [(p, run_folder_name(i, n, seed)) for p in protocol_entries(config) for i in config.inits
            for n in config.labeled_subjects for seed in config.seeds]
    for protocol, run in grid:
        src, dst = source / "runs" / protocol / "runs" / run, out / "runs" / protocol / "runs" / run
        if (src / "results_rows.json").is_file() and not dst.exists():
            _copy_run_folder(src, dst)
            taken["runs"] += 1
    log.info("reused from %s: cohorts %s, caches %s, pretraining %s, %d finished fine-tuning runs (each checked "
             "against this study's settings before use)", source, ", ".join(taken["cohorts"]) or "none",
             ", ".join(taken["caches"]) or "none", ", ".join(taken["pretraining"]) or "none", taken["runs"])
    return taken
