"""The numpy segmentation network (``inference.unet_numpy``): torch's logits and labels, torch's checks, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reliability_weights import _export, _first_float, _rewrite

from PlaneSSLLib.inference.segment import find_study_sax_stack, load_seg_model, segment_stack
from PlaneSSLLib.inference.unet_numpy import NumpyUNet, load_numpy_unet, unet_state_shapes
from PlaneSSLLib.inference.weights import WeightsError
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig
from PlaneSSLLib.phantoms import CohortOptions, write_cohort

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources" / "Sample" / "heart-segmentation"


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
