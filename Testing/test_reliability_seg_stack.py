"""``predict seg`` never mixes cardiac phases nor drops a slice silently (issue 15, finding 1).

A tiny phantom heart study (9 SAX slices, one series per slice, 2 phases) is damaged the way a
bad copy or a bad scanner export would: a phase-0 file unreadable or missing, an end slice
without geometry, a middle slice missing. Segmentation is refused naming the file, slice and
phase (exit 2, nothing written), or, for the phases that are complete, uses each slice's own image.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
import torch
from test_weights_contract import _manifest, _network

from PlaneSSLLib.dicom.records import Frame, Position
from PlaneSSLLib.dicom.stack_phases import phase_frames
from PlaneSSLLib.geometry.planes import ImagePlane
from PlaneSSLLib.inference.segment import IncompleteStackError, find_study_sax_stack, stack_phase_frames
from PlaneSSLLib.inference.weights import export_model
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from training_cli.main import main


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stack")
    write_cohort(root / "c", CohortOptions("heart", subjects=1, seed=3, phases=2, matrix=64), workers=1)
    return root / "c" / "subject_0000" / "study"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export_model(_network("seg").eval(), tmp_path_factory.mktemp("w") / "seg", _manifest("seg"))


def _copy(study: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(study, tmp_path / "study"))


def _predict(capsys, study: Path, weights: Path, out: Path, *phases: int):
    code = main(["predict", "seg", str(study), "--weights", str(weights), "--out", str(out), "--no-dicom-seg",
                 "--phase", *map(str, phases)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_unreadable_phase_0_file_is_never_replaced_by_phase_1(study, weights, tmp_path, capsys):
    damaged = _copy(study, tmp_path)
    bad = damaged / "sax_7" / "IM-0007-0001.dcm"
    bad.write_bytes(bad.read_bytes()[:300])
    code, out, err = _predict(capsys, damaged, weights, tmp_path / "o", 0)
    assert code == 2 and out == "" and "Traceback" not in err
    assert str(bad) in err and "no image of phase 0" in err and "sax_7/IM-0007-0002.dcm" in err
    assert not (tmp_path / "o").exists()


def test_a_missing_phase_file_refuses_that_phase_and_keeps_the_others_right(study, tmp_path, capsys, weights):
    damaged = _copy(study, tmp_path)
    (damaged / "sax_7" / "IM-0007-0001.dcm").unlink()
    stack = find_study_sax_stack(damaged)
    with pytest.raises(IncompleteStackError, match="no image of phase 0"):
        stack_phase_frames(stack, 0)
    frames = stack_phase_frames(stack, 1)  # phase 1 of every slice, sax_7's own phase-1 image included
    assert [f.path.name[-8:] for f in frames] == ["0002.dcm"] * 9
    code, _, err = _predict(capsys, damaged, weights, tmp_path / "o", 1, 0)  # refused before phase 1 is written
    assert code == 2 and "no image of phase 0" in err and not (tmp_path / "o").exists()
    code, out, err = _predict(capsys, damaged, weights, tmp_path / "o", 1)
    assert code == 0, err


def test_an_end_slice_without_geometry_is_named_not_dropped(study, weights, tmp_path, capsys):
    damaged = _copy(study, tmp_path)
    for f in sorted((damaged / "sax_13").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    code, out, err = _predict(capsys, damaged, weights, tmp_path / "o", 0)
    assert code == 2 and out == "" and "Traceback" not in err
    assert "sax_13" in err and "IM-0013-0001.dcm: ImagePositionPatient missing" in err
    assert not (tmp_path / "o").exists()


def test_a_missing_middle_slice_is_a_named_gap(study, weights, tmp_path, capsys):
    damaged = _copy(study, tmp_path)
    shutil.rmtree(damaged / "sax_9")
    code, out, err = _predict(capsys, damaged, weights, tmp_path / "o", 0)
    assert code == 2 and "no slice between slice" in err and "of 8" in err and "Traceback" not in err


def _position(times: list[float], temporal: list[int | None]) -> Position:
    plane = ImagePlane((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0), (4, 4))
    frames = [Frame(Path(f"f{t:g}.dcm"), 0, plane, trigger_time_ms=t, temporal_position=i)
              for t, i in zip(times, temporal, strict=True)]
    return Position(plane, frames)


def test_phases_are_placed_by_trigger_time_or_temporal_position():
    full = _position([0.0, 100.0, 200.0], [None, None, None])
    short = _position([190.0], [None])  # phase 2's image (trigger time within half a step)
    assert [f and f.path.name for f in phase_frames([full, short], 2)] == ["f200.dcm", "f190.dcm"]
    assert phase_frames([full, short], 0)[1] is None
    far = _position([150.0], [None])  # halfway between phases 1 and 2: cannot be told
    assert phase_frames([full, far], 1)[1] is None and phase_frames([full, far], 2)[1] is None
    by_id = [_position([0.0, 100.0], [1, 2]), _position([0.0], [2])]  # the temporal position decides
    assert phase_frames(by_id, 0)[1] is None and phase_frames(by_id, 1)[1].temporal_position == 2


def test_a_frame_without_trigger_time_is_placed_by_its_temporal_position():
    """TriggerTime 'soon' on one phase-0 file sorted it after phase 1, and that slice's phase 0 was its
    phase-1 image, exit 0 (campaign: dicom/trigger-time-text)."""
    plane = ImagePlane((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0), (4, 4))

    def position(times, temporal):
        return Position(plane, [Frame(Path(f"f{k}.dcm"), 0, plane, trigger_time_ms=t, temporal_position=i)
                                for k, (t, i) in enumerate(zip(times, temporal, strict=True))])

    other = position([0.0, 100.0], [1, 2])
    odd = position([100.0, None], [2, 1])  # list order as phase_sort_key gives it: the None trigger last
    assert [f.temporal_position for f in phase_frames([other, odd], 0)] == [1, 1]
    assert [f.temporal_position for f in phase_frames([other, odd], 1)] == [2, 2]
    unknowable = position([100.0, None], [None, None])  # nothing tells its order: no phase trusted
    assert phase_frames([position([0.0, 100.0], [None, None]), unknowable], 0)[1] is None


def test_a_single_series_stack_with_a_frame_without_geometry_names_the_file(tmp_path, capsys, weights):
    write_cohort(tmp_path / "c", CohortOptions("heart", subjects=1, seed=4, phases=2, matrix=48, layout="ukbb"),
                 workers=1)
    bad = sorted((tmp_path / "c" / "subject_0000" / "study" / "cine_sax").glob("*.dcm"))[2]
    ds = pydicom.dcmread(bad)
    del ds.ImagePositionPatient
    ds.save_as(bad)
    code, out, err = _predict(capsys, tmp_path / "c" / "subject_0000", weights, tmp_path / "o", 0)
    assert code == 2 and f"{bad.name}: ImagePositionPatient missing" in err and "Traceback" not in err


def test_a_phase_out_of_range_is_said_as_such(study, weights, tmp_path, capsys):
    code, out, err = _predict(capsys, study, weights, tmp_path / "o", 5)
    assert code == 2 and "phase 5 out of range (the SAX stack has 2)" in err


def test_plan_never_shows_a_phase_1_image_for_a_missing_phase_0_file(study, tmp_path, capsys, monkeypatch):
    """``plan`` took each slice's first file as phase 0 (campaign: layout/missing-phase0-file): the
    slice without its phase-0 image is left out and the plan's notes say so."""
    import json

    from PlaneSSLLib.inference import plan_views

    damaged = _copy(study, tmp_path)
    (damaged / "sax_7" / "IM-0007-0001.dcm").unlink()
    read = []
    real = plan_views.read_frame_pixels
    monkeypatch.setattr(plan_views, "read_frame_pixels", lambda frame: read.append(frame.path.name) or real(frame))
    sample = Path(__file__).resolve().parents[1] / "Resources" / "Sample" / "heart-plane-lines"
    assert main(["plan", str(damaged), "--weights", str(sample), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert "IM-0007-0002.dcm" not in read and len(read) == plan["sax"]["slices"] - 1
    assert all(name.endswith("-0001.dcm") for name in read)
    assert any("no image of phase 0" in n and "sax_7/IM-0007-0002.dcm" in n for n in plan["notes"])
