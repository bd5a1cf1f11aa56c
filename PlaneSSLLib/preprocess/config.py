"""Preparation settings: spacing, size, intensity normalisation, storage type; their stable hash.

Also the one bounded YAML reader of every config file (:func:`load_yaml_bounded`, used by the
training configs too): a YAML alias bomb or self-reference is a ConfigError, never expanded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .resample import NORMALISATIONS

__all__ = ["PrepareConfig", "ConfigError", "load_prepare_config", "MAX_CONFIG_VALUES", "MAX_CONFIG_DEPTH",
           "check_config_size", "load_yaml_bounded", "read_config_file", "read_mapping_file"]

_DTYPES = ("float16", "float32")


#: Most values (mappings, lists and scalars) a config may hold once its YAML aliases are expanded, and
#: its deepest nesting; a real config holds a few hundred values, four levels deep.
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 32


def check_config_size(value: Any, source: str) -> None:
    """ConfigError naming ``source`` when ``value``, with every YAML alias expanded, holds more than
    :data:`MAX_CONFIG_VALUES` values or nests deeper than :data:`MAX_CONFIG_DEPTH` (an alias bomb, or
    an alias that refers to itself). Visits at most that many values, so a bomb costs nothing."""
    count, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError([f"{source}: expands to more than {MAX_CONFIG_VALUES} values once its YAML "
                               "aliases (*name) are expanded; refused (an alias bomb?)"])
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError([f"{source}: nested deeper than {MAX_CONFIG_DEPTH} levels (a YAML alias that "
                               "refers to itself?); refused"])
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple, set)):
            stack.extend((v, depth + 1) for v in node)


def load_yaml_bounded(text: str, source: str) -> Any:
    """``yaml.safe_load`` whose result is checked by :func:`check_config_size` (every config file and
    ``--set`` value is read through it); ConfigError naming ``source``. YAML syntax errors propagate."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError([f"{source}: nested too deeply to read"]) from None
    check_config_size(value, source)
    return value


def read_config_file(path: str | Path) -> Any:
    """The parsed YAML (or JSON, a subset) of a config file, read by :func:`load_yaml_bounded`;
    :class:`ConfigError` naming the file when it is missing, unreadable or not valid YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: no such config file"])
    try:
        return load_yaml_bounded(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read ({exc})"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML/JSON ({' '.join(str(exc).split())})"]) from None


def read_mapping_file(path: str | Path, what: str = "the config") -> dict[str, Any]:
    """:func:`read_config_file` that must hold a mapping (an empty file is an empty one)."""
    data = read_config_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: {what} must be a mapping, got {type(data).__name__}"])
    return data


@dataclass(frozen=True)
class PrepareConfig:
    """How slices are prepared (docs/conventions.md, 'Cache layout'; reference values are the defaults).

    Attributes:
        spacing_mm: target in-plane pixel spacing, square (reference 1.26 mm).
        size_px: side of the square crop/pad around the image centre (reference 224).
        normalisation: "minmax" (clip to percentiles, scale to [0, 1]) or "zscore" (clip, z-score).
        clip_percentiles: (low, high) percentiles of each image to clip to before normalising.
        dtype: storage type of the image array ("float16" or "float32").
        antialias: Gaussian prefilter when downsampling.
        anatomy: "auto", "heart" or "knee" (passed to view identification).
        overrides: series folder name / description / key → view label.
        sax_orientation: "stored" (the file's in-plane orientation) or "canonical" (segmentation's SAX slices
            in the standard display orientation: ``preprocess.resample.canonical_sax_plane``).
    """

    spacing_mm: float = 1.26
    size_px: int = 224
    normalisation: str = "minmax"
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    dtype: str = "float16"
    antialias: bool = True
    anatomy: str = "auto"
    overrides: dict[str, str] = field(default_factory=dict)
    sax_orientation: str = "stored"

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip_percentiles", tuple(float(v) for v in self.clip_percentiles))
        object.__setattr__(self, "overrides", {str(k): str(v) for k, v in dict(self.overrides).items()})
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting."""
        if not (isinstance(self.spacing_mm, int | float) and 0.05 <= float(self.spacing_mm) <= 20.0):
            raise ConfigError(f"spacing_mm must be between 0.05 and 20 mm, got {self.spacing_mm!r}")
        if not (isinstance(self.size_px, int) and 8 <= self.size_px <= 2048):
            raise ConfigError(f"size_px must be an integer between 8 and 2048, got {self.size_px!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {self.normalisation!r}")
        lo, hi = self.clip_percentiles if len(self.clip_percentiles) == 2 else (None, None)
        if lo is None or not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(
                f"clip_percentiles must be (low, high) with 0 <= low < high <= 100, got {self.clip_percentiles!r}"
            )
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.anatomy not in ("auto", "heart", "knee"):
            raise ConfigError(f"anatomy must be auto, heart or knee, got {self.anatomy!r}")
        if self.sax_orientation not in ("stored", "canonical"):
            raise ConfigError(f"sax_orientation must be stored or canonical, got {self.sax_orientation!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clip_percentiles"] = list(self.clip_percentiles)
        d["spacing_mm"] = float(self.spacing_mm)
        if self.sax_orientation == "stored":  # the default: absent, so caches keyed before it keep their keys
            del d["sax_orientation"]
        return d

    def digest(self) -> str:
        """sha256 of the canonical JSON of every setting (part of the cache key)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def normalisation_record(self) -> dict[str, Any]:
        """What a model manifest needs to reproduce the input intensities."""
        lo, hi = self.clip_percentiles
        how = "scaled to [0, 1]" if self.normalisation == "minmax" else "z-scored (clipped image mean/std)"
        return {
            "method": self.normalisation,
            "clip_percentiles": [lo, hi],
            "per": "image",
            "description": f"per image: clip to the {lo:g}th-{hi:g}th percentiles, then {how}; "
            "outside the field of view: the normalised low clip value",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> PrepareConfig:
        """From a mapping (unknown keys refused); ConfigError names ``source``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown preparation settings {unknown} (known: {', '.join(sorted(known))})")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {exc}") from None


def load_prepare_config(path: Path) -> PrepareConfig:
    """Settings from a YAML or JSON file: the top-level mapping, or its ``prepare`` section."""
    data = read_mapping_file(path)
    if isinstance(data.get("prepare"), dict):
        data = data["prepare"]
    return PrepareConfig.from_dict(data, source=str(path))
