"""One error family: every expected failure is a PlaneSSLError; planessl prints it on one line, no traceback."""

from __future__ import annotations

import pytest

from PlaneSSLLib.data.adapters._common import AdapterError
from PlaneSSLLib.data.cache import CacheError
from PlaneSSLLib.data.prepare import PrepareError
from PlaneSSLLib.data.segmentation import SegDataError
from PlaneSSLLib.dicom.pixels import PixelReadError
from PlaneSSLLib.dicom.planes import GeometryError
from PlaneSSLLib.errors import ConfigError, InputError, PlaneSSLError
from PlaneSSLLib.inference.weights import WeightsError
from PlaneSSLLib.phantoms.cohort import CohortError
from PlaneSSLLib.preprocess.config import ConfigError as DataConfigError
from PlaneSSLLib.preprocess.exams import ExamError
from PlaneSSLLib.slicer_logic.models_registry import ChecksumError, DownloadError, ModelFolderError, RegistryError
from PlaneSSLLib.training.checkpoint import CheckpointError
from PlaneSSLLib.training.config import ConfigError as TrainingConfigError
from PlaneSSLLib.training.engine import RunExistsError
from PlaneSSLLib.training.transfer import TransferError
from training_cli.errors import CLIError
from training_cli.main import main

USER_ERRORS = (AdapterError, CacheError, ConfigError, ExamError, PrepareError, SegDataError, PixelReadError,
               GeometryError, InputError, WeightsError, CohortError, ChecksumError, DownloadError, ModelFolderError,
               RegistryError, CheckpointError, RunExistsError, TransferError, CLIError)


@pytest.mark.parametrize("cls", USER_ERRORS, ids=lambda c: c.__name__)
def test_every_user_error_is_a_planessl_error(cls):
    assert issubclass(cls, PlaneSSLError)
    assert cls("x").exit_code == 2


def test_one_config_error_for_data_and_training():
    assert DataConfigError is TrainingConfigError is ConfigError
    assert issubclass(ConfigError, ValueError)  # callers that catch ValueError still do
    assert ConfigError("a: bad").problems == ["a: bad"]
    assert str(ConfigError(["a: bad", "b: worse"])) == "2 problems in the configuration:\n  a: bad\n  b: worse"


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"planessl {command}: error: ")
    return err


def test_user_mistakes_exit_non_zero_with_one_line(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "cache")]) == 2
    assert "nowhere: no such file or directory" in _one_line_error(capsys, "prepare")
    weights = tmp_path / "no_weights"
    assert main(["predict", "seg", str(tmp_path), "--weights", str(weights), "--out", str(tmp_path / "o")]) == 2
    assert f"{weights}: no such file or directory" in _one_line_error(capsys, "predict")
    assert main(["predict", "acl", str(tmp_path), "--weights", str(weights)]) == 2
    assert f"{weights}: no such file or directory" in _one_line_error(capsys, "predict")
    assert main(["phantom", "heart", "--subjects", "0", "--out", str(tmp_path / "c")]) == 2
    _one_line_error(capsys, "phantom")


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("PlaneSSLLib.inference.classify.predict_exam", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["predict", "acl", str(tmp_path), "--weights", str(tmp_path)])
