"""Pretraining: configuration, the training loop, DDP, checkpoints, signals, progress and export.

Entry points: :func:`load_config` -> :func:`train` (``planessl pretrain`` wraps both);
:func:`load_exported` reads exported weights (``model.safetensors`` + ``manifest.json``).
Submodules are small and named for what they hold; nothing here reads or writes pickle.
"""

from ..inference.weights import WeightsError, build_manifest, export_weights, load_exported
from .config import ConfigError, PretrainConfig, config_from_dict, load_config, parse_overrides, save_config
from .signals import GracefulStop, TrainingInterrupted

__all__ = [
    "ConfigError",
    "GracefulStop",
    "PretrainConfig",
    "TrainingInterrupted",
    "WeightsError",
    "build_manifest",
    "config_from_dict",
    "export_weights",
    "load_config",
    "load_exported",
    "parse_overrides",
    "save_config",
]
