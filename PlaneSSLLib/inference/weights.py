"""Exported weights: ``model.safetensors`` + ``manifest.json`` in a directory or a ``.zip`` archive.

One exporter (:func:`export_model`) and one loader (:func:`load_model`) for every architecture
and task; the manifest's contents, its building and its one validation are in
``inference.manifest`` (re-exported here). Only torch, numpy, safetensors and the standard library are
used: the inference side (the Slicer extension) loads weights without the training stack; torch
is imported by the functions that build or export a torch network, not by this module
(``inference.unet_numpy`` loads the same files without torch).
Loading never unpickles. Exported weights carry ``weights_sha256`` (the sha256 of
``model.safetensors``) and ``model_id`` (its first 16 hex digits) in the manifest; loading checks
both when present (manifests written before ``weights_sha256`` existed still load), refuses tensors
whose names, shapes or dtypes do not match the architecture, and refuses NaN or infinite values.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write_bytes

if TYPE_CHECKING:
    import torch
from .manifest import (
    MANIFEST_KEYS,
    PRETEXT_TASKS,
    WEIGHTS_FORMAT,
    WEIGHTS_FORMAT_VERSION,
    ValidatedManifest,
    WeightsError,
    build_manifest,
    package_versions,
    validate_manifest,
)

__all__ = [
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "WEIGHTS_FILE",
    "MANIFEST_FILE",
    "MANIFEST_KEYS",
    "WeightsError",
    "build_manifest",
    "validate_manifest",
    "export_model",
    "export_weights",
    "load_model",
    "load_validated",
    "load_exported",
    "package_versions",
    "read_validated",
    "read_weights_pair",
    "zip_weights",
]

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"


def _model_id(weights: bytes) -> str:
    """Names a model in predictions without naming anyone: the weights file's sha256 (16 hex digits)."""
    return hashlib.sha256(weights).hexdigest()[:16]


