"""``planessl evaluate-plan``: planning errors over a cohort beside the no-image baseline (inference/plan_eval.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from PlaneSSLLib.geometry.planes import angle_between_normals_deg, unit
from PlaneSSLLib.inference.plan_eval import baseline_normals, sax_frame, summarise
from training_cli.main import main

LINES = Path(__file__).resolve().parents[1] / "Resources" / "Sample" / "heart-plane-lines"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_baseline_is_the_others_mean_orientation_relative_to_the_sax_stack():
    rng = np.random.default_rng(0)
    apexes = [unit(np.array([0.55, -0.45, -0.65]) + rng.normal(0, 0.2, 3)) for _ in range(4)]
    frames = [sax_frame(a) for a in apexes]
    for f, a in zip(frames, apexes, strict=True):
        assert np.allclose(f @ f.T, np.eye(3), atol=1e-12) and np.allclose(f[2], a)
    rel = unit(np.array([0.3, 0.95, 0.0]))
    # Every study holds the view at the same orientation relative to its SAX frame (signs differ): exact.
    acquired = [{"4CH": (-1) ** i * f.T @ rel} for i, f in enumerate(frames)]
    for acq, base in zip(acquired, baseline_normals(frames, acquired, "4CH"), strict=True):
        assert angle_between_normals_deg(base, acq["4CH"]) < 1e-6
    # Leave one out: a study's own orientation does not enter its baseline.
    acquired[0] = {"4CH": frames[0].T @ unit(np.array([0.95, 0.3, 0.0]))}
    base0 = baseline_normals(frames, acquired, "4CH")[0]
    assert angle_between_normals_deg(base0, frames[0].T @ rel) < 1e-6
    assert baseline_normals(frames[:1], acquired[:1], "4CH") == [None]
    assert baseline_normals(frames, acquired, "2CH") == [None] * 4


def test_summary_medians_and_90th_percentiles():
    rows = [{"study": str(i), "view": "2CH", "method": "planner", "angle_deg": float(i), "distance_mm": 2.0 * i}
            for i in range(11)] + [{"study": "x", "view": "2CH", "method": "planner", "angle_deg": float("nan"),
                                    "distance_mm": float("nan")}]
    s = summarise(rows, [])
    assert s["views"]["2CH"]["planner"]["angle_deg"] == {"n": 11, "median": 5.0, "p90": 9.0}
    assert s["views"]["2CH"]["planner"]["distance_mm"]["median"] == 10.0
    assert s["views"]["4CH"]["baseline"]["angle_deg"] == {"n": 0, "median": None, "p90": None}


def test_evaluate_plan_on_a_cohort(capsys, heart_cohort, tmp_path):
    out_dir = tmp_path / "eval"
    code, out, err = run_cli(capsys, "evaluate-plan", "--data", f"phantom:{heart_cohort}", "--weights", str(LINES),
                             "--fit", "sax-normal", "free", "--json", "--out", str(out_dir))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["studies"] == 2 and summary["fits"] == ["sax-normal", "free"]
    for view in ("2CH", "3CH", "4CH"):
        for method in ("planner", "baseline", "planner:free"):
            stats = summary["views"][view][method]["angle_deg"]
            assert stats["n"] == 2 and 0 <= stats["median"] <= stats["p90"] <= 90
    # sax-normal keeps the SAX orientation; the free fit gives it back from 2CH x 4CH.
    assert summary["sax"]["planner"]["angle_deg"]["median"] == pytest.approx(0.0, abs=1e-6)
    assert summary["sax"]["planner:free"]["angle_deg"]["n"] == 2
    with open(out_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len([r for r in rows if r["view"] != "SAX"]) == 2 * 3 * 3
    assert json.loads((out_dir / "summary.json").read_text())["views"] == summary["views"]
    text = (out_dir / "results.csv").read_text() + out
    assert "subject_" not in text and str(heart_cohort) not in text  # hashed study keys only
    code, out, _ = run_cli(capsys, "evaluate-plan", "--data", str(heart_cohort), "--weights", str(LINES))
    assert code == 0 and "baseline" in out and "4CH" in out


def test_evaluate_plan_bad_inputs(capsys, heart_cohort, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(heart_cohort / "subject_0000", one / "subject_0000")
    code, _, err = run_cli(capsys, "evaluate-plan", "--data", str(one), "--weights", str(LINES))
    assert code == 2 and "at least 2" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "evaluate-plan", "--data", f"mrnet:{one}", "--weights", str(LINES))
    assert code == 2 and "mrnet" in err
    code, _, err = run_cli(capsys, "evaluate-plan", "--data", str(one), "--weights", str(LINES), "--fit", "best")
    assert code == 2 and "--fit best" in err
    code, _, err = run_cli(capsys, "evaluate-plan", "--data", str(tmp_path / "nothing"), "--weights", str(LINES))
    assert code == 2 and "nothing" in err
