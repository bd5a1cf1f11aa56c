"""Helpers shared by the training tests: tiny synthetic configs and CLI subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

#: A network and data set small enough for a step in a few milliseconds on one CPU thread.
TINY: dict = {
    "data": {"source": "synthetic", "image_size": 32, "sigma_px": 2.0, "synthetic_subjects": 8,
             "synthetic_slices": 3, "val_fraction": 0.25},
    "model": {"base_filters": 4, "levels": 3, "location_hidden": 16},
    "optim": {"epochs": 2, "batch_size": 2, "decay_every": 1},
    "runtime": {"seed": 3, "tensorboard": False, "plot": False, "progress": "log", "log_every": 5},
}


def write_config(path: Path, **sections: dict) -> Path:
    """TINY updated per section (``model={"norm": "instance"}``) written as YAML."""
    data = {k: dict(v) for k, v in TINY.items()}
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def cli_env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pretrain_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training_cli", "pretrain", "--config", str(config), "--out", str(out), *extra]


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str]) -> subprocess.Popen:
    """A CLI subprocess (one thread) whose output is collected for ``communicate``."""
    return subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpoint_step(out: Path) -> int:
    """The global step of a run's ``last`` checkpoint (its JSON sidecar), -1 without one."""
    try:
        return int(json.loads((out / "checkpoints" / "last.json").read_text())["train_state"]["global_step"])
    except (OSError, ValueError, KeyError):
        return -1


def wait_for_step(proc: subprocess.Popen, out: Path, after: int, timeout: float = 120.0) -> int:
    """Wait until ``out`` holds a checkpoint past step ``after``; fails the test if the run ends or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = checkpoint_step(out)
        if step > after:
            return step
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"training ended (rc {proc.returncode}) before a checkpoint after step {after}:\n{err}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no checkpoint after step {after} within {timeout} s")
