"""``planessl experiment transfer ...``: fine-tune every (init, labelled subjects, seed) and summarise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..arguments import add_overrides_argument, add_task_group
from ..errors import CLIError

TRANSFER_EPILOG = """\
examples:
  planessl experiment transfer --config Resources/Configs/experiment_transfer_demo.yaml --out runs/demo/exp_seg
  planessl experiment transfer --config exp.yaml --set seeds=[0] finetune_overrides.optim.epochs=2 --out runs/exp

A rerun with the same --out reuses every finished combination (OUT/runs/<init>_n<N>_s<seed>/results_rows.json)
and continues a stopped one from its last checkpoint. --report-only runs nothing and rewrites the report from
the runs finished so far, e.g. while a long study runs:
  planessl experiment transfer --config exp.yaml --out runs/exp --report-only
A config with a 'cohorts' section runs a whole study (cohorts written by 'planessl phantom', pretraining,
one grid per fine-tuning protocol; every finished stage reused), e.g.
  planessl experiment transfer --config Resources/Configs/experiment_transfer_clinical.yaml --out runs/study
A study's record (--save-record DIR: settings, pretrained weights, finished runs' results, report; not the
cohorts and caches, which it writes again identically, nor checkpoints or fine-tuned networks) is small and
portable: copy it to a new --out on another machine and the study resumes there; --report-only on the record
itself rewrites its report:
  planessl experiment transfer --config Resources/Configs/experiment_transfer_clinical.yaml --out runs/study \\
      --report-only --save-record study_record
A follow-up study that adds a protocol or an init starts from a finished one (--reuse-from: its cohorts,
caches, pretraining and finished runs with the same settings; each checked before use):
  planessl experiment transfer --config Resources/Configs/experiment_transfer_clinical_fullrate.yaml \\
      --out runs/fullrate --reuse-from runs/study
outputs: OUT/experiment.yaml, OUT/runs/..., OUT/results.csv (task,init,labeled_subjects,seed,metric,value),
OUT/results.md (headline metric, mean ± std over seeds), OUT/results.png.
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p, kinds = add_task_group(sub, "experiment",
                              help="run a transfer-learning experiment (many fine-tuning runs, summarised)",
                              description="Experiments made of many fine-tuning runs.", dest="experiment_kind")
    t = kinds.add_parser(
        "transfer", help="scratch vs pretrained inits across labelled-subject counts and seeds",
        description="Fine-tune every (init, labelled subjects, seed) combination in-process (seg or acl), "
                    "then write results.csv, a mean ± std table (results.md) and a plot (results.png).",
        epilog=TRANSFER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--config", type=Path, required=True, metavar="FILE", help="experiment YAML configuration")
    add_overrides_argument(t, "seeds=[0,1] finetune_overrides.optim.epochs=2")
    t.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (reused on a rerun)")
    t.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="fine-tuning runs at once, in worker processes sharing the CPU cores (default 1)")
    t.add_argument("--report-only", action="store_true",
                   help="run nothing: rewrite the report from the runs finished so far (a study still running or "
                        "stopped; each gain paired with scratch on the seeds both have)")
    t.add_argument("--save-record", type=Path, metavar="DIR",
                   help="a study only: copy its record (settings, pretrained weights, finished runs, report) to "
                        "DIR, a new folder or an earlier record, which it replaces; after every step of the grid "
                        "and at the end (with --report-only: once)")
    t.add_argument("--reuse-from", type=Path, metavar="DIR",
                   help="a study only: start from another study folder's cohorts, caches, pretraining and finished "
                        "runs that have this config's settings (a follow-up that adds a protocol or an init runs "
                        "only what is new); each is checked against this study's settings before use")
    t.set_defaults(func=run_transfer)
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _write_cohort(spec, folder: Path) -> None:
    """A study's cohort stage: ``planessl phantom`` in-process, the config's options as flags."""
    from PlaneSSLLib.training.study import cohort_flags

    from ..main import main

    argv = ["phantom", *cohort_flags(spec), "--out", str(folder), "--force", "--quiet"]
    code = main(argv)
    if code != 0:
        raise CLIError(f"study cohort '{spec.name}': 'planessl {' '.join(argv)}' failed (exit {code})",
                       exit_code=code)


