"""What one training image costs the reference network, measured on the CPU: FLOPs and activation memory.

The reference U-Net (Resources/Configs/pretrain_reference.yaml: 64 -> 1024 filters, 5 levels, 224 px,
line heatmaps + location head) at batch 1 and 2 in float32: the FLOPs of one forward+backward
(``torch.utils.flop_counter.FlopCounterMode``) and the memory the autograd graph holds per image
(the bytes of the tensors saved for backward, counted with ``torch.autograd.graph.saved_tensors_hooks``).
The README's GPU time and memory per stage are estimates made from these figures (no GPU measured them).

Usage: python bench/bench_reference_cost.py [--size 224] [--base-filters 64] [--levels 5]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from PlaneSSLLib.models import PlaneSSLNet, UNetConfig


def _step(net: PlaneSSLNet, batch: int, size: int) -> tuple[int, int]:
    """(FLOPs, bytes saved for backward) of one forward+backward at ``batch``."""
    x = torch.randn(batch, 1, size, size)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
        loss = out["lines"].float().square().mean() + out["location"].float().square().mean()
    loss.backward()
    return counter.get_total_flops(), saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--base-filters", type=int, default=64)
    ap.add_argument("--levels", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = UNetConfig(base_filters=args.base_filters, levels=args.levels, line_channels=3, location_hidden=512)
    net = PlaneSSLNet(cfg)
    params = sum(p.numel() for p in net.parameters())
    f1, s1 = _step(net, 1, args.size)
    f2, s2 = _step(net, 2, args.size)
    print(f"reference U-Net {args.base_filters}->{args.base_filters * 2 ** (args.levels - 1)}, {args.levels} levels, "
          f"{args.size} px: {params / 1e6:.1f} M parameters")
    print(f"forward+backward: {(f2 - f1) / 1e9:.1f} GFLOP per image")
    print(f"saved for backward: {(s2 - s1) / 2**20:.0f} MiB per image (float32)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
