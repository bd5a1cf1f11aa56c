"""Pretraining refuses, before any step, data that cannot train the chosen task."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

from PlaneSSLLib.data.prepare import prepare_cache  # noqa: E402
from PlaneSSLLib.phantoms import CohortOptions, write_cohort  # noqa: E402
from PlaneSSLLib.preprocess.config import PrepareConfig  # noqa: E402
from training_cli.main import main  # noqa: E402

CONFIG = "Resources/Configs/pretrain_demo.yaml"


@pytest.fixture(scope="module")
def sax_only_cache(tmp_path_factory):
    """A heart cohort whose long-axis series were deleted: SAX slices without partner views."""
    root = tmp_path_factory.mktemp("sax_only")
    write_cohort(root / "data", CohortOptions("heart", subjects=4, seed=2, phases=2, matrix=64), workers=1)
    for folder in root.glob("data/subject_*/study/*ch_*"):
        shutil.rmtree(folder)
    return prepare_cache(root / "data", root / "cache", PrepareConfig(spacing_mm=3.0, size_px=96)).cache_dir


def test_lines_task_without_any_partner_view_is_refused(sax_only_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(__file__.rsplit("/Testing/", 1)[0])
    argv = ["pretrain", "--config", CONFIG, "--out", str(tmp_path / "run"),
            "--set", f"data.cache={sax_only_cache}", "optim.epochs=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs intersection lines" in err and "task.name=location" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # no training step was taken


def test_location_task_alone_trains_on_the_same_data(sax_only_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(__file__.rsplit("/Testing/", 1)[0])
    argv = ["pretrain", "--config", CONFIG, "--out", str(tmp_path / "run"),
            "--set", f"data.cache={sax_only_cache}", "optim.epochs=1", "task.name=location"]
    assert main(argv) == 0
    assert (tmp_path / "run" / "model" / "manifest.json").is_file()
