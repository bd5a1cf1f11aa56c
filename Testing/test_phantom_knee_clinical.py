"""The clinical knee phantom (``--realism clinical``): the simple look unchanged, an asymmetric joint, ACL grades
with overlapping secondary signs, sites and sequences in the headers, records, determinism, the sagittal
location medial -> lateral for both sides, the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from PlaneSSLLib.data.cache import open_cache
from PlaneSSLLib.data.prepare import prepare_cache
from PlaneSSLLib.dicom.planes import plane_from_dataset
from PlaneSSLLib.phantoms import CohortOptions, acl_torn, plan_knee_stacks, sample_knee, write_cohort
from PlaneSSLLib.phantoms.cohort import CohortError, clinical_knee_subject, read_cohort_options
from PlaneSSLLib.phantoms.knee import ClinicalKneeTissue as T
from PlaneSSLLib.phantoms.knee_clinical import (
    ACL_GRADES,
    KNEE_SEQUENCES,
    KNEE_SITES,
    clinical_knee_coverage,
    draw_acl_grade,
    sample_clinical_knee,
)
from PlaneSSLLib.preprocess.codes import VIEW_CODES
from PlaneSSLLib.preprocess.config import PrepareConfig
from training_cli.main import main


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and (p.suffix == ".dcm" or p.name == "labels.csv"):
            h.update(str(p.relative_to(root)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def test_simple_knee_writes_the_same_files_as_before(tmp_path):
    """Digest of every DICOM file and labels.csv, computed on the generator before the clinical knee existed."""
    write_cohort(tmp_path / "k", CohortOptions("knee", 2, seed=5, matrix=64), workers=1)
    assert digest(tmp_path / "k") == "e05c9d3660f4c2bdcded3e38130aca185adb03d419396e99f4fe38fa7812c2d2"


@pytest.fixture(scope="module")
def clinical(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("knee_clinical")
    return out, write_cohort(out, CohortOptions("knee", 5, seed=11, matrix=48, realism="clinical"), workers=1)


def test_the_anatomy_rebuilt_from_the_seed_is_the_one_written(clinical, tmp_path):
    """``read_cohort_options`` and ``clinical_knee_subject`` give the writer's own options and draws, and the
    oracle check built on them (scripts/acl_signal_probe.py) finds each torn ACL brighter over its own pixels
    than every intact one."""
    out, _meta = clinical
    options = read_cohort_options(out)
    assert options == CohortOptions("knee", 5, seed=11, matrix=48, realism="clinical")
    labels = list(csv.DictReader((out / "labels.csv").open()))
    for i, row in enumerate(labels):
        _site, _sequence, grade, anatomy = clinical_knee_subject(options, i)
        assert (grade, f"{anatomy.effusion_mm:.2f}") == (row["acl_grade"], f"{float(row['effusion_mm']):.2f}")
    report = tmp_path / "signal.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "acl_signal_probe.py"
    done = subprocess.run([sys.executable, str(script), str(out), "--spacing-mm", "2.0", "--size-px", "48",
                           "--json", str(report)], capture_output=True, text=True, check=True)
    assert "AUC torn vs intact" in done.stdout
    rows = json.loads(report.read_text())
    assert [r["grade"] for r in rows] == [r["acl_grade"] for r in labels]
    assert all(r["features"]["prepared"]["core_px"] > 0 for r in rows)
    torn = [r["features"]["prepared"]["core"] for r in rows if r["grade"] != "intact"]
    intact = [r["features"]["prepared"]["core"] for r in rows if r["grade"] == "intact"]
    assert torn and intact and min(torn) > max(intact)
    with pytest.raises(CohortError, match="cohort.json: cannot read"):
        read_cohort_options(tmp_path)


def test_records_grades_sites_and_headers(clinical):
    out, meta = clinical
    labels = list(csv.DictReader((out / "labels.csv").open()))
    subjects = list(csv.DictReader((out / "subjects.csv").open()))
    assert list(labels[0]) == ["subject", "acl_tear", "acl_grade", "effusion_mm", "bone_bruise"]
    assert list(subjects[0]) == ["subject", "laterality", "site", "sequence", "field_strength_t"]
    grades = [draw_acl_grade(11, i) for i in range(5)]
    assert [r["acl_grade"] for r in labels] == grades
    assert sorted(grades) == ["complete", "intact", "intact", "intact", "partial"]
    assert [int(r["acl_tear"]) for r in labels] == [int(g != "intact") for g in grades]
    assert meta["options"]["realism"] == "clinical"
    settings = meta["phantom_settings"]
    assert set(settings["sites"]) == set("ABCD") and set(settings["sequences"]) == set(KNEE_SEQUENCES)
    assert settings["site_weights"] == {c: 1.0 for c in "ABCD"}
    for row in subjects:
        site, seq = KNEE_SITES[row["site"]], KNEE_SEQUENCES[row["sequence"]]
        assert row["sequence"] in site.sequences and float(row["field_strength_t"]) == site.field_strength_t
        for folder in sorted((out / row["subject"] / "study").iterdir()):
            ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
            assert ds.Laterality == row["laterality"] and ds.Manufacturer == site.manufacturer
            assert float(ds.MagneticFieldStrength) == site.field_strength_t
            assert ds.SequenceName == seq.sequence_name and float(ds.EchoTime) == seq.echo_time_ms
            assert ("FS" in ds.SeriesDescription) == (ds.ScanOptions == "FS") == (row["sequence"] != "PD")
            assert "PatientName" not in json.dumps(meta)


def test_same_seed_same_bytes_with_two_workers(clinical, tmp_path):
    out, _ = clinical
    write_cohort(tmp_path / "again", CohortOptions("knee", 2, seed=11, matrix=48, realism="clinical"), workers=2)
    for name in ("subject_0000", "subject_0001"):
        assert digest(tmp_path / "again" / name) == digest(out / name)
    again = (tmp_path / "again" / "subjects.csv").read_text().splitlines()
    assert again == (out / "subjects.csv").read_text().splitlines()[:3]


def test_grades_keep_the_torn_fraction_and_balance_partial_and_complete():
    for seed in range(30):
        grades = [draw_acl_grade(seed, i) for i in range(20)]
        assert [g != "intact" for g in grades] == [acl_torn(seed, i) for i in range(20)]
        assert grades.count("partial") == grades.count("complete") == 4


def _mirror_mismatch(knee, step: float = 2.0) -> float:
    """Share of bone voxels (canonical frame, around the joint) whose mirror image across m = 0 is not bone."""
    m, a, s = np.meshgrid(np.arange(-50, 50.1, step), np.arange(-50, 50.1, step), np.arange(-45, 40.1, step),
                          indexing="ij")
    q = tuple(x.astype(np.float32).ravel() for x in (m, a, s))
    bone = np.isin(knee.codes_k(q), [T.CORTEX, T.MARROW, T.BONE_BRUISE]).reshape(m.shape)
    return float((bone & ~bone[::-1]).sum() / bone.sum())


def test_the_joint_is_asymmetric():
    rng = np.random.default_rng(0)
    knee = sample_clinical_knee(rng, "intact", KNEE_SEQUENCES["PDFS"])
    (med_c, med_s), (lat_c, lat_s) = knee.condyles["medial"], knee.condyles["lateral"]
    assert med_c[2] - med_s[2] < lat_c[2] - lat_s[2] - 1.0  # the medial condyle reaches lower
    assert med_s[1] > lat_s[1] + 2.0  # and is longer front to back
    fib_c, fib_s = knee.fibula_head_k()
    top_below_plateau = knee.plateau_top_mm - (fib_c[2] + fib_s[2])
    assert 8.0 <= top_below_plateau <= 15.0
    assert fib_c[0] < -0.6 * knee.tibia_semi_mm[0] and fib_c[1] < knee.tibia_centre_a_mm  # posterolateral
    # Concave medial, convex lateral plateau.
    ac = np.float32(knee.tibia_centre_a_mm)
    surface = knee.plateau_surface(np.array([22.0, -22.0], np.float32), np.array([ac, ac], np.float32))
    flat = knee.plateau_top(np.array([ac], np.float32))[0]
    assert surface[0] < flat - 1.0 and surface[1] > flat + 0.5
    simple = sample_knee(np.random.default_rng(0), False)
    assert _mirror_mismatch(knee) > 1.5 * _mirror_mismatch(simple)  # measured: 0.089 against 0.045


def _meniscus_horns_mm(knee, m_mm: float) -> tuple[float, float]:
    """(anterior, posterior) horn length front to back in the sagittal plane at ``m_mm``, 1 mm above the plateau."""
    ac = float(knee.tibia_centre_a_mm)
    a = np.arange(ac - 30.0, ac + 30.0, 0.1, dtype=np.float32)
    m = np.full(a.shape, m_mm, np.float32)
    s = knee.plateau_surface(m, a) + np.float32(1.0)
    meniscus = knee.codes_k((m, a, s.astype(np.float32))) == T.MENISCUS
    return 0.1 * float(meniscus[a > ac].sum()), 0.1 * float(meniscus[a < ac].sum())


def test_menisci_and_side_tendons_tell_medial_from_lateral():
    """Sagittal cues of the side: the medial posterior meniscal horn about twice the anterior one, the lateral horns
    alike; the popliteus and biceps femoris tendons only laterally, the semimembranosus only medially."""
    knee = sample_clinical_knee(np.random.default_rng(0), "intact", KNEE_SEQUENCES["PDFS"])
    for d in (16.0, 22.0, 28.0):
        ant, post = _meniscus_horns_mm(knee, d)
        assert post > 1.6 * ant > 0, (d, ant, post)
        ant, post = _meniscus_horns_mm(knee, -d)
        assert 0.75 * ant < post < 1.33 * ant, (-d, ant, post)
    simple = sample_knee(np.random.default_rng(0), False)
    assert simple.meniscus_horns_mm is None and simple.side_tendons is None
    for name, side in (("popliteus", -1), ("biceps_femoris", -1), ("semimembranosus", 1)):
        points, radius = knee.side_tendons[name]
        assert np.all(side * points[:, 0] > 15.0), name  # wholly on its side of the joint
        mid = 0.5 * (points[0] + points[1])
        assert knee.codes_k(tuple(np.array([x], np.float32) for x in mid))[0] == T.TENDON, name
    # The same knee otherwise: the new structures are drawn after every earlier draw.
    again = sample_clinical_knee(np.random.default_rng(0), "intact", KNEE_SEQUENCES["PDFS"])
    assert knee.fibula_head_k()[0].tolist() == again.fibula_head_k()[0].tolist()


def test_sagittal_coverage_is_the_bone_plus_a_few_mm():
    knee = sample_clinical_knee(np.random.default_rng(3), "partial", KNEE_SEQUENCES["PD"])
    coverage = clinical_knee_coverage(knee, np.random.default_rng(4))
    stack = plan_knee_stacks(knee, np.random.default_rng(5), 48, coverage=coverage)["SAG"]
    m = [float((p.centre_lps - knee.origin_lps) @ knee.axes_lps[0]) for p in stack.planes]
    fib_c, fib_s = knee.fibula_head_k()
    medial_bone = knee.condyles["medial"][0][0] + knee.condyles["medial"][1][0]
    lateral_bone = fib_c[0] - fib_s[0]
    assert medial_bone - 1 < max(m) < medial_bone + 3 + stack.spacing_mm
    assert lateral_bone - 3 - stack.spacing_mm < min(m) < lateral_bone + 1


def _acl_codes(knee) -> np.ndarray:
    t = np.linspace(0.05, 0.95, 60)[:, None]
    pts = knee.acl_femoral_k + t * (knee.acl_tibial_k - knee.acl_femoral_k)
    return knee.codes_k(tuple(pts[:, i].astype(np.float32) for i in range(3)))


def test_acl_grades_look_as_graded():
    seq = KNEE_SEQUENCES["PDFS"]
    intact = _acl_codes(sample_clinical_knee(np.random.default_rng(1), "intact", seq))
    assert np.all(intact[6:-6] == T.ACL)  # (its ends lie in the bones)
    partial_knee = sample_clinical_knee(np.random.default_rng(1), "partial", seq)
    partial = _acl_codes(partial_knee)
    assert (partial == T.ACL_DAMAGED).sum() >= 10 and (partial == T.ACL).sum() >= 5
    complete_knee = sample_clinical_knee(np.random.default_rng(1), "complete", seq)
    complete = _acl_codes(complete_knee)
    t0, t1 = complete_knee.tear_interval
    t = np.linspace(0.05, 0.95, 60)
    assert not np.isin(complete[(t > t0 + 0.02) & (t < t1 - 0.02)], [T.ACL, T.ACL_DAMAGED]).any()  # the gap
    assert complete_knee.acl_stump_k is not None and seq.contrast["ACL_DAMAGED"] > seq.contrast["ACL"]


def test_secondary_signs_overlap_between_grades():
    found: dict[str, list] = {g: [] for g in ACL_GRADES}
    for i in range(300):
        grade = ACL_GRADES[i % 3]
        knee = sample_clinical_knee(np.random.default_rng([7, i]), grade, KNEE_SEQUENCES["PDFS"])
        found[grade].append((knee.effusion_mm, knee.bone_bruise))
    intact = np.array(found["intact"])
    torn = np.array(found["partial"] + found["complete"])
    assert 0.1 < (intact[:, 0] > 3.0).mean() < 0.4  # an effusion in some intact knees
    assert 0.1 < (torn[:, 0] <= 3.0).mean() < 0.5  # a dry joint in some torn knees
    assert 0 < intact[:, 1].mean() < 0.15 and 0.3 < torn[:, 1].mean() < 0.8  # bone bruise: some, not all


def test_sagittal_location_runs_medial_to_lateral_for_both_sides(tmp_path):
    out = tmp_path / "c"
    meta = write_cohort(out, CohortOptions("knee", 4, seed=2, matrix=40, realism="clinical"), workers=1)
    sides = {s["subject"]: s["laterality"] for s in meta["subject_summaries"]}
    assert set(sides.values()) == {"L", "R"}, "the seed should give both knees"
    cache = open_cache(prepare_cache(out, tmp_path / "cache", PrepareConfig(spacing_mm=3.0, size_px=32)).cache_dir)
    index = cache.index
    sag = index["view"] == VIEW_CODES["SAG"]
    for subject in range(len(cache.subject_keys)):
        rows = np.flatnonzero(sag & (index["subject"] == subject))
        loc, x = index["location"][rows], index["origin_lps"][rows][:, 0]
        # The subject's side from its own DICOM header.
        first = next((out / f"subject_{subject:04d}" / "study" / "sag_2").glob("*.dcm"))
        lateral_is_left = pydicom.dcmread(first).Laterality == "L"
        assert abs(np.corrcoef(loc, x)[0, 1]) > 0.99
        assert (np.polyfit(loc, x, 1)[0] > 0) == lateral_is_left
        assert loc.min() == 0.0 and loc.max() == 1.0
    assert plane_from_dataset(pydicom.dcmread(first)).rows == 40


def test_cli_realism_and_sites(capsys, tmp_path):
    code = main(["phantom", "knee", "--subjects", "2", "--seed", "4", "--matrix", "40", "--workers", "1", "--quiet",
                 "--sites", "B=1", "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert code == 0 and "clinical:" in out and "torn ACL" in out
    rows = list(csv.DictReader((tmp_path / "b" / "subjects.csv").open()))
    assert {r["site"] for r in rows} == {"B"} and {r["field_strength_t"] for r in rows} == {"3.0"}
    code = main(["phantom", "knee", "--subjects", "1", "--realism", "simple", "--sites", "A=1", "--quiet",
                 "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code != 0 and "--sites applies to clinical cohorts only" in err and "Traceback" not in err
