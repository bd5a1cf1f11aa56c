"""``planessl plan``: long-axis views proposed from a study's SAX stack (inference/plan_views.py, reformat.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from PlaneSSLLib.dicom.views import APEX_PRIOR_LPS
from PlaneSSLLib.geometry.frames import affine_ras_to_lps
from PlaneSSLLib.geometry.lines import intersection_line_lps
from PlaneSSLLib.geometry.plane_fit import SliceLine
from PlaneSSLLib.geometry.planes import ImagePlane, angle_between_normals_deg
from PlaneSSLLib.inference.plan_views import FITS, acquired_view_planes, plan_from_lines, plan_study
from PlaneSSLLib.inference.reformat import reformat_stack
from PlaneSSLLib.inference.segment import find_study_sax_stack
from training_cli.main import main

ROOT = Path(__file__).resolve().parents[1]
LINES = ROOT / "Resources" / "Sample" / "heart-plane-lines"
SEG = ROOT / "Resources" / "Sample" / "heart-segmentation"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def study(heart_cohort: Path) -> Path:
    return heart_cohort / "subject_0000"


def test_plan_json_and_outputs(capsys, study, tmp_path):
    code, out, err = run_cli(capsys, "plan", str(study), "--weights", str(LINES), "--json", "--out", str(tmp_path))
    assert code == 0, err
    plan = json.loads(out)
    n_sax = plan["sax"]["slices"]
    assert n_sax >= 6
    acquired = acquired_view_planes(find_study_sax_stack(study))
    for view in ("2CH", "3CH", "4CH"):
        entry = plan["views"][view]
        n = np.array(entry["normal_lps"])
        assert abs(np.linalg.norm(n) - 1) < 1e-5 and len(entry["point_lps"]) == 3
        iop = np.array(entry["image_orientation_patient"])
        x, y = iop[:3], iop[3:]
        assert abs(x @ y) < 1e-5 and np.allclose(np.cross(x, y), n, atol=1e-5)
        assert len(entry["slices"]) == n_sax and 2 <= entry["slices_used"] <= n_sax
        assert entry["rows"] * entry["pixel_spacing_mm"][0] == pytest.approx(entry["fov_mm"][0], abs=0.01)
        # The acquired view's figures are the geometry of the two planes.
        acq = entry["acquired"]
        assert acq["angle_deg"] == pytest.approx(angle_between_normals_deg(n, acquired[view].normal_lps), abs=1e-2)
        dist = abs(float((acquired[view].centre_lps - np.array(entry["point_lps"])) @ n))
        assert acq["distance_mm"] == pytest.approx(dist, abs=1e-2)
        assert 0 <= acq["angle_deg"] <= 90
        # The reformatted view lies on the proposed plane.
        img = nib.load(str(tmp_path / f"{view}_proposed.nii.gz"))
        assert img.shape == (entry["columns"], entry["rows"], 1)
        a = affine_ras_to_lps(img.affine)
        assert np.allclose(a[:3, 3], entry["image_position_patient"], atol=1e-3)
        assert np.allclose(a[:3, 0] / np.linalg.norm(a[:3, 0]), x, atol=1e-5)
        assert np.asarray(img.dataobj).max() > 0
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["views"] == plan["views"] and set(saved["reformatted"]) == {"2CH", "3CH", "4CH"}
    # No identifier or path of the study in the plan.
    assert str(study) not in out and "subject_0000" not in out
    # Text output.
    code, text, _ = run_cli(capsys, "plan", str(study), "--weights", str(LINES))
    assert code == 0 and "4CH" in text and "deg" in text


def _angle_deg(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)), abs(a @ b))))


def test_plan_imports_no_torch_and_plans_as_the_torch_network(study, tmp_path):
    """A real ``planessl plan`` process on the CPU imports no torch (its network in numpy, the sample
    weights' location head checked, not run), and its plan is the torch network's."""
    script = (
        "import sys\n"
        "from training_cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "heavy = sorted(m for m in ('torch', 'safetensors.torch', 'highdicom') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", script, "plan", str(study), "--weights", str(LINES), "--json",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "HEAVY []" in run.stderr
    fast = json.loads(run.stdout)
    slow = plan_study(study, LINES, backend="torch").as_dict()
    assert fast["model_id"] == slow["model_id"]
    for view in ("2CH", "3CH", "4CH"):
        a, b = fast["views"][view], slow["views"][view]
        assert _angle_deg(a["normal_lps"], b["normal_lps"]) < 1e-3
        assert np.allclose(a["point_lps"], b["point_lps"], atol=1e-2)
        assert a["acquired"]["angle_deg"] == pytest.approx(b["acquired"]["angle_deg"], abs=1e-3)
        assert [e["slice"] for e in a["slices"]] == [e["slice"] for e in b["slices"]]
        assert a["slices_used"] == b["slices_used"]
    with pytest.raises(ValueError, match="CPU only"):
        plan_study(study, LINES, device="cuda", backend="numpy")


def test_exact_lines_through_the_real_study_give_the_acquired_planes(study):
    stack = find_study_sax_stack(study)
    acquired = acquired_view_planes(stack)
    assert set(acquired) == {"2CH", "3CH", "4CH"}
    lines = {}
    for view, plane in acquired.items():
        lines[view] = []
        for k, sax in enumerate(stack.planes):
            p, d = intersection_line_lps(sax, plane)
            lines[view].append(SliceLine(k, p, d, 1.0))
    for fit in FITS:
        plan = plan_from_lines(lines, stack.planes, acquired, fit=fit)
        for view in acquired:
            assert plan.views[view].angle_deg < 0.1 and plan.views[view].distance_mm < 0.1, (fit, view)
        assert plan.sax_angle_deg < 0.1
    assert plan.apex_direction_lps @ APEX_PRIOR_LPS > 0
    # A proposed view is acquired with the apex up.
    assert plan.views["4CH"].proposed.y_dir_lps @ plan.apex_direction_lps < -0.9


def test_reformat_on_a_slice_gives_the_slice_back():
    rng = np.random.default_rng(0)
    planes = [ImagePlane.centred([0, 0, 8.0 * k], [1, 0, 0], [0, 1, 0], (1.5, 1.2), (20, 24)) for k in range(4)]
    pixels = [rng.uniform(0, 100, (20, 24)).astype(np.float32) for _ in planes]
    assert np.allclose(reformat_stack(pixels, planes, planes[2]), pixels[2], atol=1e-3)
    # Half way between two slices: their mean; far outside the stack: 0.
    mid = ImagePlane.centred([0, 0, 12.0], [1, 0, 0], [0, 1, 0], (1.5, 1.2), (20, 24))
    assert np.allclose(reformat_stack(pixels, planes, mid), (pixels[1] + pixels[2]) / 2, atol=1e-3)
    far = ImagePlane.centred([0, 0, 60.0], [1, 0, 0], [0, 1, 0], (1.5, 1.2), (20, 24))
    assert not reformat_stack(pixels, planes, far).any()


def test_bad_inputs_exit_2_with_a_message(capsys, study, tmp_path, heart_cohort):
    code, _, err = run_cli(capsys, "plan", str(tmp_path / "missing"), "--weights", str(LINES))
    assert code == 2 and "missing" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "plan", str(empty), "--weights", str(LINES))
    assert code == 2 and "no usable SAX stack" in err
    code, _, err = run_cli(capsys, "plan", str(study), "--weights", str(SEG))
    assert code == 2 and "heart-segmentation" in err
    code, _, err = run_cli(capsys, "plan", str(study), "--weights", str(LINES), "--phase", "9")
    assert code == 2 and "phase 9 out of range" in err
    # A study with only the long-axis views: no SAX stack.
    lax_only = tmp_path / "lax"
    shutil.copytree(study, lax_only, ignore=shutil.ignore_patterns("sax_*"))
    out_dir = tmp_path / "out"
    code, _, err = run_cli(capsys, "plan", str(lax_only), "--weights", str(LINES), "--out", str(out_dir))
    assert code == 2 and "SAX" in err and not out_dir.exists()


def test_plan_is_reproducible(capsys, study, tmp_path):
    outs = []
    for name in ("a", "b"):
        code, _, err = run_cli(capsys, "plan", str(study), "--weights", str(LINES), "--out", str(tmp_path / name))
        assert code == 0, err
        outs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    assert outs[0] == outs[1]


def test_derived_dicom_views(capsys, study, tmp_path):
    import subprocess

    import pydicom
    from conftest import require_tool

    from PlaneSSLLib.dicom.planes import plane_from_dataset

    code, out, err = run_cli(capsys, "plan", str(study), "--weights", str(LINES), "--json", "--dicom",
                             "--out", str(tmp_path))
    assert code == 0, err
    plan = json.loads(out)
    sax = pydicom.dcmread(next(study.glob("*/sax_*/*.dcm")), stop_before_pixels=True)
    for view, entry in plan["views"].items():
        assert plan["reformatted"][view] == {"nifti": f"{view}_proposed.nii.gz", "dicom": f"{view}_proposed.dcm"}
        ds = pydicom.dcmread(tmp_path / f"{view}_proposed.dcm")
        plane = plane_from_dataset(ds, 0)
        assert np.allclose(plane.image_position_patient, entry["image_position_patient"], atol=1e-3)
        assert np.allclose(plane.image_orientation_patient, entry["image_orientation_patient"], atol=1e-5)
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert ds.StudyInstanceUID == sax.StudyInstanceUID and ds.SeriesInstanceUID != sax.SeriesInstanceUID
        assert len(ds.SourceImageSequence) == plan["sax"]["slices"]
        nifti = np.asarray(nib.load(str(tmp_path / f"{view}_proposed.nii.gz")).dataobj)[:, :, 0].T
        assert np.array_equal(ds.pixel_array, np.clip(np.rint(nifti), 0, 65535).astype(np.uint16))
    dciodvfy = require_tool("dciodvfy")
    for f in sorted(tmp_path.glob("*.dcm")):
        result = subprocess.run([dciodvfy, str(f)], capture_output=True, text=True)
        assert "Error" not in result.stdout + result.stderr, (f.name, result.stderr[-2000:])
    code, _, err = run_cli(capsys, "plan", str(study), "--weights", str(LINES), "--dicom")
    assert code == 2 and "--out" in err


def test_study_without_long_axis_views_still_planned(capsys, study, tmp_path):
    sax_only = tmp_path / "sax_only"
    shutil.copytree(study, sax_only, ignore=shutil.ignore_patterns("2ch_*", "3ch_*", "4ch_*"))
    code, out, err = run_cli(capsys, "plan", str(sax_only), "--weights", str(LINES), "--json", "--fit", "free")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["fit"] == "free"
    for view in ("2CH", "3CH", "4CH"):
        assert plan["views"][view]["acquired"] is None and len(plan["views"][view]["normal_lps"]) == 3
    assert plan["sax"]["angle_deg"] is not None  # the SAX orientation from the proposed 2CH x 4CH
