"""Loader throughput: slices/s from the prepared cache vs decoding + resampling DICOM per item.

Usage::

    python bench/bench_loader.py                       # phantom heart cohort in a temporary folder
    python bench/bench_loader.py --subjects 8 --phases 10 --spacing 1.26 --size 224 --workers 0 2
    python bench/bench_loader.py --data /data/kaggle --items 2000

Both paths feed the same slices through a ``torch.utils.data.DataLoader`` (batch ``--batch``,
each ``--workers`` value): (1) ``PretextDataset`` over the memory-mapped cache (image + line and
location targets); (2) per item ``pydicom.dcmread`` of the slice's file, pixel decoding and
rescale (``dicom.pixels.read_file_frames``), per-image normalisation and resampling to the same
grid (``preprocess.resample.prepare_image``) — what a loader without a cache would do. Prints slices/s
of each and the ratio (goal ≥ 10×). Figures are the best of ``--repeat`` passes (warm page cache).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PlaneSSLLib.data.cache import open_cache  # noqa: E402
from PlaneSSLLib.data.datasets import PretextDataset  # noqa: E402
from PlaneSSLLib.data.prepare import prepare_cache  # noqa: E402
from PlaneSSLLib.dicom.pixels import read_file_frames  # noqa: E402
from PlaneSSLLib.phantoms import CohortOptions, write_cohort  # noqa: E402
from PlaneSSLLib.preprocess.config import PrepareConfig  # noqa: E402
from PlaneSSLLib.preprocess.index import scan_slices  # noqa: E402
from PlaneSSLLib.preprocess.resample import prepare_image  # noqa: E402


class DicomSlices(Dataset):
    """The same slices, read from DICOM and prepared on every access (no cache)."""

    def __init__(self, data: Path, config: PrepareConfig) -> None:
        table, _ = scan_slices(data, config)
        self.frames = [(s.frame.path, s.frame.frame_index, s.frame.plane) for s in table.slices]
        self.config = config

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        path, frame, plane = self.frames[i]
        pixels = read_file_frames(path, [frame])[0]
        c = self.config
        img, _ = prepare_image(pixels, plane, c.spacing_mm, c.size_px, c.normalisation, c.clip_percentiles, c.antialias)
        return {"image": torch.from_numpy(img).unsqueeze(0)}


def rate(dataset: Dataset, indices: np.ndarray, batch: int, workers: int, repeat: int) -> float:
    """Slices per second of the fastest pass over ``indices``."""
    loader = DataLoader(dataset, batch_size=batch, sampler=indices.tolist(), num_workers=workers,
                        persistent_workers=workers > 0)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        n = sum(len(b["image"]) for b in loader)
        best = min(best, time.perf_counter() - start)
    assert n == len(indices)
    return len(indices) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="DICOM folder (default: a phantom heart cohort)")
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--phases", type=int, default=8)
    ap.add_argument("--matrix", type=int, default=None, help="phantom image matrix (default: varies, ~192-256)")
    ap.add_argument("--spacing", type=float, default=1.26)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--items", type=int, default=600, help="slices read per pass")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    config = PrepareConfig(spacing_mm=args.spacing, size_px=args.size)
    with tempfile.TemporaryDirectory(prefix="planessl-bench-") as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "heart"
            t0 = time.perf_counter()
            write_cohort(data, CohortOptions("heart", subjects=args.subjects, seed=0, phases=args.phases,
                                             matrix=args.matrix))
            print(f"phantom cohort: {args.subjects} subjects, {args.phases} phases ({time.perf_counter() - t0:.1f} s)")
        t0 = time.perf_counter()
        report = prepare_cache(data, Path(tmp) / "cache", config, jobs=2)
        rate_prepare = report.n_slices / max(report.seconds, 1e-9)
        print(f"prepare: {report.n_slices} slices in {time.perf_counter() - t0:.1f} s "
              f"({rate_prepare:.0f} slices/s, {args.spacing} mm, {args.size} px, 2 jobs)")
        cached = PretextDataset(open_cache(report.cache_dir))
        dicom = DicomSlices(data, config)
        assert len(dicom) == len(cached), "the DICOM enumeration and the cache disagree"
        rng = np.random.default_rng(0)
        indices = rng.integers(0, len(cached), size=min(args.items, 20 * len(cached)))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(indices)} random slices per pass, "
              f"batch {args.batch}")
        for workers in args.workers:
            fast = rate(cached, indices, args.batch, workers, args.repeat)
            slow = rate(dicom, indices, args.batch, workers, args.repeat)
            print(f"workers={workers}: cache {fast:8.0f} slices/s | DICOM decode+resample {slow:7.0f} slices/s | "
                  f"ratio {fast / slow:6.1f}x")


if __name__ == "__main__":
    main()
