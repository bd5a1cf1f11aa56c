"""The inference worker: ``python -m PlaneSSLLib.slicer_logic.worker JOB_DIR``.

Runs in its own process (started by ``runner.InferenceRunner``), with torch and numpy only —
no MRML, no Qt. ``JOB_DIR/request.json`` names the task, the device and the parameters;
inputs are ``JOB_DIR/in_<name>.npy``. The worker prints ``DEVICE <name>`` once, then
``PROGRESS i/n`` lines, writes outputs as ``JOB_DIR/out_<name>.npy`` (atomically) and
``JOB_DIR/result.json``, and exits 0; on failure it prints the error to stderr and exits 1.

Tasks: ``segment_heart`` (a U-Net with ``line_channels`` = 4 classes, argmax per slice →
ACDC labels), ``lines`` (a ``PlaneSSLNet``'s heatmaps for one image), ``classify_knee`` (mean
of the encoder bottleneck over a knee exam's stacks → sigmoid), plus ``sleep`` and ``fail``
for tests. Without ``weights`` the networks have seeded random weights (for tests and timing);
``task`` may also be ``"package.module:function"`` taking ``(inputs, params, device, progress)``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, atomic_write_text

__all__ = ["main", "resolve_device", "TASKS"]


def resolve_device(requested: str) -> tuple[str, str]:
    """``(device, note)``: "cuda" when asked for ("auto"/"cuda") and available, else "cpu"."""
    requested = (requested or "auto").lower()
    if requested == "cpu":
        return "cpu", ""
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda", ""
    except Exception as exc:  # noqa: BLE001 - a broken CUDA setup falls back to CPU
        return "cpu", f"cuda unusable ({type(exc).__name__}: {exc}); using cpu"
    return "cpu", "" if requested == "auto" else "cuda not available; using cpu"


def _network(params: dict, device: str):
    import torch

    from ..models.unet import PlaneSSLNet, UNetConfig

    torch.manual_seed(int(params.get("seed", 0)))
    config = UNetConfig(**params.get("config", {}))
    net = PlaneSSLNet(config)
    weights = params.get("weights")
    if weights:
        from safetensors.torch import load_file

        net.load_state_dict(load_file(weights))
    return net.to(device).eval(), config


def _prepare(image: np.ndarray, multiple: int):
    img = np.asarray(image, dtype=np.float32)
    img = (img - img.mean()) / (img.std() + 1e-6)
    h, w = img.shape[-2:]
    pad = [(0, 0)] * (img.ndim - 2) + [(0, -h % multiple), (0, -w % multiple)]
    return np.pad(img, pad), (h, w)


def task_segment_heart(inputs, params, device, progress):
    import torch

    params = {**params, "config": {"line_channels": 4, "location_head": False, **params.get("config", {})}}
    net, config = _network(params, device)
    volume = inputs["image"]  # (slices, rows, cols) or (phases, slices, rows, cols)
    stack = volume.reshape(-1, *volume.shape[-2:])
    out = np.zeros(stack.shape, dtype=np.int16)
    for i, image in enumerate(stack):
        x, (h, w) = _prepare(image, config.size_multiple)
        with torch.no_grad():
            logits = net(torch.from_numpy(x)[None, None].to(device))["lines"]
        out[i] = logits[0, :, :h, :w].argmax(0).cpu().numpy().astype(np.int16)
        progress(i + 1, len(stack))
    return {"labels": out.reshape(volume.shape)}


def task_lines(inputs, params, device, progress):
    import torch

    net, config = _network(params, device)
    x, (h, w) = _prepare(inputs["image"], config.size_multiple)
    with torch.no_grad():
        lines = net(torch.from_numpy(x)[None, None].to(device))["lines"]
    progress(1, 1)
    return {"heatmaps": lines[0, :, :h, :w].float().cpu().numpy()}


def task_classify_knee(inputs, params, device, progress):
    import torch

    params = {**params, "config": {"location_head": False, "line_channels": 0, **params.get("config", {})}}
    net, config = _network(params, device)
    torch.manual_seed(int(params.get("seed", 0)) + 1)
    features = []
    names = sorted(inputs)
    for n, name in enumerate(names):
        for image in inputs[name]:
            x, _ = _prepare(image, config.size_multiple)
            with torch.no_grad():
                bottleneck = net.encoder(torch.from_numpy(x)[None, None].to(device))[-1]
            features.append(bottleneck.mean(dim=(0, 2, 3)))
        progress(n + 1, len(names))
    pooled = torch.stack(features).mean(0)
    head = torch.nn.Linear(pooled.numel(), 1).to(device)
    with torch.no_grad():
        probability = torch.sigmoid(head(pooled)).item()
    return {"probability": np.array([probability], dtype=np.float64)}


def task_sleep(inputs, params, device, progress):
    n = int(params.get("steps", 10))
    for i in range(n):
        time.sleep(float(params.get("seconds", 0.2)))
        progress(i + 1, n)
    return {"done": np.array([n])}


def task_fail(inputs, params, device, progress):
    progress(1, 2)
    raise RuntimeError(params.get("message", "failure requested by the test"))


TASKS = {"segment_heart": task_segment_heart, "lines": task_lines, "classify_knee": task_classify_knee,
         "sleep": task_sleep, "fail": task_fail}


def _task(name: str):
    if name in TASKS:
        return TASKS[name]
    if ":" in name:
        module, func = name.split(":", 1)
        return getattr(importlib.import_module(module), func)
    raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)}, or 'module:function')")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m PlaneSSLLib.slicer_logic.worker JOB_DIR", file=sys.stderr)
        return 2
    job = Path(argv[0])
    try:
        request = json.loads((job / "request.json").read_text())
        device, note = resolve_device(request.get("device", "auto"))
        print(f"DEVICE {device}" + (f" ({note})" if note else ""), flush=True)
        inputs = {p.stem[3:]: np.load(p) for p in sorted(job.glob("in_*.npy"))}

        def progress(i: int, n: int) -> None:
            print(f"PROGRESS {int(i)}/{int(n)}", flush=True)

        outputs = _task(request["task"])(inputs, request.get("params", {}), device, progress)
        for name, value in outputs.items():
            with atomic_path(job / f"out_{name}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, np.asarray(value))
        atomic_write_text(job / "result.json", json.dumps({"device": device, "outputs": sorted(outputs)}))
        return 0
    except Exception:  # noqa: BLE001 - the runner reads the traceback from stderr
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
