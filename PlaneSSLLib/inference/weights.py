"""Exported weights: ``model.safetensors`` + ``manifest.json`` in a directory or a ``.zip`` archive.

This is the contract of DESIGN.md section 3. The manifest holds the format version, the
architecture config, the task, the views and channel names, input spacing and size, intensity
normalisation, label names (none for the pretext tasks), the training config, the data
fingerprint (a string from the data layer, passed through), metrics and package versions.

Only torch, safetensors and the standard library are used here: the inference side (the Slicer
extension) loads weights without the training stack. Loading never unpickles.
"""

from __future__ import annotations

import io
import json
import platform
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from ..atomic import atomic_write_bytes
from ..errors import PlaneSSLError
from ..models import PlaneSSLNet, UNetConfig

__all__ = [
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "MANIFEST_KEYS",
    "WeightsError",
    "build_manifest",
    "validate_manifest",
    "export_weights",
    "load_exported",
    "load_weights",
    "package_versions",
    "read_weights_pair",
    "zip_weights",
]

WEIGHTS_FORMAT = "planessl-weights"
WEIGHTS_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"

#: Keys every manifest carries (values may be null where they do not apply, e.g. label_names).
MANIFEST_KEYS = (
    "format",
    "format_version",
    "architecture",
    "task",
    "views",
    "channels",
    "input",
    "intensity_normalisation",
    "label_names",
    "terminology",
    "training_config",
    "data_fingerprint",
    "metrics",
    "package_versions",
)


class WeightsError(PlaneSSLError, ValueError):
    """Exported weights that cannot be used; the message names the file and the problem."""


def package_versions() -> dict[str, str]:
    """Versions of python, torch, numpy, safetensors and planessl."""
    import numpy
    import safetensors

    from PlaneSSLLib import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "safetensors": safetensors.__version__,
        "planessl": __version__,
    }


def build_manifest(
    model_config: UNetConfig,
    task: str,
    *,
    views: dict[str, list[str]] | list[str] | None = None,
    channels: list[str] | None = None,
    input_size_hw: tuple[int, int] | list[int],
    input_spacing_mm: tuple[float, float] | list[float] | float,
    intensity_normalisation: dict[str, Any] | None = None,
    label_names: list[str] | None = None,
    terminology: dict[str, Any] | None = None,
    training_config: dict[str, Any] | None = None,
    data_fingerprint: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of DESIGN.md section 3 (JSON-able)."""
    if isinstance(input_spacing_mm, (int, float)):
        input_spacing_mm = (float(input_spacing_mm), float(input_spacing_mm))
    return {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "architecture": {"name": "PlaneSSLNet", "config": model_config.to_dict()},
        "task": task,
        "views": views,
        "channels": list(channels or []),
        "input": {
            "channels": model_config.in_channels,
            "size_hw": [int(s) for s in input_size_hw],
            "spacing_mm": [float(s) for s in input_spacing_mm],
        },
        "intensity_normalisation": intensity_normalisation,
        "label_names": label_names,
        "terminology": terminology,
        "training_config": training_config,
        "data_fingerprint": data_fingerprint,
        "metrics": metrics or {},
        "package_versions": package_versions(),
    }


def validate_manifest(manifest: Any, source: str = "manifest.json") -> UNetConfig:
    """Check format, version and required keys; returns the architecture's :class:`UNetConfig`."""
    if not isinstance(manifest, dict):
        raise WeightsError(f"{source}: expected a JSON object")
    if manifest.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{source}: format {manifest.get('format')!r} is not {WEIGHTS_FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise WeightsError(f"{source}: format_version must be an integer, got {version!r}")
    if version > WEIGHTS_FORMAT_VERSION:
        raise WeightsError(
            f"{source}: format_version {version} is newer than this planessl reads ({WEIGHTS_FORMAT_VERSION}); "
            "upgrade planessl"
        )
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise WeightsError(f"{source}: missing key(s): {', '.join(missing)}")
    arch = manifest["architecture"]
    if not isinstance(arch, dict) or arch.get("name") != "PlaneSSLNet" or not isinstance(arch.get("config"), dict):
        raise WeightsError(f"{source}: architecture must be {{'name': 'PlaneSSLNet', 'config': {{...}}}}")
    known = set(UNetConfig.__dataclass_fields__)
    unknown = sorted(set(arch["config"]) - known)
    if unknown:
        raise WeightsError(f"{source}: architecture.config has unknown field(s): {', '.join(unknown)}")
    try:
        cfg = UNetConfig(**arch["config"])
        cfg.validate()
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{source}: invalid architecture.config ({exc})") from exc
    inp = manifest["input"]
    if not isinstance(inp, dict) or not {"size_hw", "spacing_mm"} <= set(inp):
        raise WeightsError(f"{source}: input must hold size_hw and spacing_mm")
    return cfg


def export_weights(model: torch.nn.Module, out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/manifest.json`` (each atomically)."""
    out_dir = Path(out_dir)
    validate_manifest(manifest, str(out_dir / MANIFEST_FILE))
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    data = safetensors_save(tensors, metadata={"format": "pt", "planessl": WEIGHTS_FORMAT})
    atomic_write_bytes(out_dir / WEIGHTS_FILE, data, fsync=True)
    atomic_write_bytes(out_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"), fsync=True)
    return out_dir


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


def load_weights(
    path: str | Path,
    validate: Callable[[dict[str, Any], str], Any],
    build: Callable[[Any], torch.nn.Module],
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict[str, Any], bytes]:
    """``(model in eval mode, manifest, raw weights)`` of any exported architecture (never unpickles).

    ``validate(manifest, source)`` checks the manifest and returns the architecture config;
    ``build(config)`` makes the empty network the tensors are loaded into (strictly).
    """
    weights, manifest_bytes, where = read_weights_pair(Path(path))
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{where}: {MANIFEST_FILE} is not valid JSON ({exc})") from exc
    cfg = validate(manifest, f"{where}: {MANIFEST_FILE}")
    try:
        state = safetensors_load(weights)
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{where}: {WEIGHTS_FILE} is not a readable safetensors file ({exc})") from exc
    model = build(cfg)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(
            f"{where}: {WEIGHTS_FILE} does not match architecture.config "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{where}: {WEIGHTS_FILE} does not fit architecture.config ({exc})") from exc
    return model.to(device).eval(), manifest, weights


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> tuple[PlaneSSLNet, dict[str, Any]]:
    """``(PlaneSSLNet in eval mode, manifest)`` from a weights directory or ``.zip`` (never unpickles)."""
    model, manifest, _ = load_weights(path, validate_manifest, PlaneSSLNet, device)
    return model, manifest  # type: ignore[return-value]


def zip_weights(directory: str | Path, archive: str | Path) -> Path:
    """Pack an exported weights directory into a ``.zip`` (stored flat; written atomically)."""
    directory, archive = Path(directory), Path(archive)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in (MANIFEST_FILE, WEIGHTS_FILE):
            zf.write(directory / name, arcname=name)
    return atomic_write_bytes(archive, buffer.getvalue())
