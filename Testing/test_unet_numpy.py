"""The numpy network (``inference.unet_numpy``): torch's logits, labels and heatmaps, torch's checks, no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reliability_weights import _export, _first_float, _rewrite

from PlaneSSLLib.inference.segment import find_study_sax_stack, load_seg_model, segment_stack
from PlaneSSLLib.inference.unet_numpy import NumpyUNet, load_numpy_unet, unet_state_shapes
from PlaneSSLLib.inference.weights import WeightsError, load_validated
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig
from PlaneSSLLib.phantoms import CohortOptions, write_cohort

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources" / "Sample" / "heart-segmentation"
LINES = ROOT / "Resources" / "Sample" / "heart-plane-lines"  # task "both": a location head


def _torch_net(config: UNetConfig) -> PlaneSSLNet:
    torch.manual_seed(0)
    net = PlaneSSLNet(config)
    with torch.no_grad():
        for m in net.modules():  # BatchNorm statistics away from (0, 1), so that folding them matters
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("levels", [2, 3])
def test_numpy_logits_are_torchs(norm, levels):
    config = UNetConfig(base_filters=4, levels=levels, line_channels=4, location_head=False, norm=norm)
    net = _torch_net(config)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    assert {k: (tuple(v.shape), str(v.dtype)) for k, v in state.items()} == unet_state_shapes(config)
    x = np.random.default_rng(levels).random((3, 1, 32, 24), dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x))["lines"].numpy()
    got = NumpyUNet(config, state).logits(x)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    with pytest.raises(ValueError, match="divisible"):
        NumpyUNet(config, state).logits(x[:, :, :, :23])


def test_heatmaps_of_a_network_with_a_location_head():
    config = UNetConfig(base_filters=4, levels=3, line_channels=3, location_head=True, location_hidden=8)
    net = _torch_net(config)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    assert {k: (tuple(v.shape), str(v.dtype)) for k, v in state.items()} == unet_state_shapes(config)
    with pytest.raises(ValueError, match="location head"):
        NumpyUNet(config, state)
    x = np.random.default_rng(5).random((2, 1, 16, 16), dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x))["lines"].numpy()
    np.testing.assert_allclose(NumpyUNet(config, state, heatmaps_only=True).logits(x), ref, atol=1e-5)


def test_sample_line_network_heatmaps_are_torchs():
    """The bundled heart line network (with its location head) gives torch's heatmaps within 1e-4."""
    fast, validated = load_numpy_unet(LINES, ("lines", "both"), heatmaps_only=True)
    slow, _ = load_validated(LINES, "cpu", expect_task=("lines", "both"))
    assert validated.config.location_head
    x = np.random.default_rng(0).standard_normal((4, 1, 96, 96)).astype(np.float32)
    with torch.no_grad():
        ref = slow(torch.from_numpy(x))["lines"].numpy()
    got = fast.logits(x)
    assert got.shape == ref.shape == (4, 4, 96, 96) and float(np.abs(ref).max()) > 0.1
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def _damage_location_nan(state):
    state["location.mlp.0.weight"].view(-1)[3] = float("inf")


def _damage_location_shape(state):
    state["location.mlp.2.bias"] = torch.zeros(2)


def _damage_location_missing(state):
    del state["location.mlp.2.weight"]


@pytest.mark.parametrize(("damage", "message"), [
    (None, "without a location head"), (_damage_location_nan, "'location.mlp.0.weight' holds non-finite"),
    (_damage_location_shape, r"location.mlp.2.bias \(2,\)"), (_damage_location_missing, r"missing \['location"),
])
def test_the_location_head_is_checked_though_not_run(tmp_path, damage, message):
    model = tmp_path / "lines"
    shutil.copytree(LINES, model)
    if damage is not None:
        _rewrite(model, damage)
    else:  # whole: loads for its heatmaps, refused as a segmentation-style network
        load_numpy_unet(model, ("lines", "both"), heatmaps_only=True)
    with pytest.raises(WeightsError, match=message) as info:
        load_numpy_unet(model, ("lines", "both"), heatmaps_only=damage is not None)
    assert str(model) in str(info.value)


def test_same_labels_as_torch_on_a_study(tmp_path):
    write_cohort(tmp_path / "c", CohortOptions("heart", subjects=1, seed=2, phases=2, matrix=64), workers=1)
    stack = find_study_sax_stack(tmp_path / "c" / "subject_0000")
    fast = load_seg_model(SAMPLE)
    assert isinstance(fast.net, NumpyUNet)
    slow = load_seg_model(SAMPLE, backend="torch")
    assert isinstance(slow.net, PlaneSSLNet)
    a, b = segment_stack(fast, stack, 1), segment_stack(slow, stack, 1)
    assert a.labels.any() and np.array_equal(a.labels, b.labels)
    assert fast.manifest["model_id"] == slow.manifest["model_id"]


def _damage_nan(state):
    state[_first_float(state)].view(-1)[0] = float("nan")


def _damage_shape(state):
    name = _first_float(state)
    state[name] = torch.zeros(state[name].numel() + 1)


def _damage_dtype(state):
    name = _first_float(state)
    state[name] = state[name].double()


def _damage_missing(state):
    del state[_first_float(state)]


@pytest.mark.parametrize(("damage", "message"), [
    (_damage_nan, "non-finite values"), (_damage_shape, "does not match architecture.config"),
    (_damage_dtype, "does not match architecture.config"), (_damage_missing, "does not match architecture.config"),
])
def test_damaged_weights_are_refused_as_by_the_torch_loader(tmp_path, damage, message):
    model = _export(tmp_path, "seg")
    load_numpy_unet(model, "seg")  # whole: loads
    _rewrite(model, damage)
    with pytest.raises(WeightsError, match=message) as info:
        load_numpy_unet(model, "seg")
    assert str(model) in str(info.value)


def test_a_flipped_byte_and_another_task_are_refused(tmp_path):
    model = _export(tmp_path, "seg")
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (model / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="weights_sha256"):
        load_numpy_unet(model, "seg")
    with pytest.raises(WeightsError, match="task"):
        load_numpy_unet(_export(tmp_path / "acl"), "seg")


def test_predict_seg_imports_no_torch(tmp_path):
    """The whole ``planessl predict seg`` process runs without importing torch (or highdicom)."""
    write_cohort(tmp_path / "c", CohortOptions("heart", subjects=1, seed=1, phases=2, matrix=48), workers=1)
    script = (
        "import sys\n"
        "from training_cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "heavy = sorted(m for m in ('torch', 'highdicom', 'safetensors.torch') if m in sys.modules)\n"
        "import os\n"
        "print('HEAVY', heavy, 'BLAS', os.environ.get('OPENBLAS_NUM_THREADS'), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | {"PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", script, "predict", "seg", str(tmp_path / "c" / "subject_0000"),
                          "--weights", str(SAMPLE), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "HEAVY [] BLAS 1" in run.stderr  # one BLAS thread: small matrices (training_cli/commands/predict.py)
    phases = json.loads(run.stdout)["phases"]
    assert Path(phases[0]["dicom_seg"]).is_file() and Path(phases[0]["nifti"]).is_file()
