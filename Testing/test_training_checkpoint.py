"""Checkpoints and exported weights: safetensors + JSON only, never pickle; atomic writes."""

from __future__ import annotations

import json
import pickle
import zipfile

import pytest

torch = pytest.importorskip("torch")

from PlaneSSLLib.atomic import atomic_write_bytes  # noqa: E402
from PlaneSSLLib.inference.weights import (  # noqa: E402
    WeightsError,
    build_manifest,
    export_weights,
    load_exported,
    zip_weights,
)
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig  # noqa: E402
from PlaneSSLLib.training.checkpoint import (  # noqa: E402
    CheckpointError,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def no_pickle(monkeypatch):
    """Any unpickling (pickle, torch.load) fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)

    class NoUnpickler(pickle.Unpickler):
        def load(self):
            raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(torch, "load", boom)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    net = PlaneSSLNet(UNetConfig(base_filters=4, levels=3, line_channels=2, location_hidden=8))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return net, opt, sched, scaler


def _step(net, opt, sched):
    out = net(torch.randn(2, 1, 16, 16))
    loss = out["lines"].square().mean() + out["location"].square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_checkpoint_round_trip_without_pickle(tmp_path, no_pickle):
    import random

    import numpy as np

    net, opt, sched, scaler = _setup()
    _step(net, opt, sched)
    path = save_checkpoint(tmp_path / "last.safetensors", net, opt, sched, scaler,
                           {"epoch": 1, "global_step": 1, "history": [{"val_loss": 0.5}], "best_metric": None})
    assert path.with_suffix(".json").is_file()
    expect_torch, expect_np, expect_py = torch.rand(3), np.random.rand(3), random.random()  # noqa: NPY002
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    _step(net, opt, sched)  # move everything on

    net2, opt2, sched2, scaler2 = _setup(seed=1)
    state = restore_checkpoint(load_checkpoint(path), net2, opt2, sched2, scaler2)
    assert state["epoch"] == 1 and state["history"][0]["val_loss"] == 0.5
    for key, value in reference.items():
        assert torch.equal(net2.state_dict()[key], value), key
    assert sched2.last_epoch == 1 and opt2.param_groups[0]["lr"] == pytest.approx(3e-4)
    assert isinstance(opt2.param_groups[0]["betas"], tuple)
    assert torch.equal(torch.rand(3), expect_torch)
    assert np.array_equal(np.random.rand(3), expect_np) and random.random() == expect_py  # noqa: NPY002
    # optimiser moments restored bit for bit: the same next step from the same state
    net3, opt3, sched3, scaler3 = _setup(seed=2)
    restore_checkpoint(load_checkpoint(path), net3, opt3, sched3, scaler3)
    torch.manual_seed(5)
    _step(net2, opt2, sched2)
    torch.manual_seed(5)
    _step(net3, opt3, sched3)
    for (k, a), b in zip(net2.state_dict().items(), net3.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "last.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.safetensors: not a readable safetensors checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    net, opt, sched, scaler = _setup()
    path = save_checkpoint(tmp_path / "a.safetensors", net, opt, sched, scaler, {})
    other = PlaneSSLNet(UNetConfig(base_filters=8, levels=3, line_channels=2))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        restore_checkpoint(load_checkpoint(path), other)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary file left


def _manifest(cfg: UNetConfig) -> dict:
    return build_manifest(cfg, "both", views={"SAX": ["2CH", "4CH"]}, channels=["2CH", "4CH"],
                          input_size_hw=(16, 16), input_spacing_mm=1.26,
                          intensity_normalisation={"method": "minmax"}, training_config={"optim": {"lr": 1e-3}},
                          data_fingerprint="sha256:abc", metrics={"val_loss": 0.1})


def test_export_load_identical_outputs(tmp_path, no_pickle):
    net, *_ = _setup()
    net.eval()
    manifest = _manifest(net.config)
    out = export_weights(net, tmp_path / "model", manifest)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors"]
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected = net(x)
    for source in (out, zip_weights(out, tmp_path / "model.zip")):
        loaded, man = load_exported(source)
        assert man["data_fingerprint"] == "sha256:abc" and man["channels"] == ["2CH", "4CH"]
        assert man["label_names"] is None and man["package_versions"]["torch"] == torch.__version__
        with torch.no_grad():
            got = loaded(x)
        for key in expected:
            assert torch.equal(got[key], expected[key])


def test_load_exported_validates_the_manifest(tmp_path):
    net, *_ = _setup()
    out = export_weights(net, tmp_path / "model", _manifest(net.config))
    manifest = json.loads((out / "manifest.json").read_text())

    def write(m):
        (out / "manifest.json").write_text(json.dumps(m))

    write({**manifest, "format_version": 99})
    with pytest.raises(WeightsError, match="format_version 99 is newer"):
        load_exported(out)
    write({k: v for k, v in manifest.items() if k not in ("task", "metrics")})
    with pytest.raises(WeightsError, match="missing key\\(s\\): task, metrics"):
        load_exported(out)
    write({**manifest, "architecture": {"name": "PlaneSSLNet", "config": {**manifest["architecture"]["config"],
                                                                           "base_filters": 8}}})
    with pytest.raises(WeightsError, match="does not fit|does not match"):
        load_exported(out)
    write({**manifest, "format": "other"})
    with pytest.raises(WeightsError, match="format 'other'"):
        load_exported(out)
    with pytest.raises(WeightsError, match="no such file"):
        load_exported(tmp_path / "nothing")
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
    with pytest.raises(WeightsError, match="no model.safetensors in the archive"):
        load_exported(tmp_path / "bad.zip")
