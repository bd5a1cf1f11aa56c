"""``finetune acl`` from scratch and from exported pretraining weights; ``predict acl`` JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from PlaneSSLLib.data.exams import attach_labels, read_labels_csv
from PlaneSSLLib.data.splits import SplitError, split_exams
from PlaneSSLLib.inference.classify import load_classifier, predict_exam
from PlaneSSLLib.inference.weights import WeightsError, build_manifest, export_weights
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig
from PlaneSSLLib.preprocess.config import PrepareConfig
from PlaneSSLLib.preprocess.exams import ExamError, exams_from_dicom
from PlaneSSLLib.training.config import ConfigError
from PlaneSSLLib.training.engine import RunExistsError
from PlaneSSLLib.training.finetune_acl import _epoch_order, acl_config_from_dict, finetune_acl

SIZE, SPACING = 32, 4.5
PREP = PrepareConfig(spacing_mm=SPACING, size_px=SIZE, dtype="float32", anatomy="knee")
TINY = {
    "data": {"image_size": SIZE, "spacing_mm": SPACING, "val_fraction": 0.4, "max_slices": 4},
    "model": {"base_filters": 4, "levels": 3, "hidden": 8},
    "optim": {"epochs": 2, "batch_size": 2},
    "evaluation": {"bootstrap": 100},
}


@pytest.fixture(scope="module")
def exams(knee_cohort):
    return attach_labels(exams_from_dicom(knee_cohort, PREP), read_labels_csv(knee_cohort / "labels.csv"), "labels.csv")


def _config(root, out, **data):
    raw = json.loads(json.dumps(TINY))
    raw["data"] |= {"root": str(root), **data}
    raw["output"] = str(out)
    return acl_config_from_dict(raw)


def _pretrained(path):
    net = PlaneSSLNet(UNetConfig(base_filters=4, levels=3, line_channels=3))
    manifest = build_manifest(net.config, "both", views={"SAG": ["COR", "AX"]}, channels=["a", "b", "c"],
                              input_size_hw=(SIZE, SIZE), input_spacing_mm=SPACING,
                              intensity_normalisation=PREP.normalisation_record())
    return export_weights(net, path, manifest), net


def test_exams_from_dicom(exams, tmp_path):
    assert len(exams) == 5
    assert [e.label for e in exams] == [1, 0, 1, 0, 0]
    for e in exams:
        assert set(e.stacks) == {"SAG", "COR", "AX"}
        assert all(a.shape[1:] == (SIZE, SIZE) and a.shape[0] >= 20 for a in e.stacks.values())
        assert len(e.key) == 12 and "subject" not in e.key  # hashed, not the folder name
    with pytest.raises(ExamError, match="no complete exam"):
        attach_labels(exams, {"subject_9999": 1}, "x.csv")
    (tmp_path / "bad.csv").write_text("subject,acl_tear\nsubject_0000,2\n")
    with pytest.raises(ExamError, match=r"bad.csv: line 2"):
        read_labels_csv(tmp_path / "bad.csv")


def test_split_is_stratified_and_independent_of_seed(exams):
    train, val, test = split_exams(exams, 0.4, 0, None, 0)
    assert sorted(e.label for e in val) == [0, 1] and len(train) == 3 and test == []
    t1, v1, _ = split_exams(exams, 0.4, 0, 2, 5)
    assert [e.key for e in v1] == [e.key for e in val]
    assert sorted(e.label for e in t1) == [0, 1]
    with pytest.raises(SplitError, match="labeled-subjects"):
        split_exams(exams, 0.4, 0, 9, 0)
    # a test split: disjoint from validation and training, stratified, and fixed by split_seed alone
    tr, va, te = split_exams(exams, 0.3, 0, None, 0, test_fraction=0.3)
    keys = [[e.key for e in part] for part in (tr, va, te)]
    assert sorted(sum(keys, [])) == sorted(e.key for e in exams) and all(keys)
    assert sorted({e.label for e in tr}) == [0, 1]
    assert [e.key for e in split_exams(exams, 0.3, 0, 1, 7, test_fraction=0.3)[2]] == keys[2]


def test_fixed_steps_per_epoch_cover_the_exams_evenly():
    labels = np.array([1, 0, 0, 0, 1, 0])
    assert sorted(_epoch_order(labels, "pos_weight", np.random.default_rng(0))) == list(range(6))
    order = _epoch_order(labels, "pos_weight", np.random.default_rng(0), steps=10, batch_size=2)
    assert len(order) == 20 and np.ptp(np.bincount(order, minlength=6)) <= 1
    # the same budget with fewer exams than a batch: batches of all of them
    assert len(_epoch_order(labels[:1], "none", np.random.default_rng(0), steps=5, batch_size=2)) == 5
    balanced = _epoch_order(labels, "sampler", np.random.default_rng(0), steps=200, batch_size=2)
    assert abs(labels[balanced].mean() - 0.5) < 0.1  # classes drawn equally often


def test_finetune_from_scratch_via_cli_then_predict(knee_cohort, tmp_path, capsys):
    from training_cli.main import build_parser

    config = tmp_path / "acl.yaml"
    config.write_text(json.dumps(TINY))
    parser = build_parser()
    out = tmp_path / "run"
    args = parser.parse_args(["finetune", "acl", "--config", str(config), "--set", f"data.root={knee_cohort}",
                              "model.pooling=attention", "model.spatial_pooling=max", "--seed", "3", "--out", str(out)])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "auc on val" in captured.err
    summary = json.loads(captured.out)
    assert summary["task"] == "acl" and summary["metric"] == "auc" and summary["evaluated_on"] == "val"
    for name in ("config.yaml", "metrics.csv", "metrics.json", "checkpoints/best.safetensors",
                 "model/model.safetensors", "model/manifest.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "model/manifest.json").read_text())
    assert manifest["task"] == "acl" and manifest["label_names"] == ["intact", "torn"]
    assert manifest["architecture"]["config"]["pooling"] == "attention"
    assert manifest["architecture"]["config"]["spatial_pooling"] == "max"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"auc", "accuracy", "sensitivity", "specificity"} <= set(metrics)
    text = "".join(p.read_text() for p in out.rglob("*.json")) + (out / "config.yaml").read_text()
    assert "planessl-knee-" not in text and "PHANTOM" not in text  # no identifiers

    args = parser.parse_args(["predict", "acl", str(knee_cohort / "subject_0001"), "--weights", str(out / "model"),
                              "--json"])
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"probability", "prediction", "threshold", "inputs", "model"}
    assert 0.0 <= result["probability"] <= 1.0 and result["prediction"] in ("torn", "intact")
    assert result["prediction"] == ("torn" if result["probability"] >= result["threshold"] else "intact")
    assert set(result["inputs"]) == {"SAG", "COR", "AX"} and result["model"] == manifest["model_id"]
    assert all(v["slices"] >= 20 and len(v["series"]) >= 12 for v in result["inputs"].values())
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "acl", str(knee_cohort)])  # --weights is required


def test_finetune_from_pretrained_export(knee_cohort, exams, tmp_path):
    weights, net = _pretrained(tmp_path / "pre")
    cfg = _config(knee_cohort, tmp_path / "ft", image_size=None, spacing_mm=None)
    result = finetune_acl(cfg, weights, labeled_subjects=2, seed=1, exams=exams)
    assert result.init == "pretrained" and result.n_train == 2 and result.n_val == 2
    assert 1 <= result.best_epoch <= 2 and len(result.history) == 2
    rows = result.results_rows()
    assert {r["metric"] for r in rows} >= {"auc", "auc_ci_low", "accuracy", "val_auc", "val_auc_ci_low", "val_accuracy"}
    assert result.metrics["split"] == "validation" and result.n_test == 0  # no test split: validation reported
    assert all(r["task"] == "acl" and r["labeled_subjects"] == 2 and r["seed"] == 1 for r in rows)
    model, manifest = load_classifier(result.weights)
    init = manifest["training_config"]["init"]
    assert init["kind"] == "pretrained" and len(init["encoder_sha256"]) == 16
    pretrained = json.loads((Path(weights) / "manifest.json").read_text())
    assert init["weights_sha256"] == pretrained["weights_sha256"] and init["model_id"] == pretrained["model_id"]
    assert manifest["input"]["size_hw"] == [SIZE, SIZE] and manifest["input"]["spacing_mm"] == [SPACING, SPACING]
    # frozen encoder: the transferred weights survive training unchanged
    frozen = _config(knee_cohort, tmp_path / "frozen")
    frozen.optim.freeze_transferred = True
    frozen.optim.epochs = 1
    res = finetune_acl(frozen, weights, seed=0, exams=exams)
    trained, _ = load_classifier(res.weights)
    for k, v in net.encoder.state_dict().items():
        assert (trained.encoder.state_dict()[k] == v).all(), k


def test_errors_name_the_problem(knee_cohort, exams, tmp_path):
    weights, _ = _pretrained(tmp_path / "pre")
    with pytest.raises(WeightsError, match="not an exam classifier"):
        predict_exam(knee_cohort / "subject_0000", weights)
    with pytest.raises(ConfigError, match="data.pooling|model.pooling"):
        acl_config_from_dict({"data": {"root": "x"}, "model": {"pooling": "mean"}})
    with pytest.raises(ConfigError, match="model.spatial_pooling"):
        acl_config_from_dict({"data": {"root": "x"}, "model": {"spatial_pooling": "sum"}})
    with pytest.raises(ConfigError, match="unknown key"):
        acl_config_from_dict({"data": {"root": "x", "val_fractoin": 0.2}})
    cfg = _config(knee_cohort, tmp_path / "r")
    cfg.optim.epochs = 1
    finetune_acl(cfg, "scratch", seed=0, exams=exams)
    with pytest.raises(RunExistsError, match="already holds"):
        finetune_acl(cfg, "scratch", seed=0, exams=exams)


def test_transfer_experiment_for_acl_reports_test_auc(knee_cohort, tmp_path, capsys):
    """``planessl experiment transfer`` with task acl: scratch and pretrained inits, a test split, the table."""
    import csv

    import yaml

    from training_cli.main import main

    weights, _ = _pretrained(tmp_path / "pre")
    finetune = json.loads(json.dumps(TINY))
    finetune["data"] |= {"root": str(knee_cohort), "val_fraction": 0.2, "test_fraction": 0.2}
    finetune["optim"] |= {"epochs": 1, "steps_per_epoch": 2}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(finetune))
    experiment = {"task": "acl", "finetune_config": str(tmp_path / "ft.yaml"), "labeled_subjects": [2],
                  "seeds": [0], "inits": {"scratch": "scratch", "pretrained": str(weights)}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
    out = tmp_path / "exp"
    assert main(["experiment", "transfer", "--config", str(tmp_path / "exp.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Headline metric: `auc`" in printed and "| labelled subjects | scratch | pretrained |" in printed
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["init"], r["labeled_subjects"], r["seed"]) for r in rows} == {("scratch", "2", "0"),
                                                                          ("pretrained", "2", "0")}
    assert {"auc", "val_auc", "sensitivity_ci_high"} <= {r["metric"] for r in rows}
    for init in ("scratch", "pretrained"):
        metrics = json.loads((out / "runs" / f"{init}_n2_s0" / "metrics.json").read_text())
        assert metrics["split"] == "test" and metrics["n_exams"] == 2 and metrics["validation"]["n_exams"] == 1
        assert metrics["n_train"] == 2


def test_grades_are_read_checked_and_scored(tmp_path):
    """A labels file's acl_grade reaches Exam.grade; a grade that is unknown or contradicts acl_tear is named with
    its file and line; without the column there are no grades. The by-grade metrics score each torn grade
    against every intact exam."""
    from PlaneSSLLib.data.exams import attach_grades, read_grades_csv
    from PlaneSSLLib.preprocess.exams import Exam
    from PlaneSSLLib.training.finetune_acl import metrics_by_grade

    good = tmp_path / "labels.csv"
    good.write_text("subject,acl_tear,acl_grade\na,0,intact\nb,1,partial\nc,1,Complete\n")
    assert read_grades_csv(good) == {"a": "intact", "b": "partial", "c": "complete"}
    plain = tmp_path / "plain.csv"
    plain.write_text("subject,acl_tear\na,0\n")
    assert read_grades_csv(plain) == {}
    for body, problem in (("a,0,torn\n", "line 2: acl_grade must be one of"),
                          ("a,0,intact\nb,0,partial\n", "line 3: acl_grade 'partial' contradicts acl_tear 0")):
        bad = tmp_path / "bad.csv"
        bad.write_text("subject,acl_tear,acl_grade\n" + body)
        with pytest.raises(ExamError, match=f"bad.csv: {problem}"):
            read_grades_csv(bad)
    exams = [Exam(key=k, stacks={}, folder=k) for k in "abx"]
    attach_grades(exams, read_grades_csv(good))
    assert [e.grade for e in exams] == ["intact", "partial", None]

    grades = ["intact", "intact", "intact", "partial", "partial", "complete", "complete"]
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.6, 0.3, 0.15, 0.9, 0.8])
    out = metrics_by_grade(grades, labels, probs, 0.5)
    assert out["intact"] == {"n": 3, "specificity": pytest.approx(2 / 3)}
    assert out["complete"] == {"n": 2, "auc": 1.0, "sensitivity": 1.0}
    # partial 0.3 beats intact 0.1, 0.2, loses to 0.6; 0.15 beats 0.1 only: 3 of 6 pairs
    assert out["partial"] == {"n": 2, "auc": pytest.approx(0.5), "sensitivity": 0.0}
    assert metrics_by_grade([*grades[:-1], None], labels, probs, 0.5) == {}
