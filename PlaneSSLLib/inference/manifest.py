"""The manifest of exported weights: what it holds, how it is built, and one validation for every loader.

A weights folder (or ``.zip``) holds ``model.safetensors`` and ``manifest.json``. The manifest
carries every key of :data:`MANIFEST_KEYS`: the format and its version, the ``architecture``
(``{"name", "config"}``, one of ``inference.architectures.ARCHITECTURES``), the ``task``, the
views and channel names, the ``input`` (channels, ``size_hw``, ``spacing_mm``), the intensity
normalisation, label names and terminology, the training config, the data fingerprint (a string
from the data layer, passed through), metrics and package versions. An ``acl`` manifest also
carries its ``decision``; exported weights carry ``weights_sha256`` (sha256 of ``model.safetensors``)
and ``model_id`` (its first 16 hex digits), checked against the file by ``inference.weights``.

:data:`TASKS` is the one table of per-task checks (pretext ``lines``/``location``/``both``,
``seg``, ``acl``): the architecture, the keys the task needs and their values.
:func:`validate_manifest` applies it; every loader (``inference.weights.load_model``, the
Slicer model folders) goes through it, and its messages name the file and the key.

Only the standard library and the model classes are used here (no training stack).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PlaneSSLError
from ..geometry.planes import MIN_PIXEL_SPACING_MM
from ..models.configs import ExamClassifierConfig, UNetConfig
from ..preprocess.resample import NORMALISATIONS
from .architectures import ARCHITECTURES, Architecture, architecture_record, config_in_channels

__all__ = [
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "MANIFEST_KEYS",
    "ACL_LABELS",
    "TASKS",
    "PRETEXT_TASKS",
    "TaskSpec",
    "InputPreparation",
    "ValidatedManifest",
    "WeightsError",
    "build_manifest",
    "package_versions",
    "validate_manifest",
]

WEIGHTS_FORMAT = "planessl-weights"
WEIGHTS_FORMAT_VERSION = 1
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
#: Label names of an ACL-tear classifier (negative, positive).
ACL_LABELS = ["intact", "torn"]
PRETEXT_TASKS = ("lines", "location", "both")
#: Largest input side (pixels) and spacing (mm) a manifest may declare.
MAX_SIZE_PX = 4096
MAX_SPACING_MM = 100.0


class WeightsError(PlaneSSLError, ValueError):
    """Exported weights that cannot be used; the message names the file and the problem."""


# ----------------------------------------------------------------------------- value checks
def _require(ok: bool, source: str, key: str, problem: str) -> None:
    if not ok:
        raise WeightsError(f"{source}: {key} {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_seq(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _is_str_list(value: Any) -> bool:
    return _is_seq(value) and all(isinstance(v, str) and v for v in value)


def _check_input(manifest: dict[str, Any], config: Any, source: str) -> None:
    inp = manifest["input"]
    _require(isinstance(inp, dict) and {"size_hw", "spacing_mm"} <= set(inp), source, "input",
             "must hold size_hw and spacing_mm")
    size, spacing = inp["size_hw"], inp["spacing_mm"]
    _require(_is_seq(size) and len(size) == 2 and all(_is_int(s) and 0 < s <= MAX_SIZE_PX for s in size),
             source, "input.size_hw", f"must be two integers in 1..{MAX_SIZE_PX}, got {size!r}")
    _require(_is_seq(spacing) and len(spacing) == 2
             and all(_is_number(s) and MIN_PIXEL_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing),
             source, "input.spacing_mm",
             f"must be two finite numbers in [{MIN_PIXEL_SPACING_MM:g}, {MAX_SPACING_MM:g}] mm, got {spacing!r}")
    _require(inp.get("sax_orientation", "stored") in ("stored", "canonical"), source, "input.sax_orientation",
             f"must be stored or canonical, got {inp.get('sax_orientation')!r}")
    if "channels" in inp:
        _require(inp["channels"] == config_in_channels(config), source, "input.channels",
                 f"is {inp['channels']!r}, the architecture reads {config_in_channels(config)}")
    norm = manifest["intensity_normalisation"]
    _require(norm is None or isinstance(norm, dict), source, "intensity_normalisation", "must be an object or null")
    method = (norm or {}).get("method", "minmax")
    _require(method in NORMALISATIONS, source, "intensity_normalisation.method",
             f"must be one of {', '.join(NORMALISATIONS)}, got {method!r}")
    clip = (norm or {}).get("clip_percentiles", [0.0, 100.0])
    _require(_is_seq(clip) and len(clip) == 2 and all(_is_number(c) for c in clip)
             and 0.0 <= clip[0] < clip[1] <= 100.0, source, "intensity_normalisation.clip_percentiles",
             f"must be two percentiles 0 <= low < high <= 100, got {clip!r}")


def _check_square_input(manifest: dict[str, Any], source: str) -> None:
    (h, w), (sr, sc) = manifest["input"]["size_hw"], manifest["input"]["spacing_mm"]
    _require(h == w and abs(sr - sc) <= 1e-9, source, "input",
             f"must be square with square pixels, got {h}x{w} at {sr}x{sc} mm")


def _check_line_heatmaps(manifest: dict[str, Any], config: UNetConfig, source: str) -> None:
    channels = manifest["channels"]
    _require(config.line_channels > 0, source, "architecture.config.line_channels",
             "is 0: the network has no line heatmaps")
    _require(_is_str_list(channels) and len(channels) == config.line_channels, source, "channels",
             f"must name the {config.line_channels} heatmap channels (partner views), got {channels!r}")
    views = manifest["views"]
    _require(views is None or _is_str_list(views)
             or (isinstance(views, dict) and all(_is_str_list(p) for p in views.values())),
             source, "views", f"must map each view to its partner views, got {views!r}")
    heads = config.head_views
    _require(not heads or isinstance(views, dict) and set(heads) <= set(views), source,
             "architecture.config.head_views", f"{list(heads)} must be input views of 'views' ({views!r})")


def _check_location(manifest: dict[str, Any], config: UNetConfig, source: str) -> None:
    _require(config.location_head, source, "architecture.config.location_head",
             "is false: a location network needs its location head")


def _check_terminology(record: Any, n_classes: int, source: str) -> None:
    _require(isinstance(record, dict) and isinstance(record.get("labels"), dict), source, "terminology",
             "must be an object with 'labels' (one SNOMED CT code per label value) in a segmentation manifest")
    wanted = {str(v) for v in range(1, n_classes)}
    labels = record["labels"]
    _require(set(labels) == wanted, source, "terminology.labels",
             f"must name label values {', '.join(sorted(wanted))}, got {', '.join(sorted(labels)) or 'none'}")
    for value, entry in labels.items():
        key = f"terminology.labels.{value}"
        _require(isinstance(entry, dict) and all(isinstance(entry.get(k), str) and entry[k]
                                                 for k in ("name", "scheme", "value", "meaning")),
                 source, key, "must hold name, scheme, value and meaning")
        colour = entry.get("color_rgb")
        _require(colour is None or (_is_seq(colour) and len(colour) == 3
                                    and all(_is_int(c) and 0 <= c <= 255 for c in colour)),
                 source, f"{key}.color_rgb", f"must be three integers 0..255, got {colour!r}")
    category = record.get("category")
    _require(category is None or (isinstance(category, dict)
                                  and all(isinstance(category.get(k), str) for k in ("scheme", "value", "meaning"))),
             source, "terminology.category", "must hold scheme, value and meaning")


def _check_seg(manifest: dict[str, Any], config: UNetConfig, source: str) -> None:
    _require(not config.head_views, source, "architecture.config.head_views",
             "must be empty: a segmentation network has one head")
    names = manifest["label_names"]
    _require(config.line_channels >= 2, source, "architecture.config.line_channels",
             f"is {config.line_channels}: a segmentation network has one output per class (>= 2)")
    _require(_is_str_list(names) and len(names) == config.line_channels, source, "label_names",
             f"{names!r} do not match the network's {config.line_channels} output channels")
    channels = manifest["channels"]
    _require(channels in (None, []) or (_is_seq(channels) and list(channels) == list(names)), source, "channels",
             f"must be the label names {names!r} (one per output channel) or empty, got {channels!r}")
    _check_square_input(manifest, source)
    _check_terminology(manifest["terminology"], config.line_channels, source)


def _check_acl(manifest: dict[str, Any], config: ExamClassifierConfig, source: str) -> None:
    _require(_is_seq(manifest["label_names"]) and list(manifest["label_names"]) == ACL_LABELS, source, "label_names",
             f"must be {ACL_LABELS!r}, got {manifest['label_names']!r}")
    decision = manifest.get("decision")
    _require(isinstance(decision, dict), source, "decision",
             "is missing: an ACL-tear manifest holds {'threshold', 'positive'}")
    threshold = decision.get("threshold")
    _require(_is_number(threshold) and 0.0 < threshold < 1.0, source, "decision.threshold",
             f"must be a number in (0, 1), got {threshold!r}")
    _require(decision.get("positive") == ACL_LABELS[1], source, "decision.positive",
             f"must be {ACL_LABELS[1]!r}, got {decision.get('positive')!r}")
    _check_square_input(manifest, source)


@dataclass(frozen=True)
class TaskSpec:
    """What a manifest of one task must be: its architecture and the checks of its keys."""

    architecture: str
    check: Callable[[dict[str, Any], Any, str], None]  #: (manifest, architecture config, source)
    description: str
    mismatch: str  #: what weights of another task are not, for messages


#: The one table of per-task manifest checks.
TASKS: dict[str, TaskSpec] = {
    "lines": TaskSpec("PlaneSSLNet", _check_line_heatmaps, "plane lines (pretraining)",
                      "have no line heatmaps (need 'lines' or 'both')"),
    "location": TaskSpec("PlaneSSLNet", _check_location, "slice location only (pretraining; no line heatmaps)",
                         "are not a slice-location network ('location')"),
    "both": TaskSpec("PlaneSSLNet", _check_line_heatmaps, "plane lines and location (pretraining)",
                     "have no line heatmaps (need 'lines' or 'both')"),
    "seg": TaskSpec("PlaneSSLNet", _check_seg, "cardiac segmentation ('planessl finetune seg')",
                    "are not a segmentation network ('seg')"),
    "acl": TaskSpec("PlaneSSLExamClassifier", _check_acl, "ACL-tear classification ('planessl finetune acl')",
                    "are not an exam classifier ('acl', PlaneSSLExamClassifier); pretraining weights cannot classify"),
}


# ----------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class InputPreparation:
    """How an image is prepared for the network, as in training (``preprocess.resample.prepare_image``)."""

    size_px: int
    spacing_mm: float
    normalisation: str
    clip_percentiles: tuple[float, float]
    #: SAX slices as stored, or resampled onto the standard display orientation (``preprocess.resample``)
    sax_orientation: str = "stored"


@dataclass(frozen=True)
class ValidatedManifest:
    """A manifest that passed :func:`validate_manifest`, with its task, architecture and config."""

    manifest: dict[str, Any]
    source: str
    task: str
    architecture: Architecture
    config: Any  #: the architecture's config dataclass (``UNetConfig`` or ``ExamClassifierConfig``)

    @property
    def preparation(self) -> InputPreparation:
        """Input size, spacing and intensity normalisation (first axis of ``size_hw``/``spacing_mm``)."""
        inp, norm = self.manifest["input"], self.manifest["intensity_normalisation"] or {}
        low, high = (float(v) for v in norm.get("clip_percentiles", (0.5, 99.5)))
        return InputPreparation(int(inp["size_hw"][0]), float(inp["spacing_mm"][0]),
                                str(norm.get("method", "minmax")), (low, high),
                                str(inp.get("sax_orientation", "stored")))


def _check_format(manifest: Any, source: str) -> None:
    if not isinstance(manifest, dict):
        raise WeightsError(f"{source}: expected a JSON object")
    if manifest.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{source}: format {manifest.get('format')!r} is not {WEIGHTS_FORMAT!r}")
    version = manifest.get("format_version")
    if not _is_int(version):
        raise WeightsError(f"{source}: format_version must be an integer, got {version!r}")
    if version > WEIGHTS_FORMAT_VERSION:
        raise WeightsError(
            f"{source}: format_version {version} is newer than this planessl reads ({WEIGHTS_FORMAT_VERSION}); "
            "upgrade planessl"
        )
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise WeightsError(f"{source}: missing key(s): {', '.join(missing)}")


def _expected_tasks(expect_task: str | Sequence[str] | None) -> tuple[str, ...]:
    expected = (expect_task,) if isinstance(expect_task, str) else tuple(expect_task or ())
    unknown = [t for t in expected if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(map(repr, unknown))} (known: {', '.join(TASKS)})")
    return expected


def _check_task(task: Any, expected: tuple[str, ...], source: str) -> TaskSpec:
    if not isinstance(task, str) or task not in TASKS:
        raise WeightsError(f"{source}: task {task!r} is not one of {', '.join(TASKS)}")
    if expected and task not in expected:
        phrases = {TASKS[t].mismatch for t in expected}
        why = phrases.pop() if len(phrases) == 1 else f"are not of task {' or '.join(map(repr, expected))}"
        raise WeightsError(f"{source}: weights of task {task!r} ({TASKS[task].description}) {why}")
    return TASKS[task]


def _architecture(manifest: dict[str, Any], spec: TaskSpec, source: str) -> tuple[Architecture, Any]:
    arch = manifest["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str) or not isinstance(arch.get("config"), dict):
        raise WeightsError(f"{source}: architecture must be {{'name': ..., 'config': {{...}}}}, got {arch!r}")
    if arch["name"] not in ARCHITECTURES:
        raise WeightsError(f"{source}: unknown architecture {arch['name']!r} (known: {', '.join(ARCHITECTURES)})")
    if arch["name"] != spec.architecture:
        raise WeightsError(f"{source}: architecture {arch['name']!r} does not serve task {manifest['task']!r} "
                           f"(expected {spec.architecture})")
    architecture = ARCHITECTURES[arch["name"]]
    try:
        return architecture, architecture.config_from_dict(arch["config"])
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{source}: invalid architecture.config ({exc})") from exc


def validate_manifest(manifest: Any, source: str = "manifest.json",
                      expect_task: str | Sequence[str] | None = None) -> ValidatedManifest:
    """Check a manifest against the format and the :data:`TASKS` table; WeightsError names ``source`` and the key.

    ``expect_task``: the task (or tasks) the caller can use; weights of another task are refused.
    """
    expected = _expected_tasks(expect_task)
    _check_format(manifest, source)
    spec = _check_task(manifest["task"], expected, source)
    architecture, config = _architecture(manifest, spec, source)
    _check_input(manifest, config, source)
    spec.check(manifest, config, source)
    return ValidatedManifest(manifest, source, manifest["task"], architecture, config)


# ----------------------------------------------------------------------------- building
def package_versions() -> dict[str, str]:
    """Versions of python, torch, numpy, safetensors and planessl."""
    import numpy
    import safetensors
    import torch

    from PlaneSSLLib import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "safetensors": safetensors.__version__,
        "planessl": __version__,
    }


def build_manifest(
    model_config: UNetConfig | ExamClassifierConfig | None,
    task: str,
    *,
    architecture: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
    views: dict[str, list[str]] | list[str] | None = None,
    channels: list[str] | None = None,
    input_size_hw: tuple[int, int] | list[int],
    input_spacing_mm: tuple[float, float] | list[float] | float,
    input_sax_orientation: str = "stored",
    intensity_normalisation: dict[str, Any] | None = None,
    label_names: list[str] | None = None,
    terminology: dict[str, Any] | None = None,
    training_config: dict[str, Any] | None = None,
    data_fingerprint: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest (JSON-able) of weights for ``task``; see the module docstring.

    ``architecture`` (``{"name", "config"}``) defaults to the record of ``model_config`` (a
    ``UNetConfig`` → ``PlaneSSLNet``, an ``ExamClassifierConfig`` → ``PlaneSSLExamClassifier``);
    ``decision`` (``{"threshold", "positive"}``) is required by an ``acl`` manifest. The result is
    checked when exported (``inference.weights.export_model``).
    """
    if architecture is None:
        if model_config is None:
            raise ValueError("build_manifest needs a model config or an architecture record")
        architecture = architecture_record(model_config)
    in_channels = config_in_channels(model_config) if model_config is not None else _record_in_channels(architecture)
    if isinstance(input_spacing_mm, (int, float)):
        input_spacing_mm = (float(input_spacing_mm), float(input_spacing_mm))
    manifest = {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "architecture": {"name": architecture["name"], "config": dict(architecture["config"])},
        "task": task,
        "views": views,
        "channels": list(channels or []),
        "input": {
            "channels": in_channels,
            "size_hw": [int(s) for s in input_size_hw],
            "spacing_mm": [float(s) for s in input_spacing_mm],
            # canonical: SAX slices resampled onto the standard display orientation (absent: as stored)
            **({"sax_orientation": input_sax_orientation} if input_sax_orientation != "stored" else {}),
        },
        "intensity_normalisation": intensity_normalisation,
        "label_names": label_names,
        "terminology": terminology,
        "training_config": training_config,
        "data_fingerprint": data_fingerprint,
        "metrics": metrics or {},
        "package_versions": package_versions(),
    }
    if decision is not None:
        manifest["decision"] = dict(decision)
    return manifest


def _record_in_channels(architecture: dict[str, Any]) -> int:
    config = architecture.get("config", {})
    return int(config.get("encoder", config).get("in_channels", 1))
