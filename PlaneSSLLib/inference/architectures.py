"""The networks an exported manifest can name: architecture name → config parser and model class.

A manifest's ``architecture`` is ``{"name": NAME, "config": {...}}``; ``ARCHITECTURES[NAME]``
turns the config dict back into its config dataclass (validated) and builds the empty network
the weights are loaded into. ``architecture_record(config)`` is the inverse, for export.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..models import PlaneSSLNet, UNetConfig
from ..models.exam_classifier import ExamClassifier, ExamClassifierConfig

__all__ = ["Architecture", "ARCHITECTURES", "architecture_record", "config_in_channels"]


def _unet_config(data: dict[str, Any]) -> UNetConfig:
    """A validated :class:`UNetConfig`; TypeError/ValueError naming an unknown or bad field."""
    unknown = sorted(set(data) - set(UNetConfig.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unknown field(s): {', '.join(unknown)}")
    config = UNetConfig(**data)
    config.validate()
    return config


@dataclass(frozen=True)
class Architecture:
    """One exportable network: its manifest name, config class, parser and model class."""

    name: str
    config_type: type
    config_from_dict: Callable[[dict[str, Any]], Any]  #: raises TypeError/ValueError for a bad config
    build: Callable[[Any], torch.nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    "PlaneSSLNet": Architecture("PlaneSSLNet", UNetConfig, _unet_config, PlaneSSLNet),
    "PlaneSSLExamClassifier": Architecture("PlaneSSLExamClassifier", ExamClassifierConfig,
                                           ExamClassifierConfig.from_dict, ExamClassifier),
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
