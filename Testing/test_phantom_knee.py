"""Synthetic knee cohorts: stacks planned on the anatomy, side and pose, ACL tear labels and gap."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from PlaneSSLLib.dicom.planes import plane_from_dataset
from PlaneSSLLib.geometry import ImagePlane, angle_between_normals_deg, slice_locations_mm
from PlaneSSLLib.phantoms import KneeTissue, acl_torn, plan_knee_stacks, sample_knee, write_cohort
from PlaneSSLLib.phantoms.cohort import CohortOptions

SEED = 3
AXIS_OF_VIEW = {"sag": 0, "cor": 1, "ax": 2}  # patient axis each stack normal must be nearest to


@pytest.fixture(scope="session")
def knee_160(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("knee")
    meta = write_cohort(out, CohortOptions("knee", 2, seed=SEED, matrix=160), workers=2)
    return out, meta


def stack_planes(folder: Path) -> tuple[list[ImagePlane], list[pydicom.Dataset]]:
    dss = sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda d: int(d.InstanceNumber))
    return [plane_from_dataset(d) for d in dss], dss


def test_three_stacks_planned_on_the_knee(knee_160):
    out, meta = knee_160
    assert meta["anatomy"] == "knee" and meta["layout"] is None
    for summary in meta["subject_summaries"]:
        study = out / summary["subject"] / "study"
        folders = sorted(p.name for p in study.iterdir())
        assert folders == ["ax_4", "cor_3", "sag_2"]
        normals = {}
        for folder in folders:
            planes, dss = stack_planes(study / folder)
            view = folder.split("_")[0]
            assert len(planes) >= 20
            assert len({d.SeriesInstanceUID for d in dss}) == 1
            n = planes[0].normal_lps
            assert all(angle_between_normals_deg(p.normal_lps, n) < 1e-3 for p in planes)
            # Oblique, but nearest to its own patient axis.
            assert int(np.argmax(np.abs(n))) == AXIS_OF_VIEW[view], (view, n)
            assert angle_between_normals_deg(n, np.eye(3)[AXIS_OF_VIEW[view]]) < 40
            s = slice_locations_mm(planes)
            assert np.all(np.diff(s) > 0) or np.all(np.diff(s) < 0)
            for d, p in zip(dss, planes, strict=True):
                assert 3.0 <= float(d.SliceThickness) <= 4.0
                assert max(p.spacing_mm) < 1.0
                assert d.BodyPartExamined == "KNEE" and d.Laterality == summary["laterality"]
                assert d.PatientName == f"PHANTOM^KNEE^{summary['subject'][-4:]}"
            assert abs(abs(np.diff(s)).mean() - float(dss[0].SliceThickness)) <= 0.45
            normals[view] = n
        # Stacks are mutually (nearly) perpendicular, as planned on the landmarks.
        for a, b in (("sag", "cor"), ("sag", "ax"), ("cor", "ax")):
            assert angle_between_normals_deg(normals[a], normals[b]) > 80


def test_labels_csv(knee_160):
    out, meta = knee_160
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert [r["subject"] for r in rows] == ["subject_0000", "subject_0001"]
    tears = [int(r["acl_tear"]) for r in rows]
    assert sorted(tears) == [0, 1]  # at least one torn and one intact
    assert tears == [int(acl_torn(SEED, i)) for i in range(2)]
    assert [int(s["acl_tear"]) for s in meta["subject_summaries"]] == tears


def test_torn_fraction_is_controlled():
    for seed in range(40):
        flags = [acl_torn(seed, i) for i in range(20)]
        assert sum(flags) == 8  # exactly 0.4 over whole blocks of five
        for n in range(2, 8):
            assert 0 < sum(flags[:n]) < n
        assert 1 / 3 <= np.mean([acl_torn(seed, i) for i in range(30)]) <= 1 / 2


def test_acl_gap_in_torn_knees_only():
    for i in range(8):
        for torn in (False, True):
            knee = sample_knee(np.random.default_rng([21, i, 0]), torn)
            f, t = knee.acl_axis_lps()
            ts = np.linspace(0.15, 0.85, 141)
            codes = knee.codes_at(f + ts[:, None] * (t - f))
            is_acl = codes == KneeTissue.ACL
            if not torn:
                assert is_acl.all()
            else:
                assert is_acl[0] and is_acl[-1], "both stumps remain"
                gap = ~is_acl
                assert gap.sum() * (ts[1] - ts[0]) * np.linalg.norm(t - f) > 4.0  # a gap of several mm
                assert (codes[gap] == KneeTissue.OEDEMA).all()


def test_laterality_mirrors_the_anatomy():
    sides = set()
    for i in range(12):
        knee = sample_knee(np.random.default_rng([5, i, 0]), False)
        sides.add(knee.laterality)
        med = knee.frame_to_lps(knee.condyles["medial"][0])
        lat = knee.frame_to_lps(knee.condyles["lateral"][0])
        # The medial condyle is towards the body midline: +x (left) for a right knee.
        assert (med[0] > lat[0]) == (knee.laterality == "R")
        assert (knee.origin_lps[0] < 0) == (knee.laterality == "R")
        stacks = plan_knee_stacks(knee, np.random.default_rng([5, i, 1]), matrix=64)
        for view, idx in (("SAG", 0), ("COR", 1), ("AX", 2)):
            assert int(np.argmax(np.abs(stacks[view].planes[0].normal_lps))) == idx
    assert sides == {"R", "L"}


def test_fluid_is_bright(knee_160):
    """PD fat-suppressed contrast: joint fluid brighter than marrow, fat and muscle."""
    out, meta = knee_160
    summary = meta["subject_summaries"][0]
    planes, dss = stack_planes(out / summary["subject"] / "study" / "sag_2")
    knee = sample_knee(np.random.default_rng([SEED, 0, 0]), summary["acl_tear"])
    means = {t: [] for t in (KneeTissue.FLUID, KneeTissue.MARROW, KneeTissue.FAT, KneeTissue.MUSCLE)}
    for plane, ds in list(zip(planes, dss, strict=True))[::3]:
        codes = knee.codes_at(plane.pixel_grid_lps())
        img = ds.pixel_array.astype(float)
        for t in means:
            if (codes == t).sum() > 20:
                means[t].append(img[codes == t].mean())
    fluid = np.mean(means[KneeTissue.FLUID])
    for t in (KneeTissue.MARROW, KneeTissue.FAT, KneeTissue.MUSCLE):
        assert fluid > 1.8 * np.mean(means[t]), t
