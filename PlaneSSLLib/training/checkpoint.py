"""Resumable training checkpoints without pickle: one ``.safetensors`` file + a JSON sidecar.

Layout of ``NAME.safetensors`` (written atomically: temporary file, fsync, ``os.replace``, fsync
of the directory, so a SIGKILL at any moment leaves either the old or the new checkpoint):

- tensors ``model.<key>`` (model state dict), ``optim.<param id>.<key>`` (optimiser state
  tensors), ``rng.torch`` and ``rng.cuda.<i>`` (RNG states, uint8);
- header metadata ``planessl_checkpoint`` = JSON of the non-tensor state: optimiser
  ``param_groups`` and non-tensor per-parameter state, scheduler and GradScaler state dicts,
  Python ``random`` and numpy RNG states, and the caller's ``train_state`` (epoch, step, best
  metric, history, config and config hash, ...).

``NAME.json`` beside it is a readable copy of that JSON, written after the tensor file; loading
reads only the ``.safetensors`` file (the single source of truth), so the pair can never be
inconsistent. Nothing here calls ``torch.load`` or ``pickle``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from ..atomic import atomic_write_bytes
from ..errors import PlaneSSLError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "restore_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "checkpoint_path",
]

CHECKPOINT_FORMAT = "planessl-checkpoint"
CHECKPOINT_VERSION = 1
_META_KEY = "planessl_checkpoint"


class CheckpointError(PlaneSSLError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model/optimiser; names the file."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors by name and the JSON state."""

    path: Path
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]

    @property
    def train_state(self) -> dict[str, Any]:
        return self.state["train_state"]

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}


def checkpoint_path(directory: str | Path, name: str) -> Path:
    """``directory/name.safetensors``."""
    return Path(directory) / f"{name}.safetensors"


def _to_jsonable(value: Any, where: str) -> Any:
    """Plain JSON types; tuples become lists; tensors are rejected (they belong in the tensor file)."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 1 and value.dtype in (torch.int64, torch.int32):
            return int(value.item())
        raise CheckpointError(f"tensor in the JSON part of a checkpoint at {where}")
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"cannot store {type(value).__name__} at {where} in a checkpoint")


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch (CPU and CUDA) RNG states as uint8 tensors; Python and numpy states as JSON."""
    tensors = {"rng.torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state.clone()
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global state others use
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only where the devices exist)."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002


def _split_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                other.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": _to_jsonable(sd["param_groups"], "optimizer.param_groups"),
                     "state": _to_jsonable(other, "optimizer.state")}


def _join_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, extra in meta["state"].items():
        state.setdefault(int(pid), {}).update(extra)
    groups = []
    for saved, current in zip(meta["param_groups"], optimizer.param_groups, strict=False):
        group = dict(saved)
        for key, value in group.items():  # JSON turned tuples (e.g. Adam's betas) into lists
            if isinstance(current.get(key), tuple) and isinstance(value, list):
                group[key] = tuple(value)
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    train_state: dict[str, Any] | None = None,
    sidecar: bool = True,
) -> Path:
    """Write a complete, resumable checkpoint atomically to ``path`` (a ``.safetensors`` file).

    ``model`` must be the bare module (not the DDP/compiled wrapper). ``train_state`` is any
    JSON-able mapping (epoch, step, best metric, history, config, ...).
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    state: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
    if optimizer is not None:
        opt_tensors, state["optimizer"] = _split_optimizer(optimizer)
        tensors.update(opt_tensors)
    state["scheduler"] = _to_jsonable(scheduler.state_dict(), "scheduler") if scheduler is not None else None
    state["scaler"] = _to_jsonable(scaler.state_dict(), "scaler") if scaler is not None else None
    rng_tensors, state["rng"] = capture_rng_state()
    tensors.update(rng_tensors)
    state["train_state"] = _to_jsonable(train_state or {}, "train_state")
    state_json = json.dumps(state, allow_nan=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    data = safetensors_save(tensors, metadata={_META_KEY: state_json, "format": "pt"})
    atomic_write_bytes(path, data, fsync=True)
    if sidecar:
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(state, indent=1, allow_nan=True).encode(), fsync=True)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors only, no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if _META_KEY not in meta:
        raise CheckpointError(f"{path}: not a PlaneSSL checkpoint (no '{_META_KEY}' metadata)")
    try:
        state = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({exc})") from exc
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    if int(state.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')} is newer than this planessl understands "
            f"({CHECKPOINT_VERSION}); upgrade planessl"
        )
    return Checkpoint(path=path, tensors=tensors, state=state)


def restore_checkpoint(
    checkpoint: Checkpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    rng: bool = True,
) -> dict[str, Any]:
    """Load model, optimiser, scheduler, scaler and RNG states; returns the ``train_state``."""
    try:
        model.load_state_dict(checkpoint.model_state(), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint.path}: does not fit this model ({exc})") from exc
    state = checkpoint.state
    if optimizer is not None:
        if state.get("optimizer") is None:
            raise CheckpointError(f"{checkpoint.path}: holds no optimiser state")
        try:
            optimizer.load_state_dict(_join_optimizer(optimizer, checkpoint.tensors, state["optimizer"]))
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{checkpoint.path}: optimiser state does not fit ({exc})") from exc
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if rng:
        restore_rng_state(checkpoint.tensors, state["rng"])
    return checkpoint.train_state
