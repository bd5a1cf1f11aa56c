"""Long-axis planes fitted from the lines they cut in the SAX slices (geometry/plane_fit.py), on phantom geometry."""

from __future__ import annotations

import numpy as np
import pytest

from PlaneSSLLib.geometry.lines import intersection_line_lps
from PlaneSSLLib.geometry.plane_fit import (
    SliceLine,
    fit_axis_line,
    fit_plane_about_axis,
    fit_plane_to_lines,
    long_axis_from_planes,
    proposed_view_plane,
    stack_axis_points_lps,
)
from PlaneSSLLib.geometry.planes import angle_between_normals_deg, unit
from PlaneSSLLib.phantoms.heart import plan_heart_views, sample_heart

VIEWS = ("2CH", "3CH", "4CH")


def phantom_views(seed: int):
    rng = np.random.default_rng(seed)
    anatomy = sample_heart(rng)
    return anatomy, plan_heart_views(anatomy, rng)


def exact_lines(views, view: str) -> list[SliceLine]:
    out = []
    for k, sax in enumerate(views.sax):
        point, direction = intersection_line_lps(sax, views.lax[view])
        out.append(SliceLine(k, point, direction, 1.0))
    return out


def rotate_about(v: np.ndarray, axis: np.ndarray, deg: float) -> np.ndarray:
    a = unit(axis)
    t = np.radians(deg)
    return v * np.cos(t) + np.cross(a, v) * np.sin(t) + a * (a @ v) * (1 - np.cos(t))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_exact_lines_give_the_planes_back(seed):
    anatomy, views = phantom_views(seed)
    lines = {v: exact_lines(views, v) for v in VIEWS}
    axis = stack_axis_points_lps([[lines[v][k] for v in VIEWS] for k in range(len(views.sax))], views.sax)
    # The three views cross on the LV long axis: the axis points lie on it.
    for p in axis:
        off = p - anatomy.base_lps
        assert np.linalg.norm(off - (off @ anatomy.w) * anatomy.w) < 1e-6
    for v in VIEWS:
        fit = fit_plane_to_lines(lines[v], axis)
        acquired = views.lax[v]
        assert angle_between_normals_deg(fit.normal_lps, acquired.normal_lps) < 0.1
        assert abs(float(fit.distance_mm(acquired.centre_lps))) < 0.1
        assert fit.inliers.all() and np.nanmax(fit.residuals_mm) < 1e-6
    # The SAX orientation back from the 2CH and 4CH planes: their meeting line is the long axis.
    n2 = fit_plane_to_lines(lines["2CH"], axis).normal_lps
    n4 = fit_plane_to_lines(lines["4CH"], axis).normal_lps
    long_axis = long_axis_from_planes(n2, n4, towards_lps=anatomy.w)
    assert angle_between_normals_deg(long_axis, views.sax[0].normal_lps) < 0.1
    assert long_axis @ anatomy.w > 0.999


def corrupt(lines: list[SliceLine], slices: list[int], sax_normal: np.ndarray) -> list[SliceLine]:
    out = list(lines)
    for k in slices:
        line = out[k]
        wrong_dir = rotate_about(line.direction_lps, sax_normal, 35.0)
        shift = 25.0 * unit(np.cross(sax_normal, line.direction_lps))
        out[k] = SliceLine(k, line.point_lps + shift, wrong_dir, 0.9)
    return out


@pytest.mark.parametrize("seed", [0, 5])
def test_outlier_slices_are_left_out(seed):
    _, views = phantom_views(seed)
    n_sax = views.sax[0].normal_lps
    for v in VIEWS:
        clean = exact_lines(views, v)
        bad_slices = [0, len(clean) - 1, len(clean) - 2]  # base and apex
        lines = corrupt(clean, bad_slices, n_sax)
        fit = fit_plane_to_lines(lines)
        assert angle_between_normals_deg(fit.normal_lps, views.lax[v].normal_lps) < 0.1
        assert not fit.inliers[bad_slices].any() and fit.inliers.sum() == len(lines) - len(bad_slices)
        assert np.all(fit.residuals_mm[bad_slices] > 5.0)
        # Plain least squares (all weights kept) is pulled away by the same slices.
        naive = fit_plane_to_lines(lines, tukey_c=1e9, scale_floor_mm=1e9)
        assert angle_between_normals_deg(naive.normal_lps, views.lax[v].normal_lps) > 2.0


