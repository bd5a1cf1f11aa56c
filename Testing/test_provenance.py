"""The code revision recorded beside a study's results (PlaneSSLLib/training/provenance.py)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from PlaneSSLLib.training import provenance

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_revision_of_this_checkout() -> None:
    revision = provenance.source_revision()
    assert revision["commit"] == _git("rev-parse", "HEAD")
    assert revision["modified"] is bool(_git("status", "--porcelain", "--untracked-files=no"))
    assert set(revision) == {"commit", "modified"}  # nothing else: no path, user or host


def test_nothing_recorded_outside_a_checkout(tmp_path: Path) -> None:
    # the same module in a tree that is not a git checkout (an installed package) records nothing
    tree = tmp_path / "site" / "PlaneSSLLib" / "training"
    tree.mkdir(parents=True)
    shutil.copy(ROOT / "PlaneSSLLib" / "training" / "provenance.py", tree / "provenance.py")
    spec = importlib.util.spec_from_file_location("provenance_copy", tree / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.source_revision() == {}
