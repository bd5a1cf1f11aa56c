"""Damaged weights never give a confident answer (issue 15, finding 2).

Each case builds a real exported model (tiny networks of ``test_weights_contract``), damages it
the way a bad download, a bad disk or a diverged training would, and checks that loading refuses
it with a message naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from test_weights_contract import _manifest, _network

from PlaneSSLLib.inference.classify import classify_exam
from PlaneSSLLib.inference.weights import MANIFEST_FILE, WEIGHTS_FILE, WeightsError, export_model, load_model
from PlaneSSLLib.preprocess.exams import Exam
from training_cli.main import main


def _export(tmp_path: Path, task: str = "acl") -> Path:
    torch.manual_seed(0)
    return export_model(_network(task).eval(), tmp_path / task, _manifest(task))


def _rewrite(model: Path, change_tensors=None, change_manifest=None, rehash: bool = True) -> None:
    """Damage a weights folder; ``rehash`` keeps the manifest's checksums in step (the damage is then
    only what ``change_tensors`` did, as in weights exported from a diverged training)."""
    state = safetensors_load((model / WEIGHTS_FILE).read_bytes())
    if change_tensors:
        change_tensors(state)
    data = safetensors_save(state)
    (model / WEIGHTS_FILE).write_bytes(data)
    manifest = json.loads((model / MANIFEST_FILE).read_text())
    if rehash:
        digest = hashlib.sha256(data).hexdigest()
        manifest["weights_sha256"], manifest["model_id"] = digest, digest[:16]
    if change_manifest:
        change_manifest(manifest)
    (model / MANIFEST_FILE).write_text(json.dumps(manifest))


def _first_float(state: dict) -> str:
    return sorted(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)[0]


def test_export_records_the_sha256_of_the_weights_file(tmp_path):
    model = _export(tmp_path)
    manifest = json.loads((model / MANIFEST_FILE).read_text())
    digest = hashlib.sha256((model / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert manifest["weights_sha256"] == digest and manifest["model_id"] == digest[:16]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_tensors_are_refused_naming_the_tensor(tmp_path, bad):
    model = _export(tmp_path)
    names: list[str] = []

    def poison(state):
        names.append(_first_float(state))
        state[names[0]].view(-1)[0] = bad

    _rewrite(model, poison)
    with pytest.raises(WeightsError) as info:
        load_model(model, expect_task="acl")
    message = str(info.value)
    assert str(model) in message and names[0] in message and "non-finite" in message


def test_a_flipped_byte_is_refused_by_the_checksum(tmp_path):
    model = _export(tmp_path)
    data = bytearray((model / WEIGHTS_FILE).read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's values: still a readable safetensors file
    (model / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"model\.safetensors.*weights_sha256"):
        load_model(model, expect_task="acl")


def test_a_model_id_that_is_not_the_weights_hash_is_refused(tmp_path):
    model = _export(tmp_path)

    def fake(manifest):
        del manifest["weights_sha256"]
        manifest["model_id"] = "0123456789abcdef"

    _rewrite(model, change_manifest=fake, rehash=False)
    with pytest.raises(WeightsError, match="model_id"):
        load_model(model, expect_task="acl")


def test_a_malformed_checksum_is_refused(tmp_path):
    model = _export(tmp_path)
    _rewrite(model, change_manifest=lambda m: m.update(weights_sha256=12))
    with pytest.raises(WeightsError, match="weights_sha256 must be"):
        load_model(model, expect_task="acl")


def test_a_manifest_without_checksums_still_loads(tmp_path):
    """Manifests written before the checksum was recorded (no weights_sha256, no model_id) load."""
    model = _export(tmp_path)

    def old(manifest):
        del manifest["weights_sha256"], manifest["model_id"]

    _rewrite(model, change_manifest=old, rehash=False)
    _, manifest = load_model(model, expect_task="acl")
    assert manifest["model_id"] == hashlib.sha256((model / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]


@pytest.mark.parametrize("damage", ["shape", "dtype", "missing"])
def test_tensors_that_do_not_match_the_architecture_are_refused(tmp_path, damage):
    model = _export(tmp_path)

    def change(state):
        name = _first_float(state)
        if damage == "shape":
            state[name] = torch.zeros(state[name].numel() + 1)
        elif damage == "dtype":
            state[name] = state[name].double()
        else:
            del state[name]

    _rewrite(model, change)
    with pytest.raises(WeightsError, match="does not (match|fit) architecture.config"):
        load_model(model, expect_task="acl")


def test_export_refuses_non_finite_weights_and_writes_nothing(tmp_path):
    net = _network("acl")
    with torch.no_grad():
        next(p for p in net.parameters() if p.numel() > 1).view(-1)[0] = float("nan")
    with pytest.raises(WeightsError, match="non-finite"):
        export_model(net, tmp_path / "acl", _manifest("acl"))
    assert not (tmp_path / "acl").exists()


def test_predict_acl_with_nan_weights_fails_and_prints_no_json(tmp_path, capsys):
    model = _export(tmp_path)
    _rewrite(model, lambda s: s[_first_float(s)].view(-1).__setitem__(0, float("nan")))
    assert main(["predict", "acl", str(tmp_path / "no_exam"), "--weights", str(model)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "non-finite" in err and "Traceback" not in err


def test_a_non_finite_probability_is_never_reported(tmp_path):
    model, manifest = load_model(_export(tmp_path), expect_task="acl")
    stacks = {v: np.full((3, 32, 32), np.nan, np.float32) for v in model.config.views}
    with pytest.raises(WeightsError, match="non-finite probability"):
        classify_exam(model, manifest, Exam(key="k", stacks=stacks))


def test_non_finite_segmentation_probabilities_are_never_turned_into_labels(tmp_path):
    from PlaneSSLLib.inference.segment import predict_probabilities

    net, _ = load_model(_export(tmp_path, "seg"), expect_task="seg")
    images = np.zeros((2, 32, 32), np.float32)
    assert np.isfinite(predict_probabilities(net, images)).all()
    images[1, 3, 4] = np.nan
    with pytest.raises(WeightsError, match="non-finite class probabilities for image 2"):
        predict_probabilities(net, images)


@pytest.mark.parametrize("change", [{"base_filters": 2 ** 20}, {"levels": 40}])
def test_a_manifest_naming_a_huge_network_is_refused_before_building_it(tmp_path, change):
    """The architecture is checked against the tensors in the file before any memory is allocated."""
    model = _export(tmp_path, "seg")
    _rewrite(model, change_manifest=lambda m: m["architecture"]["config"].update(change))
    with pytest.raises(WeightsError, match="does not match architecture.config|architecture.config describes"
                                           "|invalid architecture.config .*(filters at the deepest|levels must be)"):
        load_model(model, expect_task="seg")
