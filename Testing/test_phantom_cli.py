"""``planessl phantom``: clear errors without tracebacks, refusal to overwrite, atomic subjects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import PlaneSSLLib.phantoms.cohort as cohort_mod
from PlaneSSLLib.phantoms import CohortOptions, is_phantom_cohort, write_cohort, write_subject
from training_cli.main import main

SMALL = ["--phases", "2", "--matrix", "48", "--workers", "1", "--quiet"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["phantom", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["heart", "--subjects", "0"], "number of subjects"),
        (["heart", "--subjects", "1", "--seed", "-3"], "seed"),
        (["heart", "--subjects", "1", "--phases", "1"], "cine phases"),
        (["heart", "--subjects", "1", "--matrix", "8"], "matrix"),
        (["heart", "--subjects", "1", "--workers", "0"], "workers"),
        (["knee", "--subjects", "1", "--layout", "ukbb"], "heart cohorts only"),
        (["knee", "--subjects", "1", "--phases", "3"], "heart cohorts only"),
    ],
)
def test_bad_options_give_a_clear_message(capsys, tmp_path, args, message):
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "c"))
    assert code != 0
    assert message in err and err.startswith("planessl phantom: error:")
    assert "Traceback" not in err + out
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_argparse_errors_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["phantom", "liver", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["phantom", "heart", "--subjects", "two", "--out", str(tmp_path)])


def test_refuses_a_non_empty_directory_unless_forced(capsys, tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "heart", "--subjects", "1", "--out", str(target), *SMALL)
    assert code != 0 and "not empty" in err and "--force" in err and "Traceback" not in err
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    code, out, err = run_cli(capsys, "heart", "--subjects", "1", "--out", str(target), *SMALL, "--force")
    assert code == 0, err
    assert "wrote 1 heart subjects" in out
    assert (target / "notes.txt").read_text() == "keep me"
    assert (target / "subject_0000" / "labels" / "sax_ed.nii.gz").is_file()
    # A file as target.
    code, _, err = run_cli(capsys, "heart", "--subjects", "1", "--out", str(target / "notes.txt"), *SMALL)
    assert code != 0 and "not a directory" in err


def test_rewrites_a_previous_cohort(capsys, tmp_path):
    target = tmp_path / "cohort"
    code, out, _ = run_cli(capsys, "knee", "--subjects", "2", "--out", str(target), *SMALL[2:])
    assert code == 0 and "1 with a torn ACL" in out
    assert is_phantom_cohort(target)
    code, _, err = run_cli(capsys, "knee", "--subjects", "1", "--seed", "4", "--out", str(target), *SMALL[2:])
    assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == ["cohort.json", "labels.csv", "subject_0000", "subjects.csv"]
    meta = json.loads((target / "cohort.json").read_text())
    assert meta["seed"] == 4 and meta["subjects"] == 1 and meta["complete"]


def test_interrupted_subject_leaves_nothing_half_written(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = cohort_mod._write_image

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cohort_mod, "_write_image", failing)
    with pytest.raises(KeyboardInterrupt):
        write_subject(tmp_path, CohortOptions("heart", 1, phases=2, matrix=48), 0)
    assert list(tmp_path.iterdir()) == []
    # An interrupted cohort is still recognised as ours, so it can be rewritten without --force.
    monkeypatch.setattr(cohort_mod, "_write_image", real)
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(cohort_mod, "_write_image", failing)
        write_cohort(tmp_path / "c", CohortOptions("heart", 1, phases=2, matrix=48), workers=1)
    assert is_phantom_cohort(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["cohort.json"]
    assert not json.loads((tmp_path / "c" / "cohort.json").read_text())["complete"]


def test_command_line_process(tmp_path):
    """The installed entry point as a separate process: exit status and messages, no traceback."""
    target = tmp_path / "h"
    target.mkdir()
    (target / "x").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "training_cli", "phantom", "heart", "--subjects", "1", "--out", str(target)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2
    assert "planessl phantom: error:" in proc.stderr and "Traceback" not in proc.stderr
