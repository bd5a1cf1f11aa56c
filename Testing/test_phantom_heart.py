"""Synthetic heart cohorts: layouts, determinism, NIfTI labels aligned with the DICOM, planned views.

The acceptance test: on mid-ventricular SAX slices the 2CH, 3CH and 4CH intersection lines
(computed from the planes read back from the DICOM files) pass through the LV cavity; the
4CH line crosses the RV and the 2CH line does not.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from PlaneSSLLib.dicom.nifti import read_label_nifti
from PlaneSSLLib.dicom.planes import plane_from_dataset
from PlaneSSLLib.geometry import (
    ImagePlane,
    angle_between_normals_deg,
    distance_to_line_px,
    image_line,
    intersect_images,
    lps_to_ras,
    slice_locations_mm,
    unit,
)
from PlaneSSLLib.phantoms import (
    CohortOptions,
    acdc_labels,
    plan_heart_views,
    sample_heart,
    write_cohort,
)
from PlaneSSLLib.phantoms.heart import APEX_PRIOR_LPS

PHASES = 4
SEED = 11


@pytest.fixture(scope="session")
def heart_kaggle(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("heart_kaggle")
    meta = write_cohort(out, CohortOptions("heart", 3, seed=SEED, phases=PHASES, matrix=160), workers=2)
    return out, meta


@pytest.fixture(scope="session")
def heart_ukbb(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("heart_ukbb")
    meta = write_cohort(
        out, CohortOptions("heart", 2, seed=SEED + 1, layout="ukbb", phases=PHASES, matrix=144), workers=1
    )
    return out, meta


# ---------------------------------------------------------------------- helpers
def read_folder(folder: Path) -> list[pydicom.Dataset]:
    """Datasets of a series folder in InstanceNumber order."""
    dss = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    return sorted(dss, key=lambda d: int(d.InstanceNumber))


def sax_stack(study: Path) -> list[tuple[ImagePlane, list[pydicom.Dataset]]]:
    """(plane, cine frames in phase order) per SAX slice, base to apex (kaggle or ukbb layout)."""
    if (study / "cine_sax").is_dir():
        dss = read_folder(study / "cine_sax")
        by_pos: dict[tuple, list] = {}
        for ds in dss:
            by_pos.setdefault(tuple(round(float(v), 3) for v in ds.ImagePositionPatient), []).append(ds)
        groups = list(by_pos.values())  # instance order = slice-major, so base first
    else:
        folders = sorted(study.glob("sax_*"), key=lambda p: int(p.name.split("_")[1]))
        groups = [read_folder(f) for f in folders]
    out = []
    for g in groups:
        g = sorted(g, key=lambda d: float(d.TriggerTime))
        out.append((plane_from_dataset(g[0]), g))
    return out


def lax_planes(study: Path) -> dict[str, ImagePlane]:
    out = {}
    for view in ("2ch", "3ch", "4ch"):
        folder = next(p for p in study.iterdir() if p.name.startswith(f"{view}_") or p.name == f"cine_{view}")
        out[view.upper()] = plane_from_dataset(pydicom.dcmread(next(folder.glob("*.dcm"))))
    return out


def label_slice(labels: np.ndarray, affine_ras: np.ndarray, plane: ImagePlane) -> np.ndarray:
    """The label image (rows × cols) of the NIfTI slice lying in ``plane``."""
    ijk = np.linalg.inv(affine_ras) @ np.append(lps_to_ras(plane.origin_lps), 1.0)
    assert np.allclose(ijk[:2], 0, atol=1e-3)
    k = int(round(ijk[2]))
    assert abs(ijk[2] - k) < 1e-3
    return labels[:, :, k].T


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------- layout and metadata
def test_kaggle_layout_and_metadata(heart_kaggle):
    out, meta = heart_kaggle
    assert meta["anatomy"] == "heart" and meta["seed"] == SEED and meta["layout"] == "kaggle"
    assert meta["complete"] and meta["generator"] == "planessl-phantom"
    assert json.loads((out / "cohort.json").read_text()) == meta
    rows = list(csv.DictReader((out / "subjects.csv").open()))
    assert [r["subject"] for r in rows] == ["subject_0000", "subject_0001", "subject_0002"]
    text = (out / "cohort.json").read_text()
    assert "planessl-heart" not in text and "PHANTOM^" not in text  # no identifiers in the summary
    for row, summary in zip(rows, meta["subject_summaries"], strict=True):
        study = out / row["subject"] / "study"
        n_sax = int(row["n_sax"])
        assert 8 <= n_sax <= 14 and summary["n_sax"] == n_sax
        assert int(row["ed_phase"]) == 0 and 0 < int(row["es_phase"]) < PHASES
        names = sorted(p.name for p in study.iterdir())
        assert {"2ch_2", "3ch_3", "4ch_4"} <= set(names)
        assert sorted(n for n in names if n.startswith("sax_")) == sorted(f"sax_{5 + k}" for k in range(n_sax))
        assert sorted(p.name for p in (study / "sax_5").iterdir()) == [f"IM-0005-{i:04d}.dcm" for i in range(1, 5)]
        assert (out / row["subject"] / "labels" / "sax_ed.nii.gz").is_file()
        assert (out / row["subject"] / "labels" / "sax_es.nii.gz").is_file()
        assert not list((out / row["subject"]).rglob(".*"))  # no temporary files left

        stack = sax_stack(study)
        uids = set()
        for plane, frames in stack:
            assert len(frames) == PHASES
            assert len({d.SeriesInstanceUID for d in frames}) == 1
            uids.add(frames[0].SeriesInstanceUID)
            times = [float(d.TriggerTime) for d in frames]
            assert times[0] == 0 and np.all(np.diff(times) > 0)
            assert all(int(d.CardiacNumberOfImages) == PHASES for d in frames)
            assert all(plane_from_dataset(d).is_same_plane(plane) for d in frames)
            assert 6.0 <= float(frames[0].SliceThickness) <= 8.0
            ds = frames[0]
            assert ds.PatientName == f"PHANTOM^HEART^{row['subject'][-4:]}"
            assert ds.PatientID == f"planessl-heart-{row['subject'][-4:]}"
            assert ds.BodyPartExamined == "HEART" and ds.Modality == "MR"
        assert len(uids) == n_sax  # one series per SAX slice
        planes = [p for p, _ in stack]
        s = slice_locations_mm(planes)
        gaps = np.abs(np.diff(s))
        assert np.all((gaps >= 8.0 - 1e-6) & (gaps <= 10.0 + 1e-6)) and np.allclose(gaps, gaps[0])
        assert np.all(np.diff(s) < 0) or np.all(np.diff(s) > 0)  # monotonic base → apex
        for view, lax in lax_planes(study).items():
            assert angle_between_normals_deg(lax.normal_lps, planes[0].normal_lps) > 80, view


def test_ukbb_layout(heart_ukbb):
    out, meta = heart_ukbb
    assert meta["layout"] == "ukbb"
    for summary in meta["subject_summaries"]:
        study = out / summary["subject"] / "study"
        assert sorted(p.name for p in study.iterdir()) == ["cine_2ch", "cine_3ch", "cine_4ch", "cine_sax"]
        dss = read_folder(study / "cine_sax")
        assert len(dss) == summary["n_sax"] * PHASES
        assert len({d.SeriesInstanceUID for d in dss}) == 1
        assert [int(d.InstanceNumber) for d in dss] == list(range(1, len(dss) + 1))
        stack = sax_stack(study)
        assert len(stack) == summary["n_sax"]
        for view in ("2ch", "3ch", "4ch"):
            lax = read_folder(study / f"cine_{view}")
            assert len(lax) == PHASES and len({tuple(d.ImagePositionPatient) for d in lax}) == 1


def test_non_square_pixels_and_varied_series():
    """Across subjects, series differ in matrix, spacing and in-plane rotation; some pixels are non-square."""
    spacings, ratios, x_dirs = set(), [], []
    for i in range(12):
        anat = sample_heart(np.random.default_rng([3, i, 0]))
        views = plan_heart_views(anat, np.random.default_rng([3, i, 1]))
        for plane in [views.sax[0], *views.lax.values()]:
            spacings.add(plane.spacing_mm)
            ratios.append(plane.spacing_mm[0] / plane.spacing_mm[1])
            assert 180 <= plane.rows <= 256 and 160 <= plane.columns <= 256
        x_dirs.append(views.sax[0].x_dir_lps)
    assert len(spacings) > 20
    assert any(abs(r - 1) > 0.02 for r in ratios) and any(r == 1 for r in ratios)
    assert max(np.degrees(np.arccos(np.clip(a @ b, -1, 1))) for a in x_dirs for b in x_dirs) > 10


# ---------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_any_worker_count(tmp_path):
    opts = CohortOptions("heart", 2, seed=5, phases=2, matrix=64)
    a = write_cohort(tmp_path / "a", opts, workers=1)
    b = write_cohort(tmp_path / "b", opts, workers=2)
    assert a == b
    ha, hb = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    assert ha == hb and len(ha) > 20
    # Subject k does not depend on the cohort size.
    write_cohort(tmp_path / "one", CohortOptions("heart", 1, seed=5, phases=2, matrix=64), workers=1)
    h1 = file_hashes(tmp_path / "one" / "subject_0000")
    assert h1 == file_hashes(tmp_path / "a" / "subject_0000")
    # Another seed: no file in common.
    write_cohort(tmp_path / "c", CohortOptions("heart", 2, seed=6, phases=2, matrix=64), workers=1)
    hc = file_hashes(tmp_path / "c")
    common = {k for k in ha if k in hc and ha[k] == hc[k] and k.endswith(".dcm")}
    assert not common
    assert any(k.endswith(".dcm") for k in hc)


# ---------------------------------------------------------------------- labels
@pytest.mark.parametrize("cohort", ["heart_kaggle", "heart_ukbb"])
def test_nifti_labels_align_with_dicom(cohort, request):
    out, meta = request.getfixturevalue(cohort)
    for summary in meta["subject_summaries"]:
        subject = out / summary["subject"]
        stack = sax_stack(subject / "study")
        es = summary["es_phase"]
        lv_area = {}
        for name, phase in (("sax_ed", 0), ("sax_es", es)):
            labels, affine = read_label_nifti(subject / "labels" / f"{name}.nii.gz")
            assert set(np.unique(labels)) <= {0, 1, 2, 3}
            assert {1, 2, 3} <= set(np.unique(labels))
            plane0 = stack[0][0]
            assert labels.shape == (plane0.columns, plane0.rows, len(stack))
            assert np.linalg.det(affine[:3, :3]) > 0
            lv_area[name] = int((labels == 3).sum())
            bright, dark = [], []
            for plane, frames in stack:
                # Voxel centres land on the DICOM pixel centres (RAS = LPS with x, y negated).
                lab = label_slice(labels, affine, plane)
                ijk0 = np.linalg.inv(affine) @ np.append(lps_to_ras(plane.origin_lps), 1.0)
                k = ijk0[2]
                for c, r in ((0, 0), (plane.columns - 1, 0), (7, plane.rows - 1), (plane.columns // 2, 9)):
                    ras = affine @ np.array([c, r, k, 1.0])
                    assert np.allclose(ras[:3], lps_to_ras(plane.pixel_to_lps(np.array([c, r]))), atol=1e-4)
                img = frames[phase].pixel_array.astype(float)
                if (lab == 3).sum() > 30 and (lab == 2).sum() > 30:
                    bright.append(img[lab == 3].mean())
                    dark.append(img[lab == 2].mean())
            assert len(bright) >= 3
            assert np.mean(bright) > 2.0 * np.mean(dark), "LV blood must be bright, myocardium dark"
        assert lv_area["sax_es"] < 0.7 * lv_area["sax_ed"]


# ---------------------------------------------------------------------- acceptance
def mid_ventricular(stack: list) -> list:
    n = len(stack)
    return stack[n // 2 - 1 : n // 2 + 2]


@pytest.mark.parametrize("cohort", ["heart_kaggle", "heart_ukbb"])
def test_acceptance_long_axis_lines_on_mid_ventricular_sax(cohort, request):
    out, meta = request.getfixturevalue(cohort)
    checked = 0
    for summary in meta["subject_summaries"]:
        subject = out / summary["subject"]
        study = subject / "study"
        stack = sax_stack(study)
        lax = lax_planes(study)
        labels, affine = read_label_nifti(subject / "labels" / "sax_ed.nii.gz")
        for plane, _frames in mid_ventricular(stack):
            lab = label_slice(labels, affine, plane)
            for view, lax_plane in lax.items():
                seg = intersect_images(plane, lax_plane).in_a
                assert seg is not None, f"{view} line misses the SAX image"
                d = distance_to_line_px(image_line(plane, lax_plane), plane.shape_px)
                near = d <= 1.0
                assert (near & (lab == 3)).sum() >= 5, f"{view} line misses the LV cavity"
                crosses_rv = bool((near & (lab == 1)).any())
                if view == "4CH":
                    assert crosses_rv, "4CH line must cross the RV"
                if view == "2CH":
                    assert not crosses_rv, "2CH line must stay clear of the RV"
                checked += 1
    assert checked >= 3 * 3 * len(meta["subject_summaries"])


def test_planned_views_over_many_subjects():
    """The same acceptance criteria on the anatomy model for 25 subjects (no files)."""
    for i in range(25):
        anat = sample_heart(np.random.default_rng([99, i, 0]))
        views = plan_heart_views(anat, np.random.default_rng([99, i, 1]), matrix=128)
        for plane in mid_ventricular([(p, None) for p in views.sax]):
            lab = acdc_labels(anat.codes_at(plane[0].pixel_grid_lps(), 0.0))
            for view, lax_plane in views.lax.items():
                near = distance_to_line_px(image_line(plane[0], lax_plane), plane[0].shape_px) <= 1.0
                assert (near & (lab == 3)).sum() >= 5, (i, view)
                if view in ("4CH", "2CH"):
                    assert bool((near & (lab == 1)).any()) == (view == "4CH"), (i, view)


def test_heart_frame_conventions():
    for i in range(30):
        a = sample_heart(np.random.default_rng([1, i, 0]))
        assert np.allclose(a.v, np.cross(a.u, a.w)) and abs(a.u @ a.w) < 1e-9
        assert np.degrees(np.arccos(a.w @ APEX_PRIOR_LPS)) <= 15.0 + 1e-6
        assert a.u[0] < 0 and a.u[1] < 0  # septum towards the right-anterior
        assert a.v[0] > 0 and a.v[1] < 0 and a.v[2] > 0  # anterior wall: left/anterior/superior
        views = plan_heart_views(a, np.random.default_rng([1, i, 1]))
        th = views.lax_theta_deg
        assert abs(th["4CH"]) <= 6 and 29 <= th["3CH"] <= 46 and abs(th["2CH"] - 90) <= 6
        for view, plane in views.lax.items():
            # Every long-axis plane contains the LV long axis (base centre and direction w).
            assert abs(plane.signed_distance_mm(a.base_lps)) < 1e-6, view
            assert abs(plane.normal_lps @ a.w) < 1e-9, view
            assert 6 <= views.lax_thickness_mm[view] <= 8
        n_sax = views.sax[0].normal_lps
        assert abs(abs(n_sax @ a.w) - 1) < 1e-9
        assert 8 <= len(views.sax) <= 14 and 8 <= views.sax_gap_mm <= 10 and 6 <= views.sax_thickness_mm <= 8
        # The first SAX slice is at the base (mitral level), the stack runs towards the apex.
        levels = [(p.centre_lps - a.base_lps) @ a.w for p in views.sax]
        assert 0 < levels[0] < 5 and np.all(np.diff(levels) > 0)
        assert unit(views.sax[-1].centre_lps - views.sax[0].centre_lps) @ a.w > 0.99
