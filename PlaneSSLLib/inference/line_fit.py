"""Intersection lines fitted from predicted heatmaps, and their errors against the geometry.

A heatmap channel is a Gaussian ridge along a line (docs/conventions.md, "Pretext targets"). The fit takes the
pixels above a fraction of the channel's peak, weights them by their value, and fits the line
through the weighted centroid along the principal axis of the weighted scatter (total least
squares). Pixel coordinates are (x = column, y = row), integer at pixel centres; prepared
images have square pixels, so angles in pixels are angles in the patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.lines import ImageLine

__all__ = ["FittedLine", "fit_line", "fit_lines", "line_angle_error_deg", "line_distance_error_px"]


@dataclass(frozen=True)
class FittedLine:
    line: ImageLine
    confidence: float  # in [0, 1]: peak height times how line-like (elongated) the ridge is
    peak: float


def fit_line(heatmap: np.ndarray, threshold: float = 0.3, min_peak: float = 0.05) -> FittedLine | None:
    """Fit one line to a ``(H, W)`` heatmap; None when the map has no clear ridge.

    ``threshold``: fraction of the peak below which pixels are ignored. ``min_peak``: maps whose
    maximum is below it are treated as "no line here".
    """
    h = np.asarray(heatmap, dtype=np.float64)
    peak = float(h.max()) if h.size else 0.0
    if not np.isfinite(peak) or peak < min_peak:
        return None
    w = np.where(h >= threshold * peak, h, 0.0)
    total = float(w.sum())
    if total <= 0:
        return None
    rows, cols = np.nonzero(w)
    weights = w[rows, cols]
    x, y = cols.astype(np.float64), rows.astype(np.float64)
    cx, cy = float(weights @ x) / total, float(weights @ y) / total
    dx, dy = x - cx, y - cy
    cov = np.array([[weights @ (dx * dx), weights @ (dx * dy)], [weights @ (dx * dy), weights @ (dy * dy)]]) / total
    evals, evecs = np.linalg.eigh(cov)
    direction = evecs[:, 1]  # largest eigenvalue: along the ridge
    elongation = 1.0 - float(np.sqrt(max(evals[0], 0.0) / max(evals[1], 1e-12)))
    a, b = -direction[1], direction[0]
    line = ImageLine(float(a), float(b), float(-(a * cx + b * cy)))
    confidence = float(np.clip(min(peak, 1.0) * elongation, 0.0, 1.0))
    return FittedLine(line, confidence, peak)


def fit_lines(heatmaps: np.ndarray, **kwargs) -> list[FittedLine | None]:
    """``fit_line`` for every channel of a ``(C, H, W)`` array."""
    return [fit_line(h, **kwargs) for h in np.asarray(heatmaps)]


def line_angle_error_deg(pred: ImageLine, true: ImageLine) -> float:
    """Unsigned angle between two lines in degrees, in [0, 90]."""
    c = abs(pred.a * true.a + pred.b * true.b)
    s = abs(pred.a * true.b - pred.b * true.a)
    return float(np.degrees(np.arctan2(s, c)))


def line_distance_error_px(pred: ImageLine, true: ImageLine, centre_xy: tuple[float, float]) -> float:
    """How far apart two lines pass from the image centre, in pixels.

    ``|dist(centre, pred) − dist(centre, true)|`` with the two normals turned the same way, i.e.
    the offset error of the line independent of its angle error. Multiply by the pixel size for
    millimetres.
    """
    sign = 1.0 if pred.a * true.a + pred.b * true.b >= 0 else -1.0
    cx, cy = centre_xy
    d_pred = sign * (pred.a * cx + pred.b * cy + pred.d)
    d_true = true.a * cx + true.b * cy + true.d
    return float(abs(d_pred - d_true))
