"""Exam classification at inference: exported ACL-tear weights in, a probability out.

Weights follow the contract of ``inference.manifest`` (``model.safetensors`` + ``manifest.json``
in a directory or ``.zip``), task ``acl``: a ``PlaneSSLExamClassifier`` (``ExamClassifierConfig``),
``label_names`` ["intact", "torn"], ``decision: {"threshold", "positive"}`` and ``model_id`` (a
hash of the weights file, which names the model in predictions without naming anyone). They are
written by ``inference.weights.export_model`` and read by ``inference.weights.load_model`` like
every other task.

Only torch, numpy, safetensors and ``preprocess`` are used (no data or training stack); loading never
unpickles. ``predict_exam(exam_dir, weights)`` prepares the exam's SAG/COR/AX stacks exactly as
training did (spacing, size, intensity normalisation from the manifest) and returns the JSON
of ``planessl predict acl``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.exam_classifier import ExamClassifier
from ..preprocess.config import PrepareConfig
from ..preprocess.exams import Exam, ExamError, exams_from_dicom
from .manifest import ACL_LABELS, TASKS
from .weights import WeightsError, export_model, load_model

__all__ = [
    "ARCHITECTURE",
    "ACL_LABELS",
    "export_classifier",
    "load_classifier",
    "exam_probability",
    "classify_exam",
    "predict_exam",
    "prepare_config_from_manifest",
]

ARCHITECTURE = TASKS["acl"].architecture
#: Former name of :func:`inference.weights.export_model` for classifiers.
export_classifier = export_model


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[ExamClassifier, dict[str, Any]]:
    """``(model in eval mode, manifest)`` of exported ACL-tear weights (``load_model`` of task ``acl``)."""
    model, manifest = load_model(path, device, expect_task="acl")
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
    model, manifest = load_classifier(weights, device)
    config = prepare_config_from_manifest(manifest)
    exams = exams_from_dicom(Path(exam_dir), config, views=model.config.views)
    if not exams:
        raise ExamError(f"{exam_dir}: no exam with all of {', '.join(model.config.views)} found "
                        f"(see 'planessl inspect {exam_dir}')")
    if len(exams) > 1:
        raise ExamError(f"{exam_dir}: holds {len(exams)} exams; point at one exam's folder")
    return classify_exam(model, manifest, exams[0], threshold, device)


def classify_exam(model: ExamClassifier, manifest: dict[str, Any], exam: Exam, threshold: float | None = None,
                  device: str | torch.device = "cpu") -> dict[str, Any]:
    """The prediction JSON (:func:`predict_exam`) of an exam already prepared with the model's settings
    (``prepare_config_from_manifest``), e.g. an MRNet exam."""
    p = exam_probability(model, exam, device)
    if not math.isfinite(p):
        raise WeightsError(f"model {manifest.get('model_id')}: the network gave a non-finite probability ({p}) "
                           "for this exam; no prediction is reported")
    t = float(manifest["decision"]["threshold"]) if threshold is None else float(threshold)
    return {
        "probability": p,
        "prediction": ACL_LABELS[1] if p >= t else ACL_LABELS[0],
        "threshold": t,
        "inputs": {v: {"series": exam.series.get(v, ""), "slices": int(exam.stacks[v].shape[0])}
                   for v in model.config.views},
        "model": manifest.get("model_id"),
    }
