"""Whole-process time of ``planessl predict seg`` on one study (goal < 3 s on a laptop-class CPU).

Writes one phantom heart study (default cohort options: one subject, the generator's default
matrix and cine phases) and the sample segmentation weights (``Resources/Sample/heart-segmentation``),
then runs ``python -m training_cli.main predict seg STUDY --weights W --out OUT`` as a fresh
process ``--repeats`` times (after one warm-up run that fills the page cache) and prints the
median wall time, and the time of ``python -c "import torch"`` on the same interpreter (the floor
no torch program goes below). ``--no-dicom-seg`` runs are timed too (highdicom's share).

Usage: python bench/bench_predict_seg.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PlaneSSLLib.phantoms import CohortOptions, write_cohort  # noqa: E402

WEIGHTS = ROOT / "Resources" / "Sample" / "heart-segmentation"


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cohort"
        write_cohort(data, CohortOptions("heart", subjects=1, seed=0), workers=1)
        study = data / "subject_0000"
        base = [sys.executable, "-m", "training_cli.main", "predict", "seg", str(study), "--weights", str(WEIGHTS)]
        rows = {}
        runs = (("predict seg (NIfTI + DICOM SEG)", []), ("predict seg --no-dicom-seg", ["--no-dicom-seg"]))
        for name, extra in runs:
            cmd = [*base, "--out", str(Path(tmp) / "out"), *extra]
            _wall(cmd, env)
            rows[name] = statistics.median(_wall(cmd, env) for _ in range(args.repeats))
        torch_cmd = [sys.executable, "-c", "import torch"]
        _wall(torch_cmd, env)
        rows["python -c 'import torch' (floor)"] = statistics.median(_wall(torch_cmd, env) for _ in range(args.repeats))
    print(f"{'process':<40} {'median s':>9}   ({args.repeats} runs, {os.cpu_count()} CPUs)")
    for name, seconds in rows.items():
        print(f"{name:<40} {seconds:>9.2f}")


if __name__ == "__main__":
    main()
