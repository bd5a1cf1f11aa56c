"""Fine-tuning step time on the CPU in the two memory layouts (``runtime.channels_last`` false / true).

``--task seg``: the segmentation fine-tuning step of the transfer study
(Resources/Configs/experiment_transfer_clinical.yaml): the demo network (8 filters, 4 levels, BatchNorm, 4 output
classes), a batch of 8 images of 96 × 96 px, cross-entropy, backward, Adam. ``--task acl``: the ACL study's step
(Resources/Configs/experiment_transfer_acl_clinical.yaml, finetune_acl_demo.yaml): the exam classifier on the
demo encoder, a batch of 2 exams × 3 views × 12 slices of 96 × 96 px (one encoder pass over 72 slices), max
pooling per view, binary cross-entropy, backward, Adam. The two layouts are timed in alternating rounds in the
same process (so a machine busy with other work slows both alike) and the ratio is printed per thread count; the
layouts compute the same arithmetic in another summation order (the loss after the timed steps is printed for
both).

Usage: python bench/bench_finetune_layout.py [--task seg|acl] [--steps N] [--rounds N] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PlaneSSLLib.models.configs import ExamClassifierConfig  # noqa: E402
from PlaneSSLLib.models.exam_classifier import ExamClassifier  # noqa: E402
from PlaneSSLLib.models.unet import PlaneSSLNet, UNetConfig  # noqa: E402


def _make(task: str, channels_last: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    encoder = UNetConfig(in_channels=1, base_filters=8, levels=4, norm="batch", line_channels=4 if task == "seg" else 0,
                         location_head=False)
    net = PlaneSSLNet(encoder) if task == "seg" else ExamClassifier(ExamClassifierConfig(encoder=encoder))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net, torch.optim.Adam(net.parameters(), 1e-3)


def _loss(task: str, net: torch.nn.Module, x: Any, y: torch.Tensor) -> torch.Tensor:
    if task == "seg":
        return torch.nn.functional.cross_entropy(net(x)["lines"], y)
    return torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)


def _inputs(task: str, gen: torch.Generator) -> tuple[Any, torch.Tensor]:
    if task == "seg":
        return torch.rand(8, 1, 96, 96, generator=gen), torch.randint(0, 4, (8, 96, 96), generator=gen)
    stacks = {v: torch.rand(2, 12, 96, 96, generator=gen) for v in ("SAG", "COR", "AX")}
    return stacks, torch.tensor([0.0, 1.0])


def _steps_ms(task: str, net: torch.nn.Module, opt: torch.optim.Optimizer, x: Any, y: torch.Tensor, steps: int,
              channels_last: bool) -> tuple[float, float]:
    """Mean milliseconds per step over ``steps`` steps, and the last loss (the segmentation input is made
    channels-last as finetune_seg.py does; the exam stacks have one channel, for which both layouts are one)."""
    if channels_last and task == "seg":
        x = x.contiguous(memory_format=torch.channels_last)
    loss = torch.zeros(())
    start = time.perf_counter()
    for _ in range(steps):
        loss = _loss(task, net, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps * 1000.0, float(loss.detach())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=("seg", "acl"), default="seg")
    ap.add_argument("--steps", type=int, default=15, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per layout")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(1)
    x, y = _inputs(args.task, gen)
    batch = "8 x 96 x 96" if args.task == "seg" else "2 exams x 3 views x 12 slices of 96 x 96"
    print(f"torch {torch.__version__}, {args.task}: demo encoder, batch {batch}, {args.rounds} rounds x "
          f"{args.steps} steps")
    for threads in args.threads:
        torch.set_num_threads(threads)
        runs = {False: _make(args.task, False), True: _make(args.task, True)}
        for layout, (net, opt) in runs.items():  # warm-up (allocator, oneDNN primitives)
            _steps_ms(args.task, net, opt, x, y, 3, layout)
        times: dict[bool, list[float]] = {False: [], True: []}
        losses: dict[bool, float] = {}
        for _ in range(args.rounds):
            for layout, (net, opt) in runs.items():
                ms, losses[layout] = _steps_ms(args.task, net, opt, x, y, args.steps, layout)
                times[layout].append(ms)
        plain, last = statistics.median(times[False]), statistics.median(times[True])
        print(f"{threads} thread(s): contiguous {plain:.1f} ms/step, channels-last {last:.1f} ms/step: "
              f"{plain / last:.2f}x (loss after {3 + args.rounds * args.steps} steps: {losses[False]:.6f} vs "
              f"{losses[True]:.6f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
