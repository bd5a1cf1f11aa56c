"""Fitting lines back from heatmaps (pretext evaluation and `predict lines`)."""

from __future__ import annotations

import numpy as np
import pytest

from PlaneSSLLib.geometry import ImageLine, distance_to_line_px
from PlaneSSLLib.inference.line_fit import fit_line, fit_lines, line_angle_error_deg, line_distance_error_px


def heatmap(line: ImageLine, shape=(96, 128), sigma=4.0) -> np.ndarray:
    return np.exp(-distance_to_line_px(line, shape) ** 2 / (2 * sigma**2))


def test_fit_recovers_lines_at_any_angle():
    rng = np.random.default_rng(0)
    for _ in range(100):
        theta = rng.uniform(0, np.pi)
        a, b = np.cos(theta), np.sin(theta)
        centre = rng.uniform([30, 20], [98, 76])
        true = ImageLine(a, b, -(a * centre[0] + b * centre[1]))
        h = heatmap(true) + rng.normal(0, 0.03, (96, 128))
        fit = fit_line(h)
        assert fit is not None
        assert line_angle_error_deg(fit.line, true) < 1.0
        assert line_distance_error_px(fit.line, true, (63.5, 47.5)) < 0.5
        assert fit.confidence > 0.5


def test_no_line_in_flat_or_empty_maps():
    assert fit_line(np.zeros((32, 32))) is None
    blob = np.exp(-((np.arange(32)[:, None] - 16) ** 2 + (np.arange(32)[None] - 16) ** 2) / 20.0)
    fit = fit_line(blob)
    assert fit is not None and fit.confidence < 0.3  # round blob: not line-like
    assert len(fit_lines(np.zeros((3, 8, 8)))) == 3


def test_errors():
    h = ImageLine(1.0, 0.0, -10.0)  # x = 10
    v = ImageLine(0.0, 1.0, -10.0)  # y = 10
    assert line_angle_error_deg(h, v) == pytest.approx(90)
    assert line_angle_error_deg(h, ImageLine(-1.0, 0.0, 10.0)) == pytest.approx(0)
    assert line_distance_error_px(ImageLine(-1.0, 0.0, 13.0), h, (0.0, 0.0)) == pytest.approx(3.0)
