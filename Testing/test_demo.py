"""The README's main job end to end, at the smallest size: write, inspect, prepare, pretrain, evaluate."""

from __future__ import annotations

import json

from training_cli.main import main


def test_demo_main_job_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--heart-subjects", "4", "--knee-subjects", "4", "--epochs", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "PlaneSSL demo summary" in printed and "held-out pretext" in printed
    summary = json.loads((out / "reports" / "summary.json").read_text())
    assert summary["heart"]["series_by_view"].keys() == {"SAX", "2CH", "3CH", "4CH"}
    assert summary["knee"]["series_by_view"] == {"AX": 4, "COR": 4, "SAG": 4}
    for anatomy in ("heart", "knee"):
        run = out / "pretrain" / anatomy
        assert (run / "model" / "model.safetensors").is_file() and (run / "model" / "manifest.json").is_file()
        assert (run / "progress.png").is_file() and (run / "config.yaml").is_file()
        report = json.loads((run / "pretext_eval" / "report.json").read_text())
        assert report["pretrained"]["overall"]["n_images"] > 0
        assert report["untrained"]["overall"]["n_images"] == report["pretrained"]["overall"]["n_images"]
        assert list((run / "pretext_eval" / "overlays").glob("*.png"))
    # a second run reuses every finished stage
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "reusing the cohort" in again and "reusing the pretrained network" in again


def test_evaluate_pretext_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["evaluate-pretext", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a pretraining run" in err and "Traceback" not in err
