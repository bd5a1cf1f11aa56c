"""Target generation and augmentation throughput on CPU (or ``--device cuda``).

Usage::

    python bench/bench_targets.py                     # batch 32, 3 channels, 224 × 224
    python bench/bench_targets.py --batch 20 --channels 4 --size 224 --device cuda

Prints: heatmaps/s of ``targets.line_heatmaps`` (one heatmap = one channel of one image),
images/s of ``augment.augment_batch`` (geometric + intensity, lines transformed), and
slices/s of the one-off vectorised line-coefficient computation (``pairs.line_targets``) on a
synthetic index. Best of ``--repeat`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PlaneSSLLib.data.augment import AugmentConfig, augment_batch  # noqa: E402
from PlaneSSLLib.data.cache import INDEX_DTYPE  # noqa: E402
from PlaneSSLLib.data.pairs import line_targets  # noqa: E402
from PlaneSSLLib.data.targets import line_heatmaps  # noqa: E402
from PlaneSSLLib.preprocess.codes import VIEW_CODES  # noqa: E402


def best_seconds(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def synthetic_index(n_studies: int, sax_slices: int, size: int) -> np.ndarray:
    """A heart-like index: per study a SAX stack and three long-axis images at other angles."""
    rows = []
    rng = np.random.default_rng(0)
    for study in range(n_studies):
        for view, count in (("SAX", sax_slices), ("2CH", 1), ("3CH", 1), ("4CH", 1)):
            angle = {"SAX": 0.0, "2CH": 1.4, "3CH": 2.0, "4CH": 2.6}[view] + rng.normal(0, 0.05)
            n = np.array([math.cos(angle), math.sin(angle), 0.3])
            n /= np.linalg.norm(n)
            x = np.cross(n, [0.0, 0.0, 1.0])
            x /= np.linalg.norm(x)
            y = np.cross(n, x)
            for k in range(count):
                r = np.zeros((), dtype=INDEX_DTYPE)
                r["study"], r["view"], r["stack"] = study, VIEW_CODES[view], study * 4 + VIEW_CODES[view]
                r["position"], r["n_positions"] = k, count
                r["origin_lps"] = -(size - 1) / 2 * 1.26 * (x + y) + 8.0 * k * n
                r["x_dir_lps"], r["y_dir_lps"] = x, y
                r["spacing_mm"], r["shape_px"] = (1.26, 1.26), (size, size)
                rows.append(r)
    return np.array(rows, dtype=INDEX_DTYPE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--sigma", type=float, default=6.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)  # noqa: E731
    b, c, s = args.batch, args.channels, args.size
    g = torch.Generator().manual_seed(0)
    angle = torch.rand(b, c, generator=g) * math.pi
    lines = torch.stack([torch.cos(angle), torch.sin(angle), -torch.rand(b, c, generator=g) * s], dim=-1).to(dev)
    valid = torch.ones(b, c, dtype=torch.bool, device=dev)
    print(f"torch {torch.__version__}, device {dev}, {torch.get_num_threads()} threads; batch {b}×{c}×{s}×{s}")

    t = best_seconds(lambda: line_heatmaps(lines, valid, (s, s), args.sigma), args.repeat, sync)
    print(f"line_heatmaps:  {b * c / t:10.0f} heatmaps/s  ({t * 1e3:.1f} ms per batch)")

    image = torch.rand(b, 1, s, s, device=dev)
    batch = {"image": image, "lines": lines, "line_valid": valid}
    gen = torch.Generator(device=dev).manual_seed(0)
    for name, cfg in (("augment (geometric + intensity)", AugmentConfig()),
                      ("augment (geometric only)", AugmentConfig(intensity=False))):
        t = best_seconds(lambda cfg=cfg: augment_batch(batch, gen, cfg), args.repeat, sync)
        print(f"{name}: {b / t:10.0f} images/s  ({t * 1e3:.1f} ms per batch)")

    index = synthetic_index(n_studies=500, sax_slices=10, size=s)
    rows = np.arange(len(index))
    t = best_seconds(lambda: line_targets(index, rows, "heart"), max(1, args.repeat // 2), lambda: None)
    print(f"line_targets (numpy, once per dataset): {len(index) / t:10.0f} slices/s ({len(index)} slices × 4 channels)")


if __name__ == "__main__":
    main()