def run_study(config, out: Path, jobs: int = 1, record: Path | None = None) -> int:
    from PlaneSSLLib.training.study import StudyStages
    from PlaneSSLLib.training.study import run_study as run

    print(f"planessl experiment transfer: study into {out} (cohorts, pretraining, "
          f"{max(1, len(config.protocols))} fine-tuning grid(s))", file=sys.stderr, flush=True)
    # --save-record: the record follows the study step by step, so a sitting cut short keeps what it finished
    after = (lambda: save_record(out, record)) if record is not None else None
    summary = run(config, out, StudyStages(write_cohort=_write_cohort, after_report=after), jobs)
    print(f"wrote {summary['results_csv']}, {summary['results_md']}, {summary['results_png']}", file=sys.stderr)
    print(summary["markdown"], end="")
    return 0


def report_now(config, out: Path) -> int:
    """``--report-only``: the report of the finished runs (a study's or a plain experiment's), nothing run."""
    from PlaneSSLLib.training.experiment import run_transfer_experiment
    from PlaneSSLLib.training.study import study_report_now

    if not out.is_dir():
        raise CLIError(f"{out}: no such directory (nothing to report)")
    if config.cohorts:
        summary = study_report_now(config, out)
    else:
        summary = run_transfer_experiment(config, out, report_only=True)
        print(f"{summary['finished']} of {summary['runs']} runs finished", file=sys.stderr)
    print(f"wrote {summary['results_csv']}, {summary['results_md']}, {summary['results_png']}", file=sys.stderr)
    print(summary["markdown"], end="")
    return 0


def save_record(out: Path, dest: Path) -> None:
    from PlaneSSLLib.training.study import copy_study_record

    saved = copy_study_record(out, dest)
    print(f"wrote the study's record to {saved['dest']} ({saved['files']} files, {saved['bytes'] / 1e6:.1f} MB, "
          f"{saved['finished_runs']} finished fine-tuning runs)", file=sys.stderr)


def run_transfer(args: argparse.Namespace) -> int:
    from PlaneSSLLib.training.config import parse_overrides
    from PlaneSSLLib.training.experiment import load_experiment_config, run_transfer_experiment

    config = load_experiment_config(args.config, parse_overrides(args.overrides))
    record = args.save_record
    if record is not None and not config.cohorts:
        raise CLIError(f"--save-record: {args.config} is not a study (no 'cohorts' section); an experiment's "
                       "folder is its own record")
    if args.reuse_from is not None:
        if not config.cohorts or args.report_only:
            why = "has no 'cohorts' section" if not config.cohorts else "with --report-only runs nothing"
            raise CLIError(f"--reuse-from: only when running a study ({args.config} {why})")
        from PlaneSSLLib.training.study import reuse_study_outputs

        reuse_study_outputs(config, args.out, args.reuse_from)
    from PlaneSSLLib.training.signals import TrainingInterrupted

    def stopped(exc: TrainingInterrupted) -> int:  # a signal in a pretraining or an in-process run: it resumes
        print(f"planessl experiment transfer: {exc}; the same command goes on (planessl experiment transfer "
              f"--config {args.config} --out {args.out}): finished stages and runs are reused, the stopped one "
              "resumes", file=sys.stderr, flush=True)
        return exc.exit_code

    if args.report_only or config.cohorts:
        try:
            code = report_now(config, args.out) if args.report_only else run_study(config, args.out, args.jobs,
                                                                                   record)
        except TrainingInterrupted as exc:
            code = stopped(exc)
        if record is not None:
            save_record(args.out, record)
        return code
    n = len(config.inits) * len(config.labeled_subjects) * len(config.seeds)
    print(f"planessl experiment transfer: {n} runs ({config.task}) into {args.out}", file=sys.stderr, flush=True)
    try:
        summary = run_transfer_experiment(config, args.out, args.jobs)
    except TrainingInterrupted as exc:
        return stopped(exc)
    print(f"headline metric: {summary['metric']} ({summary['metric_description']}); "
          f"{summary['ran']} run, {summary['reused']} reused; wrote {summary['results_csv']}, "
          f"{summary['results_md']}, {summary['results_png']}", file=sys.stderr)
    print(summary["markdown"], end="")
    return 0
