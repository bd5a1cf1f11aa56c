"""Binary classification metrics with bootstrap confidence intervals.

- ``roc_auc``: the area under the ROC curve, ``monai.metrics.compute_roc_auc`` (tied scores count
  one half, the same number as ``sklearn.metrics.roc_auc_score``), NaN for one class only.
- ``accuracy``, ``sensitivity`` (true-positive rate), ``specificity`` (true-negative rate) of the
  decision ``score >= threshold`` (positive = label 1 = "torn").
- ``bootstrap_ci``: percentile interval over ``n_resamples`` resamples of the cases with
  replacement, drawn from ``np.random.default_rng(seed)`` (so deterministic for a seed).
  Resamples on which a metric is undefined (e.g. one class only for the AUC) are skipped and
  counted; with fewer than 2 defined resamples the interval is NaN.

Undefined metrics are NaN, never an exception: the AUC of labels of one class only, the
sensitivity without positives, the specificity without negatives. Each such case is named in
``MetricValue.note`` (and ``classification_metrics(...)["notes"]``) so reports say why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.metrics import compute_roc_auc

__all__ = [
    "MetricValue",
    "roc_auc",
    "accuracy",
    "sensitivity",
    "specificity",
    "bootstrap_ci",
    "classification_metrics",
    "undefined_reason",
    "METRICS",
]

Metric = Callable[[np.ndarray, np.ndarray], float]


def _arrays(labels: object, scores: object) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}")
    if not np.isfinite(s).all():
        raise ValueError("scores hold NaN or infinite values")
    return y.astype(np.int64), s


def undefined_reason(metric: str, labels: object) -> str | None:
    """Why ``metric`` is undefined on ``labels`` (``None`` when it is defined)."""
    y = np.asarray(labels).reshape(-1)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if y.size == 0:
        return f"{metric} undefined: no cases"
    if metric == "auc" and (n_pos == 0 or n_neg == 0):
        return f"auc undefined: the labels hold one class only ({n_pos} positive, {n_neg} negative)"
    if metric == "sensitivity" and n_pos == 0:
        return "sensitivity undefined: no positive case"
    if metric == "specificity" and n_neg == 0:
        return "specificity undefined: no negative case"
    return None


def roc_auc(labels: object, scores: object) -> float:
    """Area under the ROC curve (ties count one half); NaN when only one class is present."""
    y, s = _arrays(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float(compute_roc_auc(torch.from_numpy(s), torch.from_numpy(y)))


def _decisions(scores: np.ndarray, threshold: float) -> np.ndarray:
    return (scores >= threshold).astype(np.int64)


def accuracy(labels: object, scores: object, threshold: float = 0.5) -> float:
    """Fraction of cases whose decision ``score >= threshold`` equals the label; NaN without cases."""
    y, s = _arrays(labels, scores)
    return float((_decisions(s, threshold) == y).mean()) if y.size else float("nan")


def sensitivity(labels: object, scores: object, threshold: float = 0.5) -> float:
    """True-positive rate at ``threshold``; NaN without positive cases."""
    y, s = _arrays(labels, scores)
    pos = y == 1
    return float(_decisions(s[pos], threshold).mean()) if pos.any() else float("nan")


def specificity(labels: object, scores: object, threshold: float = 0.5) -> float:
    """True-negative rate at ``threshold``; NaN without negative cases."""
    y, s = _arrays(labels, scores)
    neg = y == 0
    return float(1.0 - _decisions(s[neg], threshold).mean()) if neg.any() else float("nan")


#: name -> metric(labels, scores, threshold) (the AUC ignores the threshold).
METRICS: dict[str, Callable[..., float]] = {
    "auc": lambda y, s, t=0.5: roc_auc(y, s),
    "accuracy": accuracy,
    "sensitivity": sensitivity,
    "specificity": specificity,
}


@dataclass(frozen=True)
class MetricValue:
    """A point estimate with its percentile bootstrap interval (NaN where undefined)."""

    value: float
    ci_low: float
    ci_high: float
    confidence: float
    n_resamples: int  # resamples drawn
    n_defined: int  # resamples on which the metric was defined
    note: str | None = None  # why the value is NaN, when it is

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-able (NaN becomes ``None``)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def bootstrap_ci(
    labels: object,
    scores: object,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, int]:
    """``(low, high, n_defined)``: percentile interval of ``metric`` over case resamples.

    Resamples where ``metric`` is NaN are skipped; fewer than 2 defined ones give ``(nan, nan, n)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    y, s = _arrays(labels, scores)
    if y.size == 0 or n_resamples == 0:
        return float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, y.size, size=(n_resamples, y.size))
    values = np.array([metric(y[i], s[i]) for i in draws], dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan"), float("nan"), int(values.size)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high), int(values.size)


def classification_metrics(
    labels: object,
    probabilities: object,
    threshold: float = 0.5,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, object]:
    """AUC, accuracy, sensitivity and specificity at ``threshold``, each a :class:`MetricValue`.

    Also ``"n"``, ``"n_positive"``, ``"threshold"`` and ``"notes"`` (why any value is NaN).
    All intervals use the same resamples (same ``seed``), so they are paired.
    """
    y, s = _arrays(labels, probabilities)
    out: dict[str, object] = {"n": int(y.size), "n_positive": int(y.sum()), "threshold": float(threshold)}
    notes: list[str] = []
    for name, fn in METRICS.items():
        def bound(yy: np.ndarray, ss: np.ndarray, fn: Callable[..., float] = fn) -> float:
            return fn(yy, ss, threshold)

        value = bound(y, s)
        low, high, defined = bootstrap_ci(y, s, bound, n_resamples, seed, confidence)
        note = undefined_reason(name, y) if math.isnan(value) else None
        if note:
            notes.append(note)
        out[name] = MetricValue(value, low, high, confidence, n_resamples, defined, note)
    out["notes"] = notes
    return out
