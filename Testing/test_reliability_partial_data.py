"""``prepare`` never leaves data out silently (issue 15, finding 10).

One frame without geometry makes its whole series unusable (``dicom.series``): the preparation
report lists every series left out with the reason naming the file. A folder that cannot be
listed is a problem naming it, not a part of the data set that quietly vanishes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pydicom
import pytest

from PlaneSSLLib.dicom.scan import list_files
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from training_cli.main import main

PREPARE = ["--size", "32", "--spacing", "4"]


@pytest.fixture(scope="module")
def ukbb(tmp_path_factory) -> Path:
    """Two subjects, each SAX stack one multi-slice series; subject 0's 4th SAX file has no position."""
    root = tmp_path_factory.mktemp("partial") / "c"
    write_cohort(root, CohortOptions("heart", subjects=2, seed=4, phases=2, matrix=48, layout="ukbb"), workers=1)
    bad = sorted((root / "subject_0000" / "study" / "cine_sax").glob("*.dcm"))[3]
    ds = pydicom.dcmread(bad)
    del ds.ImagePositionPatient
    ds.save_as(bad)
    return root


def test_a_series_left_out_for_one_frame_is_reported(ukbb, tmp_path, capsys):
    assert main(["prepare", str(ukbb), "--out", str(tmp_path / "cache"), "--json", *PREPARE]) == 0
    report = json.loads(capsys.readouterr().out)
    (left,) = report["series_left_out"]
    assert left["folder"].endswith("subject_0000/study/cine_sax")
    assert "IM-0005-0004.dcm: ImagePositionPatient missing" in left["reason"]
    assert main(["prepare", str(ukbb), "--out", str(tmp_path / "cache2"), *PREPARE]) == 0
    text = capsys.readouterr().out
    assert "series left out (unusable): 1" in text and "cine_sax" in text


def test_an_unreadable_folder_is_named(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "x.dcm").write_bytes(b"x")
    (root / "b" / "y.dcm").write_bytes(b"y")
    real_scandir = os.scandir

    def scandir(path="."):  # the tests run as root, for whom chmod 000 hides nothing
        if Path(path) == root / "b":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, problems = list_files(root)
    assert files == [root / "a" / "x.dcm"]
    assert [(p.path, p.kind) for p in problems] == [(root / "b", "error")]
    assert "unreadable folder" in problems[0].message and "denied" in problems[0].message
    main(["inspect", str(root)])
    out = capsys.readouterr()
    assert "b: unreadable folder: Permission denied" in out.out


def test_files_that_are_not_images_are_listed_in_the_report(ukbb, tmp_path, capsys):
    """An emptied or overwritten .dcm in a stack is named by ``prepare``, as ``inspect`` names it."""
    data = tmp_path / "data"
    study = data / "subject_0001" / "study"
    shutil.copytree(ukbb / "subject_0001" / "study", study)
    (study / "empty.dcm").write_bytes(b"")
    (study / "notes.dcm").write_text("not an image\n")
    assert main(["prepare", str(data), "--out", str(tmp_path / "cache"), "--json", *PREPARE]) == 0
    report = json.loads(capsys.readouterr().out)
    ignored = {Path(i["path"]).name: i["reason"] for i in report["ignored"]}
    assert ignored == {"empty.dcm": "empty file", "notes.dcm": "not a DICOM file"}
    assert main(["prepare", str(data), "--out", str(tmp_path / "cache2"), *PREPARE]) == 0
    text = capsys.readouterr().out
    assert "ignored (not images: empty, not DICOM, hidden): 2" in text and "empty.dcm" in text


def test_a_cache_folder_that_holds_the_data_is_said_as_such(ukbb, tmp_path, capsys):
    """``prepare DATA --out DATA`` said 'no files found' of a folder full of DICOM files (campaign)."""
    data = Path(shutil.copytree(ukbb / "subject_0001", tmp_path / "data"))
    for out in (data, tmp_path):
        assert main(["prepare", str(data), "--out", str(out), *PREPARE]) != 0
        err = capsys.readouterr().err
        assert "the cache folder holds the data" in err and "no files found" not in err
    assert not any(p.name == "current.json" for p in tmp_path.rglob("*"))
