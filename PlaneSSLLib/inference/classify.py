"""Exam classification at inference: exported ACL-tear weights in, a probability out.

Weights follow the contract of DESIGN.md section 3 (``model.safetensors`` + ``manifest.json`` in a
directory or ``.zip``; ``inference.weights``): the manifest carries every key of
``weights.MANIFEST_KEYS``, ``task`` "acl", ``label_names`` ["intact", "torn"], and an
``architecture`` of name ``PlaneSSLExamClassifier`` whose ``config`` is
``ExamClassifierConfig.to_dict()``, plus ``decision: {"threshold": t}`` and ``model_id`` (a hash
of the weights file, which names the model in predictions without naming anyone).

Only torch, numpy, safetensors and the data layer are used (no training stack); loading never
unpickles. ``predict_exam(exam_dir, weights)`` prepares the exam's SAG/COR/AX stacks exactly as
training did (spacing, size, intensity normalisation from the manifest) and returns the JSON
of ``planessl predict acl``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_save

from ..atomic import atomic_write_bytes
from ..data.config import PrepareConfig
from ..data.exams import Exam, exams_from_dicom
from ..models.exam_classifier import ExamClassifier, ExamClassifierConfig
from .weights import (
    MANIFEST_FILE,
    MANIFEST_KEYS,
    WEIGHTS_FILE,
    WEIGHTS_FORMAT,
    WEIGHTS_FORMAT_VERSION,
    WeightsError,
    load_weights,
)

__all__ = [
    "ARCHITECTURE",
    "ACL_LABELS",
    "export_classifier",
    "load_classifier",
    "validate_classifier_manifest",
    "exam_probability",
    "predict_exam",
    "prepare_config_from_manifest",
]

ARCHITECTURE = "PlaneSSLExamClassifier"
ACL_LABELS = ["intact", "torn"]


def validate_classifier_manifest(manifest: Any, source: str = MANIFEST_FILE) -> ExamClassifierConfig:
    """Check format, version, keys and architecture; returns the :class:`ExamClassifierConfig`."""
    if not isinstance(manifest, dict):
        raise WeightsError(f"{source}: expected a JSON object")
    if manifest.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{source}: format {manifest.get('format')!r} is not {WEIGHTS_FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > WEIGHTS_FORMAT_VERSION:
        raise WeightsError(f"{source}: format_version {version!r} is not one this planessl reads "
                           f"(<= {WEIGHTS_FORMAT_VERSION})")
    arch = manifest.get("architecture")
    if not isinstance(arch, dict) or arch.get("name") != ARCHITECTURE or not isinstance(arch.get("config"), dict):
        name = arch.get("name") if isinstance(arch, dict) else arch
        raise WeightsError(f"{source}: architecture {name!r} is not an exam classifier ({ARCHITECTURE}); "
                           "pretraining weights cannot classify")
    missing = [k for k in (*MANIFEST_KEYS, "decision") if k not in manifest]
    if missing:
        raise WeightsError(f"{source}: missing key(s): {', '.join(missing)}")
    try:
        return ExamClassifierConfig.from_dict(arch["config"])
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{source}: invalid architecture.config ({exc})") from exc


def export_classifier(model: ExamClassifier, out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``out_dir/model.safetensors`` then ``out_dir/manifest.json`` (atomically, fsync);
    ``manifest["model_id"]`` is set to the weights' sha256 (first 16 hex digits)."""
    out_dir = Path(out_dir)
    validate_classifier_manifest(manifest, str(out_dir / MANIFEST_FILE))
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    data = safetensors_save(tensors, metadata={"format": "pt", "planessl": WEIGHTS_FORMAT})
    manifest = dict(manifest)
    manifest["model_id"] = hashlib.sha256(data).hexdigest()[:16]
    atomic_write_bytes(out_dir / WEIGHTS_FILE, data, fsync=True)
    atomic_write_bytes(out_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"), fsync=True)
    return out_dir


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[ExamClassifier, dict[str, Any]]:
    """``(model in eval mode, manifest)`` from exported classifier weights (never unpickles)."""
    model, manifest, weights = load_weights(path, validate_classifier_manifest, ExamClassifier, device)
    manifest.setdefault("model_id", hashlib.sha256(weights).hexdigest()[:16])
    return model, manifest  # type: ignore[return-value]


def prepare_config_from_manifest(manifest: dict[str, Any]) -> PrepareConfig:
    """The slice preparation the model was trained with (spacing, size, normalisation)."""
    size = manifest["input"]["size_hw"]
    spacing = manifest["input"]["spacing_mm"]
    norm = manifest.get("intensity_normalisation") or {}
    return PrepareConfig(
        spacing_mm=float(spacing[0]), size_px=int(size[0]), normalisation=norm.get("method", "minmax"),
        clip_percentiles=tuple(norm.get("clip_percentiles", (0.5, 99.5))), dtype="float32", anatomy="knee",
    )


@torch.no_grad()
def exam_probability(model: ExamClassifier, exam: Exam, device: str | torch.device = "cpu") -> float:
    """Tear probability of one exam (all slices of every view, model in eval mode)."""
    model.eval()
    stacks = {v: torch.from_numpy(np.ascontiguousarray(exam.stacks[v], dtype=np.float32)).unsqueeze(0).to(device)
              for v in model.config.views}
    return float(torch.sigmoid(model(stacks)).item())


def predict_exam(exam_dir: str | Path, weights: str | Path, threshold: float | None = None,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """The prediction JSON of ``planessl predict acl`` for the one exam under ``exam_dir``.

    ``{"probability", "prediction" ("torn"/"intact"), "threshold", "inputs": {view: {"series":
    hashed key, "slices": n}}, "model": model_id}`` — nothing that identifies the patient.
    Raises WeightsError for unusable weights, ExamError when the folder holds no complete exam
    (or more than one).
    """
    from ..data.exams import ExamError

    model, manifest = load_classifier(weights, device)
    config = prepare_config_from_manifest(manifest)
    exams = exams_from_dicom(Path(exam_dir), config, views=model.config.views)
    if not exams:
        raise ExamError(f"{exam_dir}: no exam with all of {', '.join(model.config.views)} found "
                        f"(see 'planessl inspect {exam_dir}')")
    if len(exams) > 1:
        raise ExamError(f"{exam_dir}: holds {len(exams)} exams; point at one exam's folder")
    exam = exams[0]
    p = exam_probability(model, exam, device)
    t = float(manifest["decision"].get("threshold", 0.5)) if threshold is None else float(threshold)
    return {
        "probability": p,
        "prediction": ACL_LABELS[1] if p >= t else ACL_LABELS[0],
        "threshold": t,
        "inputs": {v: {"series": exam.series.get(v, ""), "slices": int(exam.stacks[v].shape[0])}
                   for v in model.config.views},
        "model": manifest.get("model_id"),
    }
