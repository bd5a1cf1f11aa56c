"""The inference worker: ``python -m PlaneSSLLib.slicer_logic.worker JOB_DIR``.

Runs in its own process (started by ``runner.InferenceRunner``), with torch and numpy only —
no MRML, no Qt. ``JOB_DIR/request.json`` names the task, the device and the parameters;
inputs are ``JOB_DIR/in_<name>.npy``. The worker prints ``DEVICE <name>`` once, then
``PROGRESS i/n`` lines, writes outputs as ``JOB_DIR/out_<name>.npy`` (atomically) and
``JOB_DIR/result.json``, and exits 0; on failure it prints the error to stderr and exits 1.

Tasks (the real inference paths, weights folder or archive in ``params["model"]``):
``segment_heart`` (``inference.segment``: ``load_seg_model`` + ``segment_images`` per phase on
the slice planes sent as ``plane_origin/x/y/spacing/shape`` arrays, LPS → labels in the image's
(slices, rows, cols) order) and ``classify_knee`` (``inference.classify``: the ``SAG``/``COR``/``AX``
stacks with their ``<view>_plane_*`` arrays prepared like ``preprocess.exams.exams_from_dicom`` →
``exam_probability``, plus the manifest's decision threshold); both load the weights through
``inference.weights.load_model``, which validates the manifest once. ``sleep`` and ``fail`` for tests.
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

__all__ = ["main", "resolve_device", "plane_arrays", "knee_exam", "TASKS"]


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


def _planes(inputs: dict, prefix: str) -> list:
    """The image planes (LPS) sent as ``<prefix>origin``/``x``/``y``/``spacing``/``shape`` arrays."""
    from ..geometry.planes import ImagePlane

    try:
        origin, x, y = (np.asarray(inputs[f"{prefix}{k}"], dtype=np.float64) for k in ("origin", "x", "y"))
        spacing, shape = inputs[f"{prefix}spacing"], inputs[f"{prefix}shape"]
    except KeyError as exc:
        raise ValueError(f"the request holds no slice geometry ({exc.args[0]!r} missing)") from None
    return [ImagePlane(origin[k], x[k], y[k], (float(spacing[k][0]), float(spacing[k][1])),
                       (int(shape[k][0]), int(shape[k][1]))) for k in range(len(origin))]


def plane_arrays(planes, prefix: str = "plane_") -> dict[str, np.ndarray]:
    """Inverse of ``_planes``: the arrays a request carries for ``planes`` (LPS)."""
    return {f"{prefix}origin": np.array([p.origin_lps for p in planes], dtype=np.float64),
            f"{prefix}x": np.array([p.x_dir_lps for p in planes], dtype=np.float64),
            f"{prefix}y": np.array([p.y_dir_lps for p in planes], dtype=np.float64),
            f"{prefix}spacing": np.array([p.spacing_mm for p in planes], dtype=np.float64),
            f"{prefix}shape": np.array([p.shape_px for p in planes], dtype=np.int64)}


def _model_path(params: dict) -> str:
    path = params.get("model")
    if not path:
        raise ValueError("no model: params['model'] must name an exported weights folder or archive")
    return str(path)


def task_segment_heart(inputs, params, device, progress):
    """``inference.segment``: each phase's stack resampled to the model's grid, predicted, mapped back
    to its own planes, largest component kept. ``image`` (K, rows, cols) or (phases, K, rows, cols);
    ``plane_*`` the K slice planes. Output ``labels`` uint8 of the image's shape."""
    from ..inference.segment import load_seg_model, segment_images

    model = load_seg_model(_model_path(params), device)
    volume = np.asarray(inputs["image"])
    planes = _planes(inputs, "plane_")
    phases = volume.reshape(-1, *volume.shape[-3:])
    k = phases.shape[1]
    if len(planes) != k or any(p.shape_px != phases.shape[2:] for p in planes):
        raise ValueError(f"{len(planes)} slice planes do not fit an image of shape {volume.shape}")
    out = np.zeros(phases.shape, dtype=np.uint8)
    for p, stack in enumerate(phases):
        out[p] = segment_images(model, list(stack), planes, lcc=bool(params.get("lcc", True)))
        progress((p + 1) * k, len(phases) * k)
    return {"labels": out.reshape(volume.shape)}


def knee_exam(inputs: dict, views, config, laterality: str = ""):
    """A ``preprocess.exams.Exam`` from per-view stacks ``inputs[view]`` with planes ``inputs[view + "_plane_*"]``:
    every slice prepared as ``exams_from_dicom`` does (``resample.prepare_image`` with ``config``),
    slices in anatomical order (``preprocess.index.orient_normal``: SAG medial -> lateral for the knee's
    ``laterality``, COR +P, AX +S)."""
    from ..preprocess.exams import Exam
    from ..preprocess.index import orient_normal
    from ..preprocess.resample import prepare_image

    missing = [v for v in views if v not in inputs]
    if missing:
        raise ValueError(f"the model reads {', '.join(views)}; no {', '.join(missing)} stack was sent")
    stacks = {}
    for view in views:
        pixels = np.asarray(inputs[view])
        planes = _planes(inputs, f"{view}_plane_")
        if len(planes) != len(pixels):
            raise ValueError(f"{view}: {len(planes)} slice planes for {len(pixels)} slices")
        normal = orient_normal(planes[0].normal_lps, "knee", view, laterality)
        order = np.argsort([float(normal @ p.origin_lps) for p in planes], kind="stable")
        out = np.zeros((len(planes), config.size_px, config.size_px), dtype=np.float32)
        for i, k in enumerate(order):
            out[i], _ = prepare_image(pixels[k], planes[k], config.spacing_mm, config.size_px, config.normalisation,
                                      config.clip_percentiles, config.antialias)
        stacks[view] = out
    return Exam(key="slicer", stacks=stacks)


def task_classify_knee(inputs, params, device, progress):
    """``inference.classify``: the SAG/COR/AX stacks prepared like training → ``exam_probability``.
    Outputs ``probability`` and the manifest's decision ``threshold``."""
    from ..inference.classify import exam_probability, load_classifier, prepare_config_from_manifest

    model, manifest = load_classifier(_model_path(params), device)
    exam = knee_exam(inputs, model.config.views, prepare_config_from_manifest(manifest),
                     str(params.get("laterality", "")))
    progress(1, 2)
    probability = exam_probability(model, exam, device)
    progress(2, 2)
    threshold = float(manifest["decision"]["threshold"])
    return {"probability": np.array([probability], dtype=np.float64),
            "threshold": np.array([threshold], dtype=np.float64)}


def task_sleep(inputs, params, device, progress):
    n = int(params.get("steps", 10))
    for i in range(n):
        time.sleep(float(params.get("seconds", 0.2)))
        progress(i + 1, n)
    return {"done": np.array([n])}


def task_fail(inputs, params, device, progress):
    progress(1, 2)
    raise RuntimeError(params.get("message", "failure requested by the test"))


TASKS = {"segment_heart": task_segment_heart, "classify_knee": task_classify_knee,
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
