"""Segmentation metrics (MONAI) against an independent scipy implementation; empty masks; LCC."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from PlaneSSLLib.inference.segment import keep_largest_component
from PlaneSSLLib.training.seg_metrics import never_found, structure_metrics, summarise


# ---------------------------------------------------------------- independent reference (scipy only)
def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def _directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b``."""
    return ndimage.distance_transform_edt(~_surface(b), sampling=spacing)[_surface(a)]


def _reference(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[float, float, float]:
    dice = 2.0 * (pred & ref).sum() / (pred.sum() + ref.sum())
    d1, d2 = _directed(pred, ref, spacing), _directed(ref, pred, spacing)
    return dice, max(np.percentile(d1, 95), np.percentile(d2, 95)), float(np.concatenate([d1, d2]).mean())


def _volumes() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((7, 40, 48), np.uint8)
    ref[1:6, 6:30, 8:30] = 3  # LV
    ref[2:6, 10:26, 30:42] = 1  # RV
    ref[1:6, 4:8, 8:30] = 2  # Myo
    pred = np.zeros_like(ref)
    pred[1:7, 8:31, 10:33] = 3  # shifted, larger LV
    pred[3:6, 12:24, 31:44] = 1  # smaller, shifted RV
    pred[1:5, 4:7, 6:30] = 2
    return pred, ref


def test_metrics_match_independent_implementation_with_anisotropic_spacing():
    pred, ref = _volumes()
    spacing = (8.0, 1.3, 1.1)
    rows = {r["structure"]: r for r in structure_metrics(pred, ref, spacing)}
    for label, name in ((1, "RV"), (2, "Myo"), (3, "LV")):
        dice, hd95, assd = _reference(pred == label, ref == label, spacing)
        assert rows[name]["status"] == "ok"
        assert rows[name]["dice"] == pytest.approx(dice, abs=1e-6)
        assert rows[name]["hd95_mm"] == pytest.approx(hd95, rel=1e-5)
        assert rows[name]["assd_mm"] == pytest.approx(assd, rel=1e-5)


def test_identical_masks_are_perfect():
    _, ref = _volumes()
    for r in structure_metrics(ref, ref, (10.0, 1.5, 1.5)):
        assert (r["dice"], r["hd95_mm"], r["assd_mm"], r["status"]) == (pytest.approx(1.0), 0.0, 0.0, "ok")


def test_empty_masks_are_counted_not_dropped():
    _, ref = _volumes()
    pred = ref.copy()
    pred[pred == 1] = 0  # RV missed entirely
    pred[0, 0:3, 0:3] = 2  # harmless extra Myo
    ref2 = ref.copy()
    ref2[ref2 == 2] = 0  # no Myo in the reference
    rows = {r["structure"]: r for r in structure_metrics(pred, ref2, (8.0, 1.0, 1.0))}
    assert rows["RV"]["status"] == "empty_pred" and rows["RV"]["dice"] == 0.0
    assert math.isnan(rows["RV"]["hd95_mm"]) and math.isnan(rows["RV"]["assd_mm"])
    assert rows["Myo"]["status"] == "empty_ref" and rows["Myo"]["dice"] == 0.0 and math.isnan(rows["Myo"]["hd95_mm"])
    both = structure_metrics(np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8), (1, 1, 1))
    assert all(r["status"] == "both_empty" and r["dice"] == 1.0 and r["hd95_mm"] == 0.0 for r in both)
    summary = summarise([dict(r, phase="ED") for r in rows.values()])
    assert summary["ED RV"]["n_empty_pred"] == 1 and summary["mean"]["n"] == 3
    assert summary["mean"]["n_undefined"] == 2
    assert summary["mean"]["dice"] == pytest.approx(np.mean([r["dice"] for r in rows.values()]))


def test_a_structure_never_found_is_named_but_one_the_reference_lacks_is_not():
    _, ref = _volumes()
    missed = ref.copy()
    missed[missed == 1] = 0  # RV never predicted
    no_myo_ref = ref.copy()
    no_myo_ref[no_myo_ref == 2] = 0  # a reference without Myo: a prediction of it scores 0 but is not "missed"
    rows = structure_metrics(missed, ref, (8.0, 1.0, 1.0)) + structure_metrics(missed, no_myo_ref, (8.0, 1.0, 1.0))
    assert never_found(rows) == {"RV": (2, 2)}
    found_once = rows + structure_metrics(ref, ref, (8.0, 1.0, 1.0))
    assert never_found(found_once) == {}
    misplaced = np.zeros_like(ref)
    misplaced[ref == 3] = 1  # RV predicted where the LV is: present, wrong place, still never found
    assert never_found(structure_metrics(misplaced, ref, (8.0, 1.0, 1.0)))["RV"] == (0, 1)


def test_metrics_refuse_mismatched_inputs():
    with pytest.raises(ValueError, match="differ in shape"):
        structure_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        structure_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), (1, 1))


def test_largest_connected_component_per_structure_in_3d():
    lab = np.zeros((4, 20, 20), np.uint8)
    lab[0:3, 2:8, 2:8] = 3  # big LV blob over 3 slices
    lab[3, 15:17, 15:17] = 3  # small stray LV island (not touching)
    lab[1, 10:12, 10:12] = 1  # RV: two islands
    lab[2, 14:19, 2:7] = 1
    lab[0:2, 2:4, 12:14] = 2  # one Myo component across slices (3D-connected)
    out = keep_largest_component(lab)
    assert (out[3, 15:17, 15:17] == 0).all() and (out[0:3, 2:8, 2:8] == 3).all()
    assert (out[1, 10:12, 10:12] == 0).all() and (out[2, 14:19, 2:7] == 1).all()
    assert (out == 2).sum() == (lab == 2).sum()
    diagonal = np.zeros((2, 4, 4), np.uint8)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 3  # 26-connected: one component
    assert (keep_largest_component(diagonal) == diagonal).all()
