"""The clinical heart phantom (``--realism clinical``): the simple look unchanged, determinism, exact
labels under breath-hold shifts, pathology groups that differ as ACDC's do, site headers, CLI."""

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
from PlaneSSLLib.geometry import lps_to_ras
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from PlaneSSLLib.phantoms.heart_clinical import (
    PATHOLOGIES,
    ClinicalTissue,
    clinical_labels,
    draw_breath_holds,
    draw_pathology,
    plan_clinical_views,
    sample_clinical_heart,
)
from PlaneSSLLib.phantoms.sites import SITES, draw_site, parse_site_weights
from training_cli.main import main


def images_and_labels_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and (p.suffix == ".dcm" or p.name.endswith(".nii.gz")):
            h.update(str(p.relative_to(root)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def test_simple_realism_writes_the_same_images_and_labels_as_before(tmp_path):
    """Digests of every DICOM and NIfTI file, computed on the generator before the clinical look existed."""
    write_cohort(tmp_path / "k", CohortOptions("heart", 2, seed=7, phases=2, matrix=64), workers=1)
    write_cohort(tmp_path / "u", CohortOptions("heart", 1, seed=8, layout="ukbb", phases=3, matrix=48), workers=1)
    assert images_and_labels_digest(tmp_path / "k") == (
        "f612ee8ec93c804b5e8bd0cdea1c1470c7568575aab87bd8ee521cede7731e22"
    )
    assert images_and_labels_digest(tmp_path / "u") == (
        "679b9e4a6733845b0d092c479b56af267f8d288b7245ec5d4221166e570b050b"
    )


@pytest.fixture(scope="module")
def clinical(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clinical")
    opts = CohortOptions("heart", 5, seed=21, phases=4, matrix=80, realism="clinical")
    return out, write_cohort(out, opts, workers=2)


def test_clinical_same_seed_same_bytes_any_worker_count(clinical, tmp_path):
    out, meta = clinical
    # Subjects 0 and 3 written alone, one process: byte-identical to the 2-process cohort.
    for i in (0, 3):
        from PlaneSSLLib.phantoms import write_subject

        write_subject(tmp_path, CohortOptions("heart", 5, seed=21, phases=4, matrix=80, realism="clinical"), i)
        name = f"subject_{i:04d}"
        assert images_and_labels_digest(tmp_path / name) == images_and_labels_digest(out / name)
    assert images_and_labels_digest(out) != images_and_labels_digest(tmp_path)  # not everything is equal


def test_subjects_csv_and_settings(clinical):
    out, meta = clinical
    rows = list(csv.DictReader((out / "subjects.csv").open()))
    assert list(rows[0]) == ["subject", "ed_phase", "es_phase", "n_sax", "pathology", "site", "sequence",
                             "field_strength_t"]
    assert sorted(r["pathology"] for r in rows) == sorted(PATHOLOGIES)  # one block of five: every group once
    assert all(r["site"] in SITES and r["sequence"] in ("bSSFP", "SPGR") for r in rows)
    settings = json.loads((out / "cohort.json").read_text())["phantom_settings"]
    assert settings["site_weights"] == {c: 1.0 for c in SITES}
    assert set(settings["pathology_ranges_mm"]) == set(PATHOLOGIES) and "contrast" in settings["sequences"]["bSSFP"]
    assert meta["options"]["realism"] == "clinical"
    for s in meta["subject_summaries"]:
        half = s["sax_gap_mm"] / 2  # the stack's spacing decides how near the last slice lands to its target
        assert -15.0 <= s["sax_first_level_mm"] <= 0.0 and abs(s["sax_last_level_past_apex_mm"]) <= 15.0 + half


def test_dicom_headers_say_site_and_sequence(clinical):
    out, _ = clinical
    for row in csv.DictReader((out / "subjects.csv").open()):
        site = SITES[row["site"]]
        files = sorted((out / row["subject"] / "study").glob("sax_*/*.dcm"))
        ds = pydicom.dcmread(files[0])
        assert float(ds.MagneticFieldStrength) == float(row["field_strength_t"]) == site.field_strength_t
        assert ds.Manufacturer == site.manufacturer and ds.InstitutionName == site.institution
        assert ds.SequenceVariant == ("SS" if row["sequence"] == "bSSFP" else "SP")
        assert ds.SequenceName and 6.0 <= float(ds.SliceThickness) <= 10.0
        assert "planessl" not in ds.InstitutionName.lower()


def _label_slice(labels: np.ndarray, affine: np.ndarray, origin_lps: np.ndarray) -> np.ndarray:
    k = int(round((np.linalg.inv(affine) @ np.append(lps_to_ras(origin_lps), 1.0))[2]))
    return labels[:, :, k].T


def test_labels_are_the_shifted_analytic_anatomy(clinical):
    """Every label slice = the tissue model sampled at the DICOM pixel centres minus that slice's breath-hold shift."""
    out, meta = clinical
    differs = 0
    for i in (0, 1):
        rng = lambda stream, i=i: np.random.default_rng([21, i, stream])  # noqa: E731  (the cohort's streams)
        site, sequence = draw_site(rng(3), parse_site_weights(None))
        anatomy = sample_clinical_heart(rng(0), draw_pathology(21, i), sequence.name)
        views = plan_clinical_views(anatomy, rng(1), site, 80)
        shifts, _, _ = draw_breath_holds(rng(4), len(views.sax))
        es = meta["subject_summaries"][i]["es_phase"]
        subject = out / f"subject_{i:04d}"
        files = sorted((subject / "study").glob("sax_*"), key=lambda p: int(p.name.split("_")[1]))
        for name, phase in (("sax_ed", 0), ("sax_es", es)):
            labels, affine = read_label_nifti(subject / "labels" / f"{name}.nii.gz")
            for k, plane in enumerate(views.sax):
                # The DICOM geometry is the planned (scanner's) plane, not the shifted anatomy's.
                read = plane_from_dataset(pydicom.dcmread(next(files[k].glob("*.dcm"))))
                assert read.is_same_plane(plane)
                c = anatomy.contraction(phase, 4)
                expected = clinical_labels(anatomy.codes_at(plane.pixel_grid_lps() - shifts[k], c))
                got = _label_slice(labels, affine, plane.origin_lps)
                assert np.array_equal(got, expected), (i, name, k)
                unshifted = clinical_labels(anatomy.codes_at(plane.pixel_grid_lps(), c))
                differs += int(not np.array_equal(unshifted, expected))
    assert differs > 5  # the breath-hold shifts move the labels


def _mid_areas(heart, contraction: float) -> dict[str, int]:
    """Pixel counts (0.5 mm grid) of LV cavity, myocardium and RV at 40 % of the LV length below the base."""
    g = np.arange(-80, 80, 0.5, dtype=np.float32)
    a, b = np.meshgrid(g, g)
    c = np.full_like(a, 0.4 * heart.lv_length_ed_mm + heart.descent_mm * contraction)
    lab = clinical_labels(heart.ventricle_codes((a, b, c), contraction))
    return {"lv": int((lab == 3).sum()), "myo": int((lab == 2).sum()), "rv": int((lab == 1).sum())}


def test_pathology_groups_differ_as_acdc_describes():
    stats: dict[str, list[tuple[float, float, int]]] = {p: [] for p in PATHOLOGIES}
    for p in PATHOLOGIES:
        for i in range(4):
            heart = sample_clinical_heart(np.random.default_rng([5, i, 0]), p, "bSSFP")
            ed, es = _mid_areas(heart, 0.0), _mid_areas(heart, 1.0)
            stats[p].append((1 - es["lv"] / ed["lv"], ed["myo"] / ed["lv"], ed["rv"]))
    mean = {p: np.mean(v, axis=0) for p, v in stats.items()}
    assert mean["DCM"][0] < mean["NOR"][0] - 0.2  # dilated: poor contraction
    assert mean["HCM"][1] > 2 * mean["NOR"][1]  # hypertrophic: thick wall, small cavity
    assert mean["ARV"][2] > 1.3 * mean["NOR"][2]  # abnormal RV: larger
    assert mean["MINF"][0] < mean["NOR"][0]  # an akinetic sector


def test_base_descends_so_basal_slices_show_atrium_at_es():
    for i in range(5):
        heart = sample_clinical_heart(np.random.default_rng([9, i, 0]), PATHOLOGIES[i], "bSSFP")
        assert 4.0 <= heart.descent_mm <= 15.0
        point = heart.frame_to_lps([-4.0, -4.0, 0.5 * heart.descent_mm])
        assert clinical_labels(heart.codes_at(point[None], 0.0))[0] == 3  # LV cavity at ED
        es_code = int(heart.codes_at(point[None], 1.0)[0])
        assert es_code == ClinicalTissue.LA_BLOOD, ClinicalTissue(es_code).name


def test_site_weights_option(tmp_path, capsys):
    assert parse_site_weights("b=2, A=1") == (("A", 1.0), ("B", 2.0))
    for bad, message in (("Z=1", "unknown site"), ("A=x", "not a number"), ("A=0", "positive weight")):
        with pytest.raises(ValueError, match=message):
            parse_site_weights(bad)
    code = main(["phantom", "heart", "--subjects", "1", "--sites", "Q=1", "--out", str(tmp_path / "c"), "--quiet"])
    assert code != 0 and "unknown site" in capsys.readouterr().err
    code = main(["phantom", "knee", "--subjects", "1", "--sites", "Q=1", "--out", str(tmp_path / "k"), "--quiet"])
    assert code != 0 and "unknown site" in capsys.readouterr().err  # the clinical knee has sites too
    code = main(["phantom", "heart", "--subjects", "2", "--sites", "B=1", "--phases", "2", "--matrix", "48",
                 "--workers", "1", "--quiet", "--out", str(tmp_path / "b")])
    assert code == 0 and "clinical" in capsys.readouterr().out
    meta = json.loads((tmp_path / "b" / "cohort.json").read_text())
    assert meta["options"]["sites"] == "B=1" and meta["phantom_settings"]["site_weights"] == {"B": 1.0}
    assert {s["site"] for s in meta["subject_summaries"]} == {"B"}
