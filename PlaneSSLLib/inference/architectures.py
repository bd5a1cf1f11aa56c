"""The networks an exported manifest can name: architecture name → config parser and model class.

A manifest's ``architecture`` is ``{"name": NAME, "config": {...}}``; ``ARCHITECTURES[NAME]``
turns the config dict back into its config dataclass (validated) and builds the empty network
the weights are loaded into. ``architecture_record(config)`` is the inverse, for export.
Reading and checking a config imports no torch; ``build`` imports the network's module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import TYPE_CHECKING, Any

from ..models.configs import ExamClassifierConfig, UNetConfig

if TYPE_CHECKING:
    import torch

__all__ = ["Architecture", "ARCHITECTURES", "architecture_record", "check_field_types", "config_in_channels"]


def check_field_types(config_type: type, data: Any, prefix: str = "") -> None:
    """TypeError naming the first field of ``data`` that is unknown to the dataclass ``config_type``
    or whose JSON type differs from its default's (int, float, bool, str; a bool is not an int)."""
    if not isinstance(data, dict):
        raise TypeError(f"{prefix.rstrip('.') or 'config'} must be an object, got {data!r}")
    fields = config_type.__dataclass_fields__
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TypeError(f"unknown field(s): {', '.join(prefix + k for k in unknown)}")
    for name, value in data.items():
        f = fields[name]
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        elif isinstance(default, tuple):
            ok, kind = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value), "a list of names"
        else:
            continue
        if not ok:
            raise TypeError(f"{prefix}{name} must be {kind}, got {value!r}")


def _unet_config(data: dict[str, Any]) -> UNetConfig:
    """A validated :class:`UNetConfig`; TypeError/ValueError naming an unknown or bad field."""
    check_field_types(UNetConfig, data)
    config = UNetConfig(**{k: tuple(v) if k == "head_views" else v for k, v in data.items()})
    config.validate()
    return config


def _exam_classifier_config(data: dict[str, Any]) -> ExamClassifierConfig:
    """A validated :class:`ExamClassifierConfig` (its encoder's fields checked too)."""
    check_field_types(ExamClassifierConfig, data)
    check_field_types(UNetConfig, data.get("encoder", {}), "encoder.")
    return ExamClassifierConfig.from_dict(data)


@dataclass(frozen=True)
class Architecture:
    """One exportable network: its manifest name, config class, parser and model class."""

    name: str
    config_type: type
    config_from_dict: Callable[[dict[str, Any]], Any]  #: raises TypeError/ValueError for a bad config
    build: Callable[[Any], torch.nn.Module]


def _build_planessl_net(config: UNetConfig) -> torch.nn.Module:
    from ..models.unet import PlaneSSLNet

    return PlaneSSLNet(config)


def _build_exam_classifier(config: ExamClassifierConfig) -> torch.nn.Module:
    from ..models.exam_classifier import ExamClassifier

    return ExamClassifier(config)


ARCHITECTURES: dict[str, Architecture] = {
    "PlaneSSLNet": Architecture("PlaneSSLNet", UNetConfig, _unet_config, _build_planessl_net),
    "PlaneSSLExamClassifier": Architecture("PlaneSSLExamClassifier", ExamClassifierConfig,
                                           _exam_classifier_config, _build_exam_classifier),
}


def architecture_record(config: UNetConfig | ExamClassifierConfig) -> dict[str, Any]:
    """The manifest's ``architecture`` for a model config: ``{"name", "config"}``."""
    for arch in ARCHITECTURES.values():
        if isinstance(config, arch.config_type):
            return {"name": arch.name, "config": config.to_dict()}
    raise TypeError(f"no exportable architecture has a config of type {type(config).__name__}")


def config_in_channels(config: UNetConfig | ExamClassifierConfig) -> int:
    """Image channels the network reads (its encoder's ``in_channels``)."""
    return int(getattr(config, "encoder", config).in_channels)
