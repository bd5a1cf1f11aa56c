"""Time of ``planessl plan`` on one study with the bundled sample line network (goal < 5 s on the CPU).

Writes one synthetic clinical heart study as DICOM (``planessl phantom heart``: a SAX stack of
one series per slice and the 2CH/3CH/4CH views, 8 cine phases, the phantom's own matrix sizes),
then times, each as a fresh process ``--repeats`` times (after one warm-up run of each that fills
the page cache; every command of a repeat in turn, so that a change of load hits all alike):

- the command as a user runs it (``python -m training_cli.main plan STUDY --weights
  Resources/Sample/heart-plane-lines --json``, and the same with ``--out DIR``, which also writes
  the three reformatted views): Python start, imports, weights, the scan of the study folder, the
  network on every SAX slice (in numpy: the process imports no torch), the fits;
- the same with ``--backend torch`` (the torch network);
- the baseline ``python -c "import torch"``: what any torch program pays before its first line.

and, in this process with the weights loaded once (``inference.plan_views.plan_study``), what a
service or the Slicer module pays per study (median after one warm-up). Prints the median wall
times, each process's ratio to ``import torch`` measured in the same run, and the load average
(``os.getloadavg``, as ``uptime`` shows it): on a shared machine, compare the ratios, not the seconds.

Usage: python bench/bench_plan.py [--repeats N] [--weights W]
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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as ``planessl plan`` sets it, before numpy loads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "Resources" / "Sample" / "heart-plane-lines"


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - t
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", type=Path, default=SAMPLE)
    args = parser.parse_args()
    from PlaneSSLLib.inference.plan_views import load_planning_model, plan_study
    from PlaneSSLLib.phantoms import CohortOptions, write_cohort

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "data"
        options = CohortOptions(anatomy="heart", subjects=1, seed=21, phases=8, realism="clinical")
        write_cohort(cohort, options, workers=1)
        study = cohort / "subject_0000"
        n_files = sum(1 for _ in study.rglob("*.dcm"))
        plan = [sys.executable, "-m", "training_cli.main", "plan", str(study), "--weights", str(args.weights),
                "--json"]
        commands = {
            "planessl plan --json": plan,
            "planessl plan --json --out DIR (+ NIfTI)": [*plan, "--out", str(Path(tmp) / "out")],
            "planessl plan --json --backend torch": [*plan, "--backend", "torch"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for cmd in commands.values():
            _wall(cmd, env)  # warm-up: page cache, bytecode
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                times[name].append(_wall(cmd, env))
        rows = {name: statistics.median(t) for name, t in times.items()}
        model = load_planning_model(args.weights)
        result = plan_study(study, model=model)
        in_process = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            plan_study(study, model=model)
            in_process.append(time.perf_counter() - t)
    torch_s = rows["python -c 'import torch'"]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"one study: {len(result.sax_planes)} SAX slices, {n_files} DICOM files (8 phases); weights "
          f"{args.weights.name}; median of {args.repeats}; {os.cpu_count()} CPUs, load average {load}")
    print(f"{'new process':<45} {'median s':>9} {'vs import torch':>16}")
    for name, seconds in rows.items():
        goal = "   (goal < 5 s)" if name == "planessl plan --json" else ""
        print(f"{name:<45} {seconds:>9.2f} {seconds / torch_s:>15.2f}x{goal}")
    print(f"{'plan_study, weights loaded once (in process)':<45} {statistics.median(in_process):>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
