"""Smaller leftovers of issue 15 (finding 11): where commands look, what they leave, what they print.

- ``predict lines`` without ``--view`` reads the study around the image, never a whole tree above
  it (from ``/tmp/x.dcm`` it walked ``/``);
- cache folders left by a killed ``prepare`` (``.tmp-KEY-PID``, ``.old-KEY-PID``) are removed by the
  next write once their process is gone;
- a successful run prints no pydicom traceback (its decoders log them at ERROR).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate

from PlaneSSLLib.data.cache import remove_stale_folders
from PlaneSSLLib.inference import predict_lines
from PlaneSSLLib.phantoms import CohortOptions, write_cohort

ROOT = Path(__file__).resolve().parents[1]


def test_the_study_around_an_image_is_its_folder_and_siblings_never_deeper(tmp_path, monkeypatch):
    study = tmp_path / "top" / "study"
    for series in ("sax_1", "sax_2"):
        (study / series).mkdir(parents=True)
        (study / series / "a.dcm").write_bytes(b"x")
    deep = study / "sax_2" / "nested" / "deeper"
    deep.mkdir(parents=True)
    (deep / "far.dcm").write_bytes(b"x")
    files = predict_lines.study_files(study / "sax_1" / "a.dcm")
    assert files == [study / "sax_1" / "a.dcm", study / "sax_2" / "a.dcm"]
    monkeypatch.setattr(predict_lines, "MAX_STUDY_FILES", 1)
    assert predict_lines.study_files(study / "sax_2" / "a.dcm") == [study / "sax_2" / "a.dcm"]
    monkeypatch.setattr(predict_lines, "MAX_STUDY_FILES", 2000)
    # an image right below the home folder (or the file system's root): its own folder only
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "top"))
    (study / "b.dcm").write_bytes(b"x")
    assert predict_lines.study_files(study / "b.dcm") == [study / "b.dcm"]


def test_a_view_is_still_identified_from_the_study(tmp_path):
    write_cohort(tmp_path / "c", CohortOptions("heart", subjects=1, seed=3, phases=2, matrix=48), workers=1)
    image = sorted((tmp_path / "c" / "subject_0000" / "study" / "4ch_4").glob("*.dcm"))[0]
    assert predict_lines.identify_image_view(image) == "4CH"


def test_stale_cache_folders_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".tmp-abc-{dead_pid}", tmp_path / f".old-abc-{dead_pid}"]
    alive = [tmp_path / f".tmp-abc-{os.getpid()}", tmp_path / "abc", tmp_path / ".tmp-notes"]
    for folder in stale + alive:
        folder.mkdir()
        np.save(folder / "images.npy", np.zeros(3))
    assert sorted(remove_stale_folders(tmp_path)) == sorted(stale)
    assert all(f.exists() for f in alive) and not any(f.exists() for f in stale)


def test_a_successful_run_prints_no_pydicom_traceback(tmp_path):
    root = tmp_path / "c"
    write_cohort(root, CohortOptions("heart", subjects=1, seed=3, phases=2, matrix=48), workers=1)
    study = root / "subject_0000" / "study"
    bad = sorted((study / "2ch_2").glob("*.dcm"))[0]
    ds = pydicom.dcmread(bad)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream"])
    ds.save_as(bad, enforce_file_format=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "training_cli.main", "prepare", str(study), "--out",
                          str(tmp_path / "cache"), "--size", "32", "--spacing", "4", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [s["path"] for s in report["skipped"]] == [str(bad)]  # named in the report
    assert "Traceback" not in run.stderr and "pydicom" not in run.stderr, run.stderr
    shutil.rmtree(root)


def test_atomic_outputs_get_the_umask_mode_not_owner_only(tmp_path):
    import os

    from PlaneSSLLib.atomic import _UMASK, atomic_write_text

    path = atomic_write_text(tmp_path / "plan.json", "{}")
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_UMASK
