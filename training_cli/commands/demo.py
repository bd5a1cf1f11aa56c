"""``planessl demo``: the main job on its embedded default — synthetic heart and knee cohorts.

Stages, each an ordinary ``planessl`` command so that the demo shows the real pipeline:
write the cohorts as DICOM (``phantom``), read them back and label their views
(``inspect``). The pretraining stages join here as they land. The run's resolved config is
saved beside its outputs (``demo_config.yaml``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..errors import CLIError


@dataclass
class DemoConfig:
    out: str
    heart_subjects: int = 6
    knee_subjects: int = 6
    seed: int = 0
    heart_layout: str = "kaggle"
    workers: int | None = None


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="the main job on synthetic heart and knee cohorts (no data needed)",
        description="Write synthetic heart and knee cohorts as DICOM, inspect them and label their views.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    p.add_argument("--heart-subjects", type=int, default=DemoConfig.heart_subjects)
    p.add_argument("--knee-subjects", type=int, default=DemoConfig.knee_subjects)
    p.add_argument("--seed", type=int, default=DemoConfig.seed)
    p.add_argument("--heart-layout", choices=["kaggle", "ukbb"], default=DemoConfig.heart_layout)
    p.add_argument("--workers", type=int, default=None, help="processes for writing cohorts (default: 2)")
    p.set_defaults(func=run)
    return p


def _planessl(argv: list[str], capture: bool = False) -> str:
    """Run one ``planessl`` sub-command in-process; raise CLIError when it fails."""
    from ..main import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer) if capture else contextlib.nullcontext():
        code = main(argv)
    if code != 0:
        raise CLIError(f"stage 'planessl {' '.join(argv)}' failed (exit {code})", exit_code=code)
    return buffer.getvalue()


def _write_cohort(anatomy: str, subjects: int, cfg: DemoConfig, out: Path) -> None:
    if (out / "cohort.json").is_file():
        previous = json.loads((out / "cohort.json").read_text())
        same = previous.get("subjects") == subjects and previous.get("seed") == cfg.seed
        if anatomy == "heart":
            same = same and previous.get("layout") == cfg.heart_layout
        if same:
            print(f"  {anatomy}: reusing the cohort in {out}")
            return
    argv = ["phantom", anatomy, "--subjects", str(subjects), "--seed", str(cfg.seed), "--out", str(out), "--force"]
    if anatomy == "heart":
        argv += ["--layout", cfg.heart_layout]
    if cfg.workers:
        argv += ["--workers", str(cfg.workers)]
    _planessl(argv)


def run(args: argparse.Namespace) -> int:
    cfg = DemoConfig(
        out=str(args.out), heart_subjects=args.heart_subjects, knee_subjects=args.knee_subjects,
        seed=args.seed, heart_layout=args.heart_layout, workers=args.workers,
    )
    if cfg.heart_subjects < 1 or cfg.knee_subjects < 1:
        raise CLIError("--heart-subjects and --knee-subjects must be at least 1")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    reports = out / "reports"
    reports.mkdir(exist_ok=True)
    summary: dict[str, dict] = {}
    for anatomy, subjects in (("heart", cfg.heart_subjects), ("knee", cfg.knee_subjects)):
        data = out / "data" / anatomy
        t0 = time.perf_counter()
        print(f"[{anatomy}] writing {subjects} synthetic subjects to {data}", flush=True)
        _write_cohort(anatomy, subjects, cfg, data)
        t1 = time.perf_counter()
        print(f"[{anatomy}] inspecting {data}", flush=True)
        text = _planessl(["inspect", str(data), "--json", "--anatomy", anatomy], capture=True)
        report = json.loads(text)
        (reports / f"inspect_{anatomy}.json").write_text(json.dumps(report, indent=2))
        views = Counter(s.get("view") or "unknown" for st in report["studies"] for s in st["series"])
        summary[anatomy] = {
            "studies": len(report["studies"]),
            "series_by_view": dict(sorted(views.items())),
            "errors": report["counts"]["errors"],
            "ignored": report["counts"]["ignored"],
            "write_s": round(t1 - t0, 1),
            "inspect_s": round(time.perf_counter() - t1, 1),
        }
    (reports / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nPlaneSSL demo summary")
    for anatomy, s in summary.items():
        views = ", ".join(f"{k}: {v}" for k, v in s["series_by_view"].items())
        print(
            f"  {anatomy:5s}  {s['studies']} studies  series by view: {views}  unreadable files: {s['errors']}  "
            f"non-image files noted: {s['ignored']}  (write {s['write_s']} s, inspect {s['inspect_s']} s)"
        )
    print(f"outputs: {out}/data (DICOM cohorts), {reports} (inspection reports), {out}/demo_config.yaml")
    sys.stdout.flush()
    return 0
