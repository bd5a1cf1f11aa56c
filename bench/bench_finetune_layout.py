"""Fine-tuning step time on the CPU in the two memory layouts (``runtime.channels_last`` false / true).

The segmentation fine-tuning step of the transfer study (Resources/Configs/experiment_transfer_clinical.yaml):
the demo network (8 filters, 4 levels, BatchNorm, 4 output classes), a batch of 8 images of 96 × 96 px,
cross-entropy, backward, Adam. The two layouts are timed in alternating rounds in the same process (so a
machine busy with other work slows both alike) and the ratio is printed per thread count; the layouts
compute the same arithmetic in another summation order (the loss after the timed steps is printed for both).

Usage: python bench/bench_finetune_layout.py [--steps N] [--rounds N] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PlaneSSLLib.models.unet import PlaneSSLNet, UNetConfig  # noqa: E402


def _make(channels_last: bool) -> tuple[PlaneSSLNet, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = PlaneSSLNet(UNetConfig(in_channels=1, base_filters=8, levels=4, norm="batch", line_channels=4,
                                 location_head=False))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net, torch.optim.Adam(net.parameters(), 1e-3)


def _steps_ms(net: PlaneSSLNet, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int,
              channels_last: bool) -> tuple[float, float]:
    """Mean milliseconds per step over ``steps`` steps, and the last loss."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    loss = torch.zeros(())
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x)["lines"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps * 1000.0, float(loss.detach())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per layout")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 96, 96, generator=gen)
    y = torch.randint(0, 4, (8, 96, 96), generator=gen)
    print(f"torch {torch.__version__}, demo network, batch 8 x 96 x 96, {args.rounds} rounds x {args.steps} steps")
    for threads in args.threads:
        torch.set_num_threads(threads)
        runs = {False: _make(False), True: _make(True)}
        for layout, (net, opt) in runs.items():  # warm-up (allocator, oneDNN primitives)
            _steps_ms(net, opt, x, y, 3, layout)
        times: dict[bool, list[float]] = {False: [], True: []}
        losses: dict[bool, float] = {}
        for _ in range(args.rounds):
            for layout, (net, opt) in runs.items():
                ms, losses[layout] = _steps_ms(net, opt, x, y, args.steps, layout)
                times[layout].append(ms)
        plain, last = statistics.median(times[False]), statistics.median(times[True])
        print(f"{threads} thread(s): contiguous {plain:.1f} ms/step, channels-last {last:.1f} ms/step: "
              f"{plain / last:.2f}x (loss after {3 + args.rounds * args.steps} steps: {losses[False]:.6f} vs "
              f"{losses[True]:.6f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
