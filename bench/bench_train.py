"""Training throughput of the pretraining step (model + targets + loss + Adam), and peak memory.

Always: the demo network (Resources/Configs/pretrain_demo.yaml: 8 filters, 4 levels, 96 px,
batch 8) in float32 on the CPU (peak RSS from ``resource``). With CUDA, also the reference
network (64 -> 1024 filters, 5 levels, 224 px, batch 20) in float32 and in bf16 autocast with
channels_last (the reference config's settings), with ``torch.cuda.max_memory_allocated`` and
the fraction of the GPU's peak dense bf16 FLOP/s, the FLOPs of one forward+backward counted
with ``torch.utils.flop_counter.FlopCounterMode``. Batches sit on the device already, so the
figures exclude data loading (the DataLoader runs in parallel with training).

Usage: python bench/bench_train.py [--steps N] [--warmup N] [--peak-tflops X] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

from PlaneSSLLib.training.config import PretrainConfig, config_from_dict, load_config
from PlaneSSLLib.training.data_hooks import build_datasets
from PlaneSSLLib.training.distributed import DistInfo
from PlaneSSLLib.training.engine import Engine
from PlaneSSLLib.training.pretrain import PretextTask
from PlaneSSLLib.training.signals import GracefulStop

REPO = Path(__file__).resolve().parents[1]

#: Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a substring of the device name.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,
    "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0, "V100": 125.0,
}


def _config(base: PretrainConfig, device: str, amp: str, channels_last: bool) -> PretrainConfig:
    raw = base.to_dict()
    raw["data"].update(source="synthetic", synthetic_subjects=max(4, base.optim.batch_size), synthetic_slices=1,
                       synthetic_channels=4, augment=False, val_fraction=0.0)
    raw["model"]["line_channels"] = None
    raw["runtime"].update(device=device, amp=amp, channels_last=channels_last, tensorboard=False, plot=False)
    raw["output"] = "/nonexistent/bench"
    return config_from_dict(raw, "bench", check_paths=False)


def _trainer(cfg: PretrainConfig) -> tuple[Engine, dict]:
    device = torch.device("cuda" if cfg.runtime.device == "cuda" else "cpu")
    datasets = build_datasets(cfg)
    trainer = Engine(PretextTask(cfg, datasets), GracefulStop())
    trainer.prepare(device, DistInfo(device=device))
    ds = datasets[0]
    batch = default_collate([ds[i % len(ds)] for i in range(cfg.optim.batch_size)])
    return trainer, batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg: PretrainConfig, steps: int, warmup: int) -> dict:
    """images/s over ``steps`` steps after ``warmup``; FLOPs of one step; peak memory."""
    trainer, batch = _trainer(cfg)
    device = trainer.device
    if device.type == "cuda":
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup):
        trainer.step(batch, 0, i)
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        trainer.step(batch, 0, i)
    _sync(device)
    seconds = time.perf_counter() - start
    result = {"images_per_s": steps * cfg.optim.batch_size / seconds, "step_ms": 1000 * seconds / steps,
              "params": sum(p.numel() for p in trainer.net.parameters())}
    with FlopCounterMode(display=False) as counter:
        trainer.step(batch, 0, 0)
    result["flops_per_step"] = counter.get_total_flops()
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU peak dense bf16 TFLOP/s")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU figures")
    args = parser.parse_args()
    torch.manual_seed(0)

    demo = load_config(REPO / "Resources" / "Configs" / "pretrain_demo.yaml", check_paths=False)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads")
    if not args.skip_cpu:
        r = measure(_config(demo, "cpu", "none", False), args.steps, args.warmup)
        print(f"demo network on CPU ({demo.model.base_filters} filters, {demo.model.levels} levels, "
              f"{demo.data.image_size} px, batch {demo.optim.batch_size}, float32, {r['params']:,} parameters):")
        print(f"  throughput:        {r['images_per_s']:.1f} images/s ({r['step_ms']:.1f} ms/step)")
        print(f"  FLOPs per step:    {r['flops_per_step'] / 1e9:.2f} GFLOP (forward+backward)")
        print(f"  achieved:          {r['flops_per_step'] / r['step_ms'] * 1e3 / 1e9:.1f} GFLOP/s")
        print(f"  peak RSS:          {r['peak_rss_mib']:.0f} MiB")
    if not torch.cuda.is_available():
        print("no CUDA device: reference-network GPU figures skipped")
        return 0

    name = torch.cuda.get_device_name()
    ref = PretrainConfig()
    print(f"reference network on {name} (64->1024 filters, 5 levels, 224 px, batch {ref.optim.batch_size}):")
    results = {}
    for label, amp, cl in (("float32", "none", False), ("bf16 + channels_last", "bf16", True)):
        r = measure(_config(ref, "cuda", amp, cl), args.steps, args.warmup)
        results[label] = r
        print(f"  {label:22s} {r['images_per_s']:8.1f} images/s  {r['step_ms']:7.1f} ms/step  "
              f"peak {r['peak_mem_gib']:.1f} GiB")
        torch.cuda.empty_cache()
    bf16 = results["bf16 + channels_last"]
    achieved = bf16["flops_per_step"] / (bf16["step_ms"] / 1e3)
    print(f"  FLOPs per step:    {bf16['flops_per_step'] / 1e12:.2f} TFLOP (forward+backward, "
          f"{bf16['params']:,} parameters)")
    print(f"  bf16 speed-up:     x{bf16['images_per_s'] / results['float32']['images_per_s']:.2f} over float32")
    peak = _peak_tflops(name, args.peak_tflops)
    print(f"  achieved:          {achieved / 1e12:.1f} TFLOP/s", end="")
    if peak:
        print(f" = {100 * achieved / (peak * 1e12):.1f}% of the {peak:g} TFLOP/s dense bf16 peak")
    else:
        print(" (peak unknown for this GPU: pass --peak-tflops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
