"""Crash safety of `planessl finetune seg|acl` on the engine: SIGKILL at any point + --resume gives
bit-identical weights to an uninterrupted run (deterministic CPU); SIGTERM stops cleanly (exit 143) with
a resumable checkpoint; torchrun with 2 processes (gloo) matches one process at the same global batch."""

from __future__ import annotations

import csv
import json
import signal
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402
from training_helpers import run_cli, start_cli, wait_for_step  # noqa: E402

from PlaneSSLLib.phantoms import CohortOptions, write_cohort  # noqa: E402

pytestmark = pytest.mark.slow
TIMING = {"images_per_s", "epoch_seconds"}


@pytest.fixture(scope="module")
def heart(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_heart") / "heart"
    write_cohort(out, CohortOptions("heart", subjects=4, seed=5, phases=2, matrix=96), workers=1)
    return out


@pytest.fixture(scope="module")
def knee(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_knee") / "knee"
    write_cohort(out, CohortOptions("knee", subjects=6, seed=2, matrix=64), workers=1)
    return out


def _seg_config(path: Path, heart: Path, cache: Path, **optim) -> Path:
    raw = {"data": {"dicom": str(heart), "cache": str(cache), "spacing_mm": 4.5, "image_size": 32,
                    "val_fraction": 0.25, "test_fraction": 0.25},
           "model": {"base_filters": 4, "levels": 3},
           "optim": {"epochs": 4, "batch_size": 4, "steps_per_epoch": 6, "schedule": "cosine", "warmup_steps": 3,
                     **optim},
           "runtime": {"deterministic": True, "checkpoint_every_steps": 2, "seed": 7, "progress": "log",
                       "plot": False, "tensorboard": False, "log_every": 5}}
    path.write_text(yaml.safe_dump(raw))
    return path


def _acl_config(path: Path, knee: Path) -> Path:
    raw = {"data": {"root": str(knee), "image_size": 32, "spacing_mm": 4.5, "val_fraction": 0.34,
                    "max_slices": 4},
           "model": {"base_filters": 4, "levels": 3, "hidden": 8, "dropout": 0.3},
           "optim": {"epochs": 4, "batch_size": 2, "steps_per_epoch": 3, "transferred_lr": 3e-4},
           "evaluation": {"bootstrap": 20},
           "runtime": {"deterministic": True, "checkpoint_every_steps": 2, "seed": 4, "progress": "log",
                       "plot": False, "tensorboard": False, "log_every": 5}}
    path.write_text(yaml.safe_dump(raw))
    return path


def _cmd(task: str, config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training_cli", "finetune", task, "--config", str(config), "--out", str(out),
            *extra]


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(path.open())]


@pytest.mark.parametrize("task", ["seg", "acl"])
def test_sigkill_then_resume_is_bit_identical(task, heart, knee, tmp_path):
    if task == "seg":
        config = _seg_config(tmp_path / "c.yaml", heart, tmp_path / "cache")
        prepared = run_cli(_cmd(task, config, tmp_path / "warm", "--set", "optim.epochs=1"), timeout=300)
        assert prepared.returncode == 0, prepared.stderr  # builds the shared seg cache once
    else:
        config = _acl_config(tmp_path / "c.yaml", knee)
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    reference = start_cli(_cmd(task, config, ref_out))
    victim = start_cli(_cmd(task, config, out))
    kills = []
    step = wait_for_step(victim, out, after=-1)  # the first checkpoint (mid-epoch)
    victim.kill()
    victim.communicate()
    kills.append(step)
    victim = start_cli(_cmd(task, config, out, "--resume"))
    step = wait_for_step(victim, out, after=step + 3)  # a later one, across an epoch end
    victim.kill()
    victim.communicate()
    kills.append(step)
    final = run_cli(_cmd(task, config, out, "--resume"), timeout=300)
    assert final.returncode == 0, final.stderr
    ref_stdout, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err

    a = load_file(ref_out / "model" / "model.safetensors")
    b = load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after kill/resume (kills at steps {kills})"
    assert _rows(ref_out / "metrics.csv") == _rows(out / "metrics.csv")
    ref_summary, summary = json.loads(ref_stdout), json.loads(final.stdout)
    for key in ("task", "best_epoch", "metric", "value", "evaluated_on", "labeled_subjects", "seed"):
        assert ref_summary[key] == summary[key], key
    assert summary["task"] == task and set(summary) == set(ref_summary)


def test_sigterm_stops_cleanly_and_resumes(heart, tmp_path):
    config = _seg_config(tmp_path / "c.yaml", heart, tmp_path / "cache", epochs=400)
    out = tmp_path / "run"
    proc = start_cli(_cmd("seg", config, out))
    wait_for_step(proc, out, after=-1, timeout=300)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM after step" in err and "--resume" in err and "Traceback" not in err
    again = run_cli(_cmd("seg", config, out))
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr
    state = json.loads((out / "checkpoints" / "last.json").read_text())["train_state"]
    more = state["epoch"] + 1
    done = run_cli(_cmd("seg", config, out, "--resume", "--set", f"optim.epochs={more}"), timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["task"] == "seg" and (out / "model" / "manifest.json").is_file()


def test_torchrun_two_processes_match_one(heart, tmp_path):
    """DDP (gloo) at global batch 4 = 2 x 2 against one process at batch 4: instance norm and no augmentation,
    so that the per-rank forward passes add up to the single process's exactly (up to float sums)."""
    config = _seg_config(tmp_path / "c.yaml", heart, tmp_path / "cache", epochs=2)
    sets = ["--set", "model.norm=instance", "data.augment=false", "runtime.checkpoint_every_steps=0"]
    single = run_cli(_cmd("seg", config, tmp_path / "single", *sets), timeout=300)
    assert single.returncode == 0, single.stderr
    # a cache of its own: rank 0 prepares it while rank 1 waits
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                "-m", "training_cli", "finetune", "seg", "--config", str(config), "--out", str(tmp_path / "ddp"),
                *sets, f"data.cache={tmp_path / 'cache_ddp'}"]
    ddp = run_cli(torchrun, timeout=300)
    assert ddp.returncode == 0, ddp.stderr
    a = load_file(tmp_path / "single" / "model" / "model.safetensors")
    b = load_file(tmp_path / "ddp" / "model" / "model.safetensors")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst
    assert json.loads(ddp.stdout)["best_epoch"] == json.loads(single.stdout)["best_epoch"]
