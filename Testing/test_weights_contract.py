"""One weights contract: the per-task manifest table, one exporter and one loader for every architecture."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from PlaneSSLLib.inference import weights
from PlaneSSLLib.inference.manifest import ACL_LABELS, TASKS, build_manifest, validate_manifest
from PlaneSSLLib.inference.weights import WeightsError, export_model, export_weights, load_model
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig
from PlaneSSLLib.models.exam_classifier import ExamClassifier, ExamClassifierConfig
from PlaneSSLLib.preprocess.labels import ACDC_LABEL_NAMES, terminology_record
from PlaneSSLLib.slicer_logic import worker
from training_cli.main import main

COMMON = {"input_size_hw": (32, 32), "input_spacing_mm": 2.0,
          "intensity_normalisation": {"method": "minmax", "clip_percentiles": [0.5, 99.5]}}
ACL_DECISION = {"threshold": 0.4, "positive": "torn"}


def _config(task: str) -> UNetConfig | ExamClassifierConfig:
    lines = {"lines": 2, "both": 2, "location": 0, "seg": len(ACDC_LABEL_NAMES)}
    if task == "acl":
        encoder = UNetConfig(base_filters=2, levels=2, line_channels=0, location_head=False)
        return ExamClassifierConfig(encoder=encoder, hidden=4, attention_hidden=2)
    return UNetConfig(base_filters=2, levels=2, line_channels=lines[task], location_head=task in ("location", "both"),
                      location_hidden=4)


def _manifest(task: str) -> dict:
    extra = {
        "lines": {"views": {"SAG": ["COR", "AX"]}, "channels": ["COR", "AX"]},
        "both": {"views": {"SAG": ["COR", "AX"]}, "channels": ["COR", "AX"]},
        "location": {"views": ["SAG"]},
        "seg": {"views": ["SAX"], "channels": list(ACDC_LABEL_NAMES), "label_names": list(ACDC_LABEL_NAMES),
                "terminology": terminology_record()},
        "acl": {"views": ["SAG", "COR", "AX"], "label_names": list(ACL_LABELS), "decision": ACL_DECISION},
    }[task]
    return json.loads(json.dumps(build_manifest(_config(task), task, **extra, **COMMON)))


def _network(task: str) -> torch.nn.Module:
    config = _config(task)
    return ExamClassifier(config) if task == "acl" else PlaneSSLNet(config)


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_builds_a_valid_manifest(task):
    validated = validate_manifest(_manifest(task), "m.json", expect_task=task)
    assert validated.task == task and validated.architecture.name == TASKS[task].architecture
    assert validated.preparation.size_px == 32 and validated.preparation.spacing_mm == 2.0


def _drop(key):
    def change(m):
        del m[key]
    return change


def _set(path, value):
    def change(m):
        *parents, last = path.split(".")
        for p in parents:
            m = m[p]
        m[last] = value
    return change


BROKEN = [
    ("lines", _set("channels", ["COR"]), "channels"),
    ("lines", _set("views", 3), "views"),
    ("lines", _drop("channels"), "missing key(s): channels"),
    ("location", _set("architecture.config.location_head", False), "architecture.config.location_head"),
    ("both", _set("channels", []), "channels"),
    ("seg", _set("terminology", None), "terminology must be an object"),
    ("seg", _drop("terminology"), "missing key(s): terminology"),
    ("seg", lambda m: m["terminology"]["labels"].pop("3"), "terminology.labels"),
    ("seg", _set("terminology.labels.2.color_rgb", [0, 300, 0]), "terminology.labels.2.color_rgb"),
    ("seg", _set("label_names", ["background", "RV"]), "label_names"),
    ("seg", _set("input.spacing_mm", [math.inf, 2.0]), "input.spacing_mm"),
    ("seg", _set("input.spacing_mm", [1e-9, 1e-9]), "input.spacing_mm"),  # campaign: a traceback when resampling
    ("seg", _set("channels", ["background"]), "channels"),  # campaign: accepted beside four label names
    ("seg", _set("input.size_hw", [32, 16]), "input must be square"),
    ("acl", _drop("decision"), "decision is missing"),
    ("acl", _set("decision.threshold", 1.5), "decision.threshold"),
    ("acl", _set("decision.positive", "intact"), "decision.positive"),
    ("acl", _set("label_names", ["no", "yes"]), "label_names"),
    ("acl", _set("architecture.name", "PlaneSSLNet"), "architecture 'PlaneSSLNet' does not serve task 'acl'"),
    ("acl", _set("input.size_hw", [0, 0]), "input.size_hw"),
    ("lines", _set("architecture.name", "ResNet"), "unknown architecture 'ResNet'"),
    ("lines", _set("architecture.config.bogus", 1), "invalid architecture.config"),
    ("seg", _set("intensity_normalisation.clip_percentiles", [99, 1]), "intensity_normalisation.clip_percentiles"),
    ("both", _set("task", "nonsense"), "task 'nonsense' is not one of"),
]


@pytest.mark.parametrize(("task", "change", "key"), BROKEN, ids=[f"{t}-{k}" for t, _, k in BROKEN])
def test_task_table_rejects_a_wrong_or_missing_key(task, change, key):
    manifest = copy.deepcopy(_manifest(task))
    change(manifest)
    with pytest.raises(WeightsError) as info:
        validate_manifest(manifest, "/w/model/manifest.json")
    assert str(info.value).startswith("/w/model/manifest.json: ")
    assert key in str(info.value)


def test_expected_task_is_enforced():
    with pytest.raises(WeightsError, match="m.json: weights of task 'both'.*not a segmentation network"):
        validate_manifest(_manifest("both"), "m.json", expect_task="seg")
    with pytest.raises(WeightsError, match="task 'seg'.*no line heatmaps"):
        validate_manifest(_manifest("seg"), "m.json", expect_task=("lines", "both"))
    with pytest.raises(WeightsError, match="not an exam classifier"):
        validate_manifest(_manifest("lines"), "m.json", expect_task="acl")


def test_build_manifest_takes_the_architecture_and_decision_as_arguments():
    config = _config("acl")
    explicit = build_manifest(config.encoder, "acl", architecture={"name": "PlaneSSLExamClassifier",
                                                                   "config": config.to_dict()},
                              decision=ACL_DECISION, label_names=list(ACL_LABELS), **COMMON)
    derived = build_manifest(config, "acl", decision=ACL_DECISION, label_names=list(ACL_LABELS), **COMMON)
    assert explicit == derived
    assert derived["architecture"]["name"] == "PlaneSSLExamClassifier" and derived["decision"] == ACL_DECISION
    assert "decision" not in build_manifest(_config("seg"), "seg", **COMMON)


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_round_trips_through_export_model_and_load_model(task, tmp_path):
    net = _network(task).eval()
    out = export_model(net, tmp_path / task, _manifest(task))
    loaded, manifest = load_model(out, expect_task=task)
    assert type(loaded) is type(net) and not loaded.training
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert manifest["task"] == task and len(manifest["model_id"]) == 16
    if task == "acl":
        assert manifest["decision"] == ACL_DECISION and loaded.config == net.config
    assert export_weights is export_model


def test_a_bad_manifest_is_refused_before_anything_is_written(tmp_path):
    manifest = _manifest("acl")
    del manifest["decision"]
    with pytest.raises(WeightsError, match="decision"):
        export_model(_network("acl"), tmp_path / "acl", manifest)
    assert not (tmp_path / "acl").exists()


def _count_validations(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = weights.validate_manifest

    def counting(manifest, source, expect_task=None):
        calls.append(source)
        return real(manifest, source, expect_task)

    monkeypatch.setattr(weights, "validate_manifest", counting)
    return calls


@pytest.mark.parametrize(("task", "worker_task", "cli"), [("seg", "segment_heart", ["predict", "seg"]),
                                                          ("acl", "classify_knee", ["predict", "acl"])])
def test_worker_and_cli_validate_through_the_one_loader_once(task, worker_task, cli, tmp_path, monkeypatch, capsys):
    model = export_model(_network(task), tmp_path / "model", _manifest(task))
    calls = _count_validations(monkeypatch)
    with pytest.raises((ValueError, KeyError)):  # loaded, then the request holds no image
        worker.TASKS[worker_task]({}, {"model": str(model)}, "cpu", lambda i, n: None)
    assert len(calls) == 1 and calls[0].startswith(str(model))
    calls.clear()
    missing = tmp_path / "no_study"
    extra = ["--out", str(tmp_path / "out")] if task == "seg" else []
    assert main([*cli, str(missing), "--weights", str(model), *extra]) == 2  # loaded, then no input found
    assert "no_study" in capsys.readouterr().err
    assert len(calls) == 1 and calls[0].startswith(str(model))
