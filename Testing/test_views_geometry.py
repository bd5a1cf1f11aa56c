"""View identification from geometry alone, on randomly posed heart and knee plane layouts.

These tests build studies from planes directly (no files), so they probe the rules in
PlaneSSLLib.dicom.views over many poses; the phantom cohorts are checked end to end elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from PlaneSSLLib.dicom.records import Frame, Position, Series, Study
from PlaneSSLLib.dicom.views import hint_from_text, identify_views
from PlaneSSLLib.geometry import ImagePlane, unit


def rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    a = unit(axis)
    t = np.radians(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def make_series(name: str, planes: list[ImagePlane], description: str = "", phases: int = 1) -> Series:
    positions = []
    for p in planes:
        frames = [Frame(Path(name) / f"{i}.dcm", 0, p, trigger_time_ms=40.0 * i) for i in range(phases)]
        positions.append(Position(p, frames))
    return Series(key=f"k-{name}", description=description, folder=Path("/data") / name, series_number=None,
                  modality="MR", frames=[f for pos in positions for f in pos.frames], positions=positions)


def heart_layout(rng: np.random.Generator, layout: str = "kaggle", views=("2CH", "3CH", "4CH")):
    """Heart planes following the phantom's planning conventions with a random pose."""
    w = unit(np.array([0.55, -0.45, -0.65]))
    w = rotation(rng.normal(size=3), rng.uniform(-15, 15)) @ w
    u0 = unit(np.array([-0.6, -0.8, 0.0]))
    u = unit(u0 - (u0 @ w) * w)
    u = rotation(w, rng.uniform(-15, 15)) @ u
    v = np.cross(u, w)
    centre = rng.normal(0, 20, 3)
    spacing = (float(rng.uniform(1.2, 1.9)), float(rng.uniform(1.2, 1.9)))
    n_sax = int(rng.integers(8, 15))
    gap = float(rng.uniform(8, 10))
    sax_planes = []
    for k in range(n_sax):
        c = centre + w * (k - n_sax / 2) * gap
        roll = rotation(w, rng.uniform(-20, 20))
        sax_planes.append(ImagePlane.centred(c, roll @ u, roll @ np.cross(w, u), spacing, (192, 176)))
    if rng.random() < 0.5:  # scanners may write either sign of the normal
        sax_planes = [ImagePlane.centred(p.centre_lps, p.y_dir_lps, p.x_dir_lps, spacing, (176, 192))
                      for p in sax_planes]
    prior = {"4CH": 0.0, "3CH": 38.0, "2CH": 90.0}
    series = []
    if layout == "kaggle":
        for k, p in enumerate(sax_planes):
            series.append(make_series(f"sax_{k + 5}", [p], "sa cine", phases=3))
    else:
        series.append(make_series("cine_sax", sax_planes, "CINE_segmented_SAX", phases=3))
    truth = {s.key: "SAX" for s in series}
    for i, view in enumerate(views):
        theta = np.radians(prior[view] + rng.uniform(-6, 6))
        d = np.cos(theta) * u + np.sin(theta) * v  # the line in the SAX plane
        normal = np.cross(d, w)
        x_dir = rotation(normal, rng.uniform(-20, 20)) @ w
        y_dir = np.cross(normal, x_dir)
        p = ImagePlane.centred(centre + rng.normal(0, 2, 3) * 0, x_dir, y_dir, spacing, (208, 160))
        s = make_series(f"{view.lower()}_{30 + i}", [p], f"cine {view.lower()}", phases=3)
        series.append(s)
        truth[s.key] = view
    order = rng.permutation(len(series))
    return Study("study", "patient", Path("/data"), [series[i] for i in order]), truth


def knee_layout(rng: np.random.Generator):
    rot = rotation(rng.normal(size=3), rng.uniform(0, 20))
    axes = {"SAG": rot @ [1.0, 0, 0], "COR": rot @ [0, 1.0, 0], "AX": rot @ [0, 0, 1.0]}
    series, truth = [], {}
    for view, n in axes.items():
        others = [a for k, a in axes.items() if k != view]
        planes = [
            ImagePlane.centred(n * (k - 10) * 3.5, others[0], others[1], (0.4, 0.45), (320, 300)) for k in range(20)
        ]
        s = make_series(f"{view.lower()}_pd", planes, f"PD {view}")
        series.append(s)
        truth[s.key] = view
    return Study("knee", "patient", Path("/data"), series), truth


@pytest.mark.parametrize("layout", ["kaggle", "ukbb"])
def test_heart_views_from_geometry_many_poses(layout):
    rng = np.random.default_rng(11)
    for _ in range(100):
        study, truth = heart_layout(rng, layout)
        for s in study.series:
            s.description = ""  # no hints at all
        identify_views(study)
        assert study.anatomy == "heart"
        got = {s.key: s.view for s in study.series}
        assert got == truth
        assert all(s.view_source == "geometry" for s in study.series)


def test_heart_views_geometry_beats_misleading_descriptions():
    rng = np.random.default_rng(5)
    for _ in range(30):
        study, truth = heart_layout(rng, "kaggle")
        labels = ["2ch", "4ch", "3ch", "sax"]
        for i, s in enumerate(study.series):
            s.description = f"cine {labels[i % 4]}"  # wrong on purpose
            s.folder = Path("/data") / f"series_{i}"
        identify_views(study)
        assert {s.key: s.view for s in study.series} == truth


def test_heart_two_long_axis_views_kaggle_like():
    rng = np.random.default_rng(8)
    for _ in range(50):
        study, truth = heart_layout(rng, "kaggle", views=("2CH", "4CH"))
        for s in study.series:
            s.description = ""
            s.folder = Path("/x") / s.key
        identify_views(study)
        assert {s.key: s.view for s in study.series} == truth


def test_overrides_settle_the_view():
    rng = np.random.default_rng(2)
    study, truth = heart_layout(rng, "ukbb", views=("4CH",))
    lax = next(s for s in study.series if truth[s.key] == "4CH")
    identify_views(study, overrides={lax.folder.name: "3ch"})
    assert lax.view == "3CH" and lax.view_source == "override"
    identify_views(study, overrides={lax.key: "XYZ"})
    assert lax.view is None and "not a view label" in lax.view_reason


def test_knee_views_from_geometry():
    rng = np.random.default_rng(3)
    for _ in range(50):
        study, truth = knee_layout(rng)
        for s in study.series:
            s.description = ""
        identify_views(study)
        assert study.anatomy == "knee"
        assert {s.key: s.view for s in study.series} == truth


def test_hints():
    assert hint_from_text("CINE 2CH", anatomy="heart") == "2CH"
    assert hint_from_text("sax_12") == "SAX"
    assert hint_from_text("4ch_33") == "4CH"
    assert hint_from_text("LVOT cine") == "3CH"
    assert hint_from_text("PD_FS SAG", anatomy="knee") == "SAG"
    assert hint_from_text("t2 cor", anatomy="knee") == "COR"
    assert hint_from_text("T1 AX", anatomy="knee") == "AX"
    assert hint_from_text("localizer") is None