def _non_finite_tensor(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf (sorted by name), else None."""
    import torch

    for name in sorted(tensors):
        tensor = tensors[name]
        if not tensor.is_floating_point():
            continue
        if tensor.dtype in (torch.float16, torch.float32, torch.float64):  # numpy: ~100x faster than torch here
            finite = bool(np.isfinite(tensor.detach().cpu().numpy()).all())
        else:
            finite = bool(torch.isfinite(tensor).all())
        if not finite:
            return name
    return None


def _check_checksums(manifest: dict[str, Any], weights: bytes, where: str) -> None:
    """The manifest's ``weights_sha256`` and ``model_id`` (each when present) must be the weights file's hash."""
    digest = hashlib.sha256(weights).hexdigest()
    recorded = manifest.get("weights_sha256")
    if recorded is not None:
        if not isinstance(recorded, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", recorded):
            raise WeightsError(f"{where}: {MANIFEST_FILE}: weights_sha256 must be 64 hexadecimal digits, "
                               f"got {recorded!r}")
        if recorded.lower() != digest:
            raise WeightsError(f"{where}: {WEIGHTS_FILE} is not the file the manifest's weights_sha256 names "
                               f"(recorded {recorded.lower()[:16]}..., file {digest[:16]}...): damaged or replaced "
                               "weights; export or download them again")
    model_id = manifest.get("model_id")
    if model_id is not None and model_id != digest[:16]:
        raise WeightsError(f"{where}: {MANIFEST_FILE}: model_id {model_id!r} is not the hash of {WEIGHTS_FILE} "
                           f"({digest[:16]}): damaged or replaced weights")


def export_model(model: torch.nn.Module, out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``out_dir/model.safetensors`` then ``out_dir/manifest.json`` (each atomically, fsync).

    The manifest is validated first (``inference.manifest.validate_manifest``) and written with
    ``weights_sha256`` and ``model_id`` set to the weights' hash. Weights holding NaN or inf are
    refused (WeightsError naming the tensor) before anything is written. Any architecture of
    ``inference.architectures``; a ``DistributedDataParallel`` or compiled wrapper is unwrapped.
    """
    from safetensors.torch import save as safetensors_save

    out_dir = Path(out_dir)
    validate_manifest(manifest, str(out_dir / MANIFEST_FILE))
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    bad = _non_finite_tensor(tensors)
    if bad is not None:
        raise WeightsError(f"{out_dir}: tensor {bad!r} holds non-finite values (NaN or inf); "
                           "the training diverged, nothing was exported")
    data = safetensors_save(tensors, metadata={"format": "pt", "planessl": WEIGHTS_FORMAT})
    manifest = {**manifest, "weights_sha256": hashlib.sha256(data).hexdigest(), "model_id": _model_id(data)}
    atomic_write_bytes(out_dir / WEIGHTS_FILE, data, fsync=True)
    atomic_write_bytes(out_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"), fsync=True)
    return out_dir


#: The name training code exports under (every task).
export_weights = export_model


def read_weights_pair(path: Path) -> tuple[bytes, bytes, str]:
    """(weights bytes, manifest bytes, description) from a directory or a .zip archive."""
    if path.is_dir():
        weights, manifest = path / WEIGHTS_FILE, path / MANIFEST_FILE
        for f in (manifest, weights):
            if not f.is_file():
                raise WeightsError(f"{path}: no {f.name} in the weights directory")
        return weights.read_bytes(), manifest.read_bytes(), str(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            found: dict[str, str] = {}
            for wanted in (WEIGHTS_FILE, MANIFEST_FILE):
                matches = [n for n in names if n == wanted or n.endswith("/" + wanted)]
                if len(matches) != 1:
                    what = "no" if not matches else "more than one"
                    raise WeightsError(f"{path}: {what} {wanted} in the archive")
                found[wanted] = matches[0]
            return zf.read(found[WEIGHTS_FILE]), zf.read(found[MANIFEST_FILE]), str(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file or directory")
    raise WeightsError(f"{path}: expected a weights directory or a .zip archive")


def read_validated(path: str | Path, expect_task: str | Sequence[str] | None = None
                   ) -> tuple[bytes, ValidatedManifest, str]:
    """``(weights file bytes, validated manifest, description)``: the manifest read as JSON and validated
    (``validate_manifest`` with ``expect_task``) and the weights' checksums checked; WeightsError names the file.
    The first steps of every loader (:func:`load_validated`, ``inference.unet_numpy.load_numpy_unet``)."""
    weights, manifest_bytes, where = read_weights_pair(Path(path))
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{where}: {MANIFEST_FILE} is not valid JSON ({exc})") from exc
    validated = validate_manifest(manifest, f"{where}: {MANIFEST_FILE}", expect_task)
    _check_checksums(manifest, weights, where)
    return weights, validated, where


def load_validated(path: str | Path, device: str | torch.device = "cpu",
                   expect_task: str | Sequence[str] | None = None) -> tuple[torch.nn.Module, ValidatedManifest]:
    """``(model in eval mode on device, validated manifest)`` from a weights directory or ``.zip``.

    The manifest is validated once (``validate_manifest`` with ``expect_task``), the network its
    architecture names is built and the tensors are loaded into it strictly; never unpickles.
    The manifest gets ``model_id`` (the weights' hash) when it has none. WeightsError names the file.
    """
    import torch
    from safetensors.torch import load as safetensors_load

    weights, validated, where = read_validated(path, expect_task)
    manifest = validated.manifest
    try:
        state = safetensors_load(weights)
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{where}: {WEIGHTS_FILE} is not a readable safetensors file ({exc})") from exc
    # the architecture on the meta device (no memory) is checked against the file's tensors first, so
    # a manifest naming a huge network is refused before anything is allocated
    try:
        with torch.device("meta"):
            wanted = validated.architecture.build(validated.config).state_dict()
    except (RuntimeError, ValueError, OverflowError) as exc:  # e.g. a size that overflows
        raise WeightsError(f"{where}: {MANIFEST_FILE}: architecture.config describes a network that cannot be "
                           f"built ({' '.join(str(exc).split())[:200]})") from exc
    expected = set(wanted)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(
            f"{where}: {WEIGHTS_FILE} does not match architecture.config "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    wrong = [f"{k} {tuple(state[k].shape)} {state[k].dtype} (expected {tuple(wanted[k].shape)} {wanted[k].dtype})"
             for k in sorted(state) if state[k].shape != wanted[k].shape or state[k].dtype != wanted[k].dtype]
    if wrong:
        raise WeightsError(f"{where}: {WEIGHTS_FILE} does not match architecture.config (tensor {wrong[0]}"
                           f"{f' and {len(wrong) - 1} more' if len(wrong) > 1 else ''})")
    bad = _non_finite_tensor(state)
    if bad is not None:
        raise WeightsError(f"{where}: {WEIGHTS_FILE}: tensor {bad!r} holds non-finite values (NaN or inf); "
                           "damaged weights are not used")
    model = validated.architecture.build(validated.config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{where}: {WEIGHTS_FILE} does not fit architecture.config ({exc})") from exc
    manifest.setdefault("model_id", _model_id(weights))
    return model.to(device).eval(), validated


def load_model(path: str | Path, device: str | torch.device = "cpu",
               expect_task: str | Sequence[str] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(model in eval mode, manifest)`` of any exported architecture and task (see :func:`load_validated`)."""
    model, validated = load_validated(path, device, expect_task)
    return model, validated.manifest


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(PlaneSSLNet in eval mode, manifest)`` of pretraining or segmentation weights."""
    return load_model(path, device, expect_task=(*PRETEXT_TASKS, "seg"))


def zip_weights(directory: str | Path, archive: str | Path) -> Path:
    """Pack an exported weights directory into a ``.zip`` (stored flat; written atomically)."""
    directory, archive = Path(directory), Path(archive)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in (MANIFEST_FILE, WEIGHTS_FILE):
            zf.write(directory / name, arcname=name)
    return atomic_write_bytes(archive, buffer.getvalue())
