"""Pretext evaluation against an oracle (perfect heatmaps), a silent and an untrained network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from PlaneSSLLib.data.cache import open_cache
from PlaneSSLLib.data.datasets import PretextDataset
from PlaneSSLLib.data.prepare import prepare_cache
from PlaneSSLLib.data.targets import line_heatmaps
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig
from PlaneSSLLib.preprocess.config import PrepareConfig
from PlaneSSLLib.training.pretext_eval import evaluate_pretext, location_errors, untrained_like


@pytest.fixture(scope="module")
def dataset(heart_cohort, tmp_path_factory) -> PretextDataset:
    report = prepare_cache(heart_cohort, tmp_path_factory.mktemp("pretext_eval"),
                           PrepareConfig(spacing_mm=3.0, size_px=64))
    return PretextDataset(open_cache(report.cache_dir))


class Oracle(torch.nn.Module):
    """Returns the true heatmaps (looked up by image identity) and true locations."""

    def __init__(self, dataset: PretextDataset, shift_px: float = 0.0) -> None:
        super().__init__()
        self.config = UNetConfig(base_filters=2, levels=2, line_channels=dataset.n_channels)
        self.ds = dataset
        self.shift = shift_px

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = {self.ds[i]["image"].numpy().tobytes(): i for i in range(len(self.ds))}
        idx = [keys[img.numpy().tobytes()] for img in x]
        lines = torch.stack([self.ds.lines[i] for i in idx]).clone()
        lines[..., 2] += self.shift
        valid = torch.ones(len(idx), self.ds.n_channels, dtype=torch.bool)
        heat = line_heatmaps(lines, valid, tuple(x.shape[-2:]), sigma_px=2.0)
        return {"lines": heat, "location": torch.stack([self.ds.location[i] for i in idx])}


def test_oracle_scores_zero_and_shift_is_measured_in_mm(dataset, tmp_path):
    report = evaluate_pretext(Oracle(dataset), dataset, overlay_dir=tmp_path, n_overlays=2)
    assert report.n_images == len(dataset)
    assert report.overall_median_angle_deg < 0.5
    assert report.overall_median_distance_mm < 0.5 * 3.0
    assert report.location_mae == pytest.approx(0.0, abs=1e-6)
    assert any(k.startswith("SAX ← ") for k in report.pairs)
    assert len(report.overlays) == 2 and all(Path(p).stat().st_size > 1000 for p in report.overlays)
    shifted = evaluate_pretext(Oracle(dataset, shift_px=4.0), dataset)
    assert shifted.overall_median_distance_mm == pytest.approx(4.0 * 3.0, abs=1.0)
    assert shifted.overall_median_angle_deg < 0.5
    assert "| SAX ← 2CH |" in report.markdown()


def test_mirror_confusion_counts_predictions_nearer_the_mirrored_location():
    true = np.array([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    pred = np.array([0.9, 0.2, 0.0, 0.0, 0.1, 0.45, 0.8])
    e = location_errors(pred, true)
    # |t - 0.5| > 0.2: t = 0, 0.1, 0.25, 0.75, 0.9, 1.0; nearer 1 - t than t: t = 0 (p 0.9), t = 0.75 (p 0.1)
    # and t = 0.9 (p 0.45 lies 0.35 from 1 - t, 0.45 from t)
    assert e["n_mirror"] == 6 and e["mirror_confusion"] == pytest.approx(3 / 6)
    assert e["mae"] == pytest.approx(np.mean(np.abs(pred - true))) and e["n"] == 7
    assert np.isnan(location_errors(np.array([0.5]), np.array([0.5]))["mirror_confusion"])


def test_a_mirrored_network_is_fully_confused(dataset):
    class Mirrored(Oracle):
        def forward(self, x):
            out = super().forward(x)
            return {"lines": out["lines"], "location": 1 - out["location"]}

    right = evaluate_pretext(Oracle(dataset), dataset)
    mirrored = evaluate_pretext(Mirrored(dataset), dataset)
    assert right.mirror_confusion == 0.0 and mirrored.mirror_confusion == 1.0 and mirrored.n_mirror > 0
    assert mirrored.location_by_view["SAX"]["mirror_confusion"] == 1.0
    assert right.location_by_view["SAX"]["mae"] == pytest.approx(0.0, abs=1e-6)
    assert "mirror confusion" in mirrored.markdown() and "| SAX |" in mirrored.markdown()
    assert mirrored.as_dict()["overall"]["mirror_confusion"] == 1.0


def test_silent_network_counts_misses_as_failures(dataset):
    class Silent(Oracle):
        def forward(self, x):
            out = super().forward(x)
            return {"lines": torch.zeros_like(out["lines"]), "location": out["location"]}

    report = evaluate_pretext(Silent(dataset), dataset)
    assert report.overall_median_angle_deg == 90.0
    assert sum(p["misses"] for p in report.pairs.values()) == sum(p["n"] for p in report.pairs.values())
    # every line missed: the distance error is undefined, null in the JSON report (NaN is not JSON; campaign)
    as_json = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    assert all(p["median_distance_mm"] is None for p in as_json["pairs"].values())
    assert as_json["overall"]["median_distance_mm"] is None and as_json["overall"]["median_angle_deg"] == 90.0


def test_untrained_network_is_far_from_the_lines(dataset):
    model = PlaneSSLNet(UNetConfig(base_filters=4, levels=3, line_channels=dataset.n_channels))
    fresh = untrained_like(model, seed=1)
    assert isinstance(fresh, PlaneSSLNet) and fresh is not model
    report = evaluate_pretext(fresh, dataset)
    assert np.isnan(report.overall_median_distance_mm) or report.overall_median_angle_deg > 10
