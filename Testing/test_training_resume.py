"""Crash safety of `planessl pretrain`: SIGKILL at any point + --resume gives bit-identical weights;
SIGTERM / SIGINT stop cleanly after writing a resumable checkpoint (exit 143 / 130)."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402
from training_helpers import pretrain_cmd, run_cli, start_cli, wait_for_step, write_config  # noqa: E402

from PlaneSSLLib.training.checkpoint import load_checkpoint  # noqa: E402

TIMING = {"images_per_s", "epoch_seconds"}
pytestmark = pytest.mark.slow


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state()


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(path.open())]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        data={"synthetic_subjects": 12, "val_fraction": 0.25},
        optim={"epochs": 6, "batch_size": 2, "decay_every": 2},
        runtime={"deterministic": True, "checkpoint_every_steps": 2, "seed": 11},
    )
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    reference = start_cli(pretrain_cmd(config, ref_out))
    victim = start_cli(pretrain_cmd(config, out))
    kills = []
    step = wait_for_step(victim, out, after=-1)  # the first checkpoint (mid-epoch)
    victim.kill()
    victim.communicate()
    kills.append((step, victim.returncode))
    victim = start_cli(pretrain_cmd(config, out, "--resume"))
    step = wait_for_step(victim, out, after=step + 2)  # a later one, across an epoch end
    victim.kill()
    victim.communicate()
    kills.append((step, victim.returncode))
    assert all(rc == -signal.SIGKILL for _, rc in kills), kills
    final = run_cli(pretrain_cmd(config, out, "--resume"))
    assert final.returncode == 0, final.stderr
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err

    a, b = _model_tensors(ref_out / "checkpoints" / "last.safetensors"), _model_tensors(
        out / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after kill/resume (kills at steps {kills})"
    ea, eb = load_file(ref_out / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert _rows(ref_out / "metrics.csv") == _rows(out / "metrics.csv")
    assert load_checkpoint(out / "checkpoints" / "last.safetensors").train_state["global_step"] == 6 * 5


def test_signals_stop_cleanly_with_a_resumable_checkpoint(tmp_path):
    """SIGTERM -> exit 143, SIGINT -> exit 130, each after writing `last`; the SIGTERM run resumes."""
    config = write_config(tmp_path / "c.yaml", optim={"epochs": 500},
                          runtime={"checkpoint_every_steps": 50, "log_every": 1000})
    runs = {sig: (tmp_path / signal.Signals(sig).name) for sig in (signal.SIGTERM, signal.SIGINT)}
    procs = {sig: start_cli(pretrain_cmd(config, out)) for sig, out in runs.items()}
    for sig, proc in procs.items():
        wait_for_step(proc, runs[sig], after=-1)  # training is under way (a checkpoint was written)
        proc.send_signal(sig)
    for sig, proc in procs.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, err
        name = signal.Signals(sig).name
        assert f"{name} received: finishing the current step" in err
        assert f"stopped by {name} after step" in err and "--resume" in err and "Traceback" not in err
        state = load_checkpoint(runs[sig] / "checkpoints" / "last.safetensors").train_state
        assert not state["complete"] and f"after step {state['global_step']}" in err

    out = runs[signal.SIGTERM]  # resume, asking for just one more epoch
    state = load_checkpoint(out / "checkpoints" / "last.safetensors").train_state
    more = state["epoch"] + 1
    done = run_cli(pretrain_cmd(config, out, "--resume", "--set", f"optim.epochs={more}"))
    assert done.returncode == 0, done.stderr
    after = load_checkpoint(out / "checkpoints" / "last.safetensors").train_state
    assert after["complete"] and after["epoch"] == more and after["global_step"] > state["global_step"]
    assert (out / "model" / "manifest.json").is_file()
