"""CPU inference time of cardiac segmentation for one 12-slice SAX stack at 224² (goal: < 2 s, demo model).

Times ``inference.segment.segment_images`` end to end minus DICOM decoding: per-slice intensity
normalisation and resampling onto the 224² grid at 1.26 mm, the network (softmax), resampling of
the class probabilities back onto the original 256² slices at 1.4 mm, arg-max and the largest
connected component per structure. Two networks, untrained (time does not depend on weights):
the default demo size (8 filters, 4 levels, as Resources/Configs/finetune_seg_demo.yaml) and the
paper's reference (64 -> 1024 filters, 5 levels). Reports the median of ``--repeats`` runs after
one warm-up, and the network's share.

Usage: python bench/bench_infer.py [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from PlaneSSLLib.data.segmentation import ACDC_LABEL_NAMES
from PlaneSSLLib.geometry.planes import ImagePlane
from PlaneSSLLib.inference.segment import SegModel, predict_probabilities, segment_images
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig

SLICES, SIZE, SPACING = 12, 224, 1.26


def _stack() -> tuple[list[np.ndarray], list[ImagePlane]]:
    rng = np.random.default_rng(0)
    planes = [ImagePlane(np.array([-180.0, -180.0, 10.0 * k]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                         (1.4, 1.4), (256, 256)) for k in range(SLICES)]
    pixels = [rng.gamma(2.0, 100.0, size=(256, 256)).astype(np.float32) for _ in planes]
    return pixels, planes


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pixels, planes = _stack()
    print(f"segmentation inference, {SLICES}-slice SAX stack at {SIZE}² ({SPACING} mm), CPU, "
          f"{torch.get_num_threads()} torch threads, median of {args.repeats}")
    for name, cfg in (
        ("default (demo, 8 filters, 4 levels)", UNetConfig(base_filters=8, levels=4, line_channels=4,
                                                           location_head=False)),
        ("reference (64->1024 filters, 5 levels)", UNetConfig(base_filters=64, levels=5, line_channels=4,
                                                              location_head=False)),
    ):
        torch.manual_seed(0)
        net = PlaneSSLNet(cfg).eval().to(memory_format=torch.channels_last)  # as load_seg_model does
        model = SegModel(net, {}, SIZE, SPACING, "minmax", (0.5, 99.5), list(ACDC_LABEL_NAMES))
        params = sum(p.numel() for p in net.parameters()) / 1e6
        x = np.zeros((SLICES, SIZE, SIZE), np.float32)
        t_net = _time(lambda net=net, x=x: predict_probabilities(net, x, batch_size=SLICES), args.repeats)
        t_all = _time(lambda model=model: segment_images(model, pixels, planes, batch_size=SLICES), args.repeats)
        goal = " (goal < 2 s: " + ("met" if t_all < 2.0 else "NOT met") + ")" if name.startswith("default") else ""
        print(f"  {name}: {params:.2f} M parameters; end to end {t_all:.3f} s, network {t_net:.3f} s{goal}")


if __name__ == "__main__":
    main()
