"""Time writing a synthetic heart or knee cohort with default settings, per realism (goals: 20 simple heart
subjects and 20 clinical knee exams each in under 2 minutes on a 2-core machine; the other looks are reported
beside them).

Usage: python bench/bench_phantom.py [--subjects N] [--workers W] [--anatomy heart|knee]
                                     [--realism simple|clinical|both] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from PlaneSSLLib.phantoms import CohortOptions, default_workers, write_cohort


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None, help="default: min(2, CPUs)")
    parser.add_argument("--anatomy", choices=("heart", "knee"), default="heart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--realism", choices=("simple", "clinical", "both"), default="both",
                        help="look(s) to time (default both, simple first)")
    parser.add_argument("--keep", type=Path, default=None, help="write here and keep the cohort (one realism)")
    args = parser.parse_args()
    realisms = ["simple", "clinical"] if args.realism == "both" else [args.realism]
    if args.keep is not None and len(realisms) > 1:
        parser.error("--keep needs one --realism")
    per_subject = {r: bench(args, r) for r in realisms}
    if len(per_subject) == 2:
        print(f"clinical / simple:    {per_subject['clinical'] / per_subject['simple']:.2f}x")
    return 0


def bench(args: argparse.Namespace, realism: str) -> float:
    """Write one cohort, print its figures, return the seconds per subject."""
    workers = args.workers or default_workers()
    tmp = None
    out = args.keep
    if out is None:
        tmp = tempfile.mkdtemp(prefix="planessl-bench-")
        out = Path(tmp) / "cohort"
    try:
        start = time.perf_counter()
        options = CohortOptions(args.anatomy, args.subjects, seed=args.seed, realism=realism)
        meta = write_cohort(out, options, workers=workers, force=args.keep is not None)
        elapsed = time.perf_counter() - start
        files = sum(1 for _ in out.rglob("*.dcm"))
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"anatomy:              {args.anatomy} ({realism})")
    print(f"subjects:             {args.subjects}")
    if args.anatomy == "heart":
        print(f"cine phases:          {meta['options']['phases']}")
    print(f"workers:              {workers} (CPUs: {os.cpu_count()})")
    print(f"DICOM files:          {files}")
    print(f"size:                 {size_mb:.1f} MB")
    print(f"total time:           {elapsed:.1f} s")
    print(f"seconds per subject:  {elapsed / args.subjects:.2f}")
    goal = (args.anatomy, realism) in (("heart", "simple"), ("knee", "clinical"))
    if goal and args.subjects == 20:
        print(f"goal (< 120 s):       {'met' if elapsed < 120 else 'MISSED'}")
    print()
    return elapsed / args.subjects


if __name__ == "__main__":
    raise SystemExit(main())
