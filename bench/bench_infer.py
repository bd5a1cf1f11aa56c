"""CPU inference time: cardiac segmentation of a 12-slice SAX stack at 224² (goal < 2 s, demo model); a knee exam.

Times ``inference.segment.segment_images`` end to end minus DICOM decoding: per-slice intensity
normalisation and resampling onto the 224² grid at 1.26 mm, the network (softmax), resampling of
the class probabilities back onto the original 256² slices at 1.4 mm, arg-max and the largest
connected component per structure. Two networks, untrained (time does not depend on weights):
the default demo size (8 filters, 4 levels, as Resources/Configs/finetune_seg_demo.yaml) and the
paper's reference (64 -> 1024 filters, 5 levels). Reports the median of ``--repeats`` runs after
one warm-up, and the network's share.

Knee: one synthetic knee exam (SAG, COR, AX stacks written as DICOM by the phantom) classified
for ACL tear as ``planessl predict acl`` does: reading the three series and preparing every slice
(``preprocess.exams.exams_from_dicom``), then the exam classifier (shared encoder per plane, slice
pooling, fusion). Two classifiers, untrained: the demo size (8 filters, 4 levels, 96² at 2 mm) and
the reference encoder (64 -> 1024 filters, 5 levels, 224² at 0.75 mm; its network timed once, cold).

Usage: python bench/bench_infer.py [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from PlaneSSLLib.geometry.planes import ImagePlane
from PlaneSSLLib.inference.classify import exam_probability
from PlaneSSLLib.inference.segment import SegModel, predict_probabilities, segment_images
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig
from PlaneSSLLib.models.exam_classifier import ExamClassifier, ExamClassifierConfig
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from PlaneSSLLib.preprocess.config import PrepareConfig
from PlaneSSLLib.preprocess.exams import KNEE_VIEWS, exams_from_dicom
from PlaneSSLLib.preprocess.labels import ACDC_LABEL_NAMES

SLICES, SIZE, SPACING = 12, 224, 1.26


def _stack() -> tuple[list[np.ndarray], list[ImagePlane]]:
    rng = np.random.default_rng(0)
    planes = [ImagePlane(np.array([-180.0, -180.0, 10.0 * k]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                         (1.4, 1.4), (256, 256)) for k in range(SLICES)]
    pixels = [rng.gamma(2.0, 100.0, size=(256, 256)).astype(np.float32) for _ in planes]
    return pixels, planes


def _time(fn, repeats: int, warm_up: bool = True) -> float:
    if warm_up:
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
    _knee(args.repeats)


def _knee(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_cohort(Path(tmp), CohortOptions("knee", subjects=1, seed=0), workers=1)
        exam_dir = Path(tmp) / "subject_0000"
        print(f"ACL classification of one knee exam ({', '.join(KNEE_VIEWS)} as DICOM), CPU, median of {repeats}")
        for name, size, spacing, enc in (
            ("default (demo, 8 filters, 4 levels)", 96, 2.0, UNetConfig(base_filters=8, levels=4, line_channels=0,
                                                                          location_head=False)),
            ("reference encoder (64->1024 filters, 5 levels)", 224, 0.75,
             UNetConfig(base_filters=64, levels=5, line_channels=0, location_head=False)),
        ):
            prep = PrepareConfig(spacing_mm=spacing, size_px=size, dtype="float32", anatomy="knee")
            torch.manual_seed(0)
            model = ExamClassifier(ExamClassifierConfig(encoder=enc, views=KNEE_VIEWS)).eval()
            exam = exams_from_dicom(exam_dir, prep)[0]
            slices = sum(exam.slices().values())
            t_read = _time(lambda prep=prep: exams_from_dicom(exam_dir, prep), repeats)
            big = enc.base_filters > 8  # about a minute per exam on 2 cores: one cold run
            t_net = _time(lambda model=model, exam=exam: exam_probability(model, exam), 1 if big else repeats,
                          warm_up=not big)
            print(f"  {name}, {size}² at {spacing} mm: {slices} slices; end to end {t_read + t_net:.3f} s "
                  f"(reading + preparing {t_read:.3f} s, network {t_net:.3f} s)")


if __name__ == "__main__":
    main()