def test_noisy_lines_with_outliers_stay_close():
    _, views = phantom_views(3)
    rng = np.random.default_rng(0)
    n_sax = views.sax[0].normal_lps
    errors = []
    for v in VIEWS:
        clean = exact_lines(views, v)
        noisy = [SliceLine(line.slice_index,
                           line.point_lps + rng.normal(0, 1.0, 3),
                           rotate_about(line.direction_lps, n_sax, rng.normal(0, 3.0)), 1.0) for line in clean]
        fit = fit_plane_to_lines(corrupt(noisy, [0, len(clean) - 1], n_sax))
        errors.append(angle_between_normals_deg(fit.normal_lps, views.lax[v].normal_lps))
    assert max(errors) < 4.0


def test_zero_confidence_and_too_few_slices():
    _, views = phantom_views(0)
    lines = exact_lines(views, "4CH")
    ignored = [SliceLine(k, line.point_lps + 50.0, line.direction_lps, 0.0) if k % 2 else line
               for k, line in enumerate(lines)]
    fit = fit_plane_to_lines(ignored)
    assert angle_between_normals_deg(fit.normal_lps, views.lax["4CH"].normal_lps) < 0.1
    assert np.all(fit.weights[1::2] == 0)
    with pytest.raises(ValueError, match="at least two slices"):
        fit_plane_to_lines(lines[:1])


def test_proposed_plane_is_a_scanner_plane():
    anatomy, views = phantom_views(1)
    fit = fit_plane_to_lines(exact_lines(views, "2CH"))
    plane = proposed_view_plane(fit.point_lps, fit.normal_lps, anatomy.w, 1.5, 300.0)
    assert plane.shape_px == (200, 200) and plane.spacing_mm == (1.5, 1.5)
    assert np.allclose(plane.centre_lps, fit.point_lps)
    assert angle_between_normals_deg(plane.normal_lps, fit.normal_lps) < 1e-6
    assert plane.y_dir_lps @ anatomy.w < -0.99  # apex up: rows run from the apex towards the base


def test_views_about_a_shared_long_axis():
    anatomy, views = phantom_views(2)
    lines = {v: exact_lines(views, v) for v in VIEWS}
    centres = stack_axis_points_lps([[lines[v][k] for v in VIEWS] for k in range(len(views.sax))], views.sax)
    # Two LV centres far off (apex, base): the robust axis ignores them.
    bad = centres.copy()
    n_sax = views.sax[0].normal_lps
    bad[0] += 20.0 * unit(np.cross(n_sax, [1.0, 0.0, 0.0]))
    bad[-1] -= 15.0 * unit(np.cross(n_sax, [0.0, 1.0, 0.0]))
    point, direction, weights = fit_axis_line(bad)
    assert angle_between_normals_deg(direction, anatomy.w) < 0.1 and weights[0] == 0 and weights[-1] == 0
    off = point - anatomy.base_lps
    assert np.linalg.norm(off - (off @ anatomy.w) * anatomy.w) < 1e-6
    for v in VIEWS:
        noisy = corrupt(lines[v], [1], n_sax)
        fit = fit_plane_about_axis(noisy, point, direction, centres)
        assert angle_between_normals_deg(fit.normal_lps, views.lax[v].normal_lps) < 0.1
        assert fit.weights[1] == 0 and abs(float(fit.distance_mm(views.lax[v].centre_lps))) < 0.1
        assert abs(float(fit.normal_lps @ direction)) < 1e-9  # the plane holds the axis
    with pytest.raises(ValueError, match="two points"):
        fit_axis_line(bad[:1])
