"""Time of ``planessl plan`` on one study with the bundled sample line network (goal < 5 s on the CPU).

Writes one synthetic clinical heart study as DICOM (``planessl phantom heart``: a SAX stack of
one series per slice and the 2CH/3CH/4CH views, 8 cine phases, the phantom's own matrix sizes),
then times

- the command as a user runs it, a new process each time (``python -m training_cli.main plan STUDY
  --weights Resources/Sample/heart-plane-lines --json``, and the same with ``--out DIR``, which also
  writes the three reformatted views): Python start, imports, weights, the scan of the study folder,
  the network on every SAX slice, the fits;
- in process, with the weights loaded once (``inference.plan_views.plan_study``): what a service or
  the Slicer module pays per study.

Reports the median of ``--repeats`` runs (after one warm-up for the in-process time).

Usage: python bench/bench_plan.py [--repeats N] [--threads N] [--weights W]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources" / "Sample" / "heart-plane-lines"


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=SAMPLE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from PlaneSSLLib.inference.plan_views import load_planning_model, plan_study
    from PlaneSSLLib.phantoms import CohortOptions, write_cohort

    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "data"
        options = CohortOptions(anatomy="heart", subjects=1, seed=21, phases=8, realism="clinical")
        write_cohort(cohort, options, workers=1)
        study = cohort / "subject_0000"
        n_files = sum(1 for _ in study.rglob("*.dcm"))
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
        command = [sys.executable, "-m", "training_cli.main", "plan", str(study), "--weights", str(args.weights),
                   "--json"]

        def run(extra: list[str]) -> None:
            subprocess.run(command + extra, check=True, env=env, stdout=subprocess.DEVNULL, cwd=ROOT)

        cli = _median_time(lambda: run([]), args.repeats)
        cli_out = _median_time(lambda: run(["--out", str(Path(tmp) / "out")]), args.repeats)
        model = load_planning_model(args.weights)
        plan = plan_study(study, model=model)
        in_process = _median_time(lambda: plan_study(study, model=model), args.repeats)
    print(f"one study: {len(plan.sax_planes)} SAX slices, {n_files} DICOM files (8 phases); weights "
          f"{args.weights.name}; {args.threads} threads; median of {args.repeats}")
    print(f"  planessl plan --json (new process)          {cli:6.2f} s   (goal < 5 s)")
    print(f"  planessl plan --json --out DIR (+ NIfTI)    {cli_out:6.2f} s")
    print(f"  plan_study, weights loaded once            {in_process:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
