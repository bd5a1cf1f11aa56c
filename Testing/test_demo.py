"""The README's main job end to end, at the smallest size: write, inspect, prepare, pretrain, evaluate and the
transfer experiment."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from training_cli.main import main

EXPERIMENT_DEMO = Path(__file__).resolve().parents[1] / "Resources" / "Configs" / "experiment_transfer_demo.yaml"


def test_demo_main_job_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    # the packaged experiment at the smallest budget: one seed, one step
    experiment = yaml.safe_load(EXPERIMENT_DEMO.read_text())
    experiment["seeds"] = [0]
    experiment["finetune_overrides"] |= {"optim.epochs": 1, "optim.steps_per_epoch": 1}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
    argv = ["demo", "--out", str(out), "--heart-subjects", "5", "--knee-subjects", "4", "--epochs", "1",
            "--transfer-config", str(tmp_path / "exp.yaml")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "PlaneSSL demo summary" in printed and "held-out pretext" in printed and "mirror confusion" in printed
    # it ends with the transfer experiment's table: scratch and two pretrained inits at 1 and 2 labelled subjects
    assert printed.rstrip().endswith(".") and "| labelled subjects | scratch | pretrained | encoder-only |" in printed
    assert "not whether pretraining helps" in printed and "experiment_transfer_clinical.yaml" in printed
    table = printed[printed.index("| labelled subjects"):]
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:4]] == ["1", "2"]
    with open(out / "transfer" / "heart" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["init"], r["labeled_subjects"]) for r in rows} == {
        (i, n) for i in ("scratch", "pretrained", "encoder-only") for n in ("1", "2")}
    transfers = {yaml.safe_load((d / "config.yaml").read_text())["init"]["transfer"]
                 for d in (out / "transfer" / "heart" / "runs").glob("encoder-only_*")}
    assert transfers == {"encoder"}
    assert (out / "transfer" / "heart" / "results.png").is_file()
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
        assert 0.0 <= report["pretrained"]["overall"]["mirror_confusion"] <= 1.0
        assert list((run / "pretext_eval" / "overlays").glob("*.png"))
    # a second run reuses every finished stage
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "reusing the cohort" in again and "reusing the pretrained network" in again


def test_evaluate_pretext_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["evaluate-pretext", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a pretraining run" in err and "Traceback" not in err
