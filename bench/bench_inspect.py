"""Header-scan rate of ``scan_tree`` beside plain ``pydicom.dcmread`` of the same files.

Usage::

    python bench/bench_inspect.py                 # writes 1200 small MR files to a temporary tree
    python bench/bench_inspect.py --files 3000 --size 128
    python bench/bench_inspect.py --dir /data/study --workers 1 2 4

Prints files/s for: ``dcmread`` (full read, pixels not decoded), ``dcmread(stop_before_pixels=
True)``, ``scan_tree`` with 1 worker and with each ``--workers`` value (headers read, checked,
grouped into studies/series/positions), and their ratios to ``dcmread`` measured in the same
run. Every figure is the best of ``--repeat`` runs over a warm page cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PlaneSSLLib.dicom.scan import list_files, scan_tree  # noqa: E402
from PlaneSSLLib.dicom.write import SeriesInfo, StudyInfo, build_mr_dataset, write_dataset_atomic  # noqa: E402
from PlaneSSLLib.geometry import ImagePlane  # noqa: E402


def bench_uid(*keys: object) -> str:
    """A deterministic UID (2.25.<int> from a hash of ``keys``)."""
    digest = hashlib.sha256("/".join(map(str, keys)).encode()).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def write_tree(root: Path, n_files: int, size: int, per_series: int = 60) -> None:
    """``n_files`` cine MR files (size × size px), ``per_series`` files per series (20 phases)."""
    study = StudyInfo("BENCH", "Bench^Patient", bench_uid("bench-study"), bench_uid("bench-for"))
    rng = np.random.default_rng(0)
    px = rng.integers(0, 4000, size=(size, size), dtype=np.uint16)
    phases = 20
    for i in range(n_files):
        s_no, k = divmod(i, per_series)
        series = SeriesInfo(bench_uid("bench-series", s_no), s_no + 1, f"cine {s_no}", cardiac=True)
        slice_no, phase = divmod(k, phases)
        plane = ImagePlane.centred([0, 0, 8.0 * slice_no], [1, 0, 0], [0, 1, 0], (1.3, 1.3), (size, size))
        ds = build_mr_dataset(px, plane, study, series, k + 1, bench_uid("bench-sop", i), 8.0,
                              trigger_time_ms=30.0 * phase, cardiac_phases=phases)
        write_dataset_atomic(ds, root / f"series{s_no:03d}" / f"IM{k:04d}.dcm")


def best_rate(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Files per second of the fastest of ``repeat`` runs of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="scan this tree instead of writing one")
    ap.add_argument("--files", type=int, default=1200, help="files to write (default 1200)")
    ap.add_argument("--size", type=int, default=96, help="rows = columns of the written images (default 96)")
    ap.add_argument("--workers", type=int, nargs="*", default=[2], help="parallel scan_tree worker counts")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="planessl-bench-")
        root = Path(tmp.name)
        t0 = time.perf_counter()
        write_tree(root, args.files, args.size)
        print(f"wrote {args.files} files of {args.size}x{args.size} px in {time.perf_counter() - t0:.1f} s")
    else:
        root = args.dir
    paths, _ = list_files(root)
    n = len(paths)
    for p in paths:  # warm the page cache so every variant reads from memory
        p.read_bytes()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"tree: {root}  ({n} files), {os.cpu_count()} CPUs (load average {load}), pydicom {pydicom.__version__}, "
          f"best of {args.repeat}")

    def read_all(**kw) -> None:
        for p in paths:
            try:
                pydicom.dcmread(p, **kw)
            except Exception:  # noqa: BLE001 - stray files count as read
                pass

    rates = {
        "pydicom.dcmread (full)": best_rate(lambda: read_all(), n, args.repeat),
        "pydicom.dcmread (stop_before_pixels)": best_rate(lambda: read_all(stop_before_pixels=True), n, args.repeat),
        "scan_tree (1 worker)": best_rate(lambda: scan_tree(root, workers=1), n, args.repeat),
    }
    for w in args.workers:
        if w > 1:
            rates[f"scan_tree ({w} workers)"] = best_rate(lambda w=w: scan_tree(root, workers=w), n, args.repeat)
    base = rates["pydicom.dcmread (full)"]
    print(f"{'reader':<40} {'files/s':>10} {'vs dcmread full':>16}")
    for name, rate in rates.items():
        print(f"{name:<40} {rate:>10.0f} {rate / base:>15.2f}x")
    result = scan_tree(root, workers=1)
    n_series = sum(len(st.series) for st in result.studies)
    print(f"scan_tree found {len(result.studies)} studies, {n_series} series, {len(result.problems)} problems")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
