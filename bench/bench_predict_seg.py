"""Whole-process time of ``planessl predict seg`` on one study (goal < 3 s on a laptop-class CPU).

Writes one phantom heart study (default cohort options: one subject, the generator's default
matrix and cine phases) and uses the sample segmentation weights (``Resources/Sample/heart-segmentation``),
then runs ``python -m training_cli.main predict seg STUDY --weights W --out OUT`` as a fresh
process ``--repeats`` times (after one warm-up run that fills the page cache; every command of
a repeat in turn) and prints the median wall time. Baselines timed in the same run, the same
way: ``python -c "import torch"`` (what any torch program pays before its first line;
``predict seg`` on the CPU runs its network in numpy and never imports torch) and
``python -c "import numpy, scipy.ndimage, pydicom"`` (the libraries the path cannot do without).
``--no-dicom-seg`` runs are timed too (the DICOM SEG's share). The machine's load average is
printed with the figures: on a shared machine, compare the ratios, not the seconds.

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
        commands = {
            "predict seg (NIfTI + DICOM SEG)": [*base, "--out", str(Path(tmp) / "out")],
            "predict seg --no-dicom-seg": [*base, "--out", str(Path(tmp) / "out"), "--no-dicom-seg"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "python -c 'import numpy, scipy.ndimage, pydicom'": [sys.executable, "-c",
                                                                 "import numpy, scipy.ndimage, pydicom"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for cmd in commands.values():
            _wall(cmd, env)  # warm-up: page cache, bytecode
        for _ in range(args.repeats):  # interleaved, so that a change of load hits every command alike
            for name, cmd in commands.items():
                times[name].append(_wall(cmd, env))
        rows = {name: statistics.median(t) for name, t in times.items()}
    torch_s = rows["python -c 'import torch'"]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"{'process':<50} {'median s':>9} {'vs import torch':>16}   ({args.repeats} runs, {os.cpu_count()} CPUs, "
          f"load average {load})")
    for name, seconds in rows.items():
        print(f"{name:<50} {seconds:>9.2f} {seconds / torch_s:>15.2f}x")


if __name__ == "__main__":
    main()
