"""``planessl inspect`` (and ``lines`` on multi-frame files): outputs, exit codes, privacy."""

from __future__ import annotations

import json
import shutil

import pytest
from dicom_fixtures import (
    MixedTree,
    build_mixed_tree,
    stack_planes,
    study_info,
    write_classic_series,
    write_enhanced_cine,
)

from PlaneSSLLib.dicom.report import SCHEMA_VERSION
from PlaneSSLLib.geometry import intersect_images, unit
from training_cli.main import main

SERIES_KEYS = {
    "series", "series_uid", "part", "series_number", "modality", "view", "view_source", "view_reason",
    "description", "folder", "n_files", "n_images", "n_slices", "n_phases", "pixel_spacing_mm",
    "slice_spacing_mm", "slice_thickness_mm", "shape_px", "normal_lps", "transfer_syntaxes", "usable", "problems",
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> MixedTree:
    return build_mixed_tree(tmp_path_factory.mktemp("cli") / "tree", shutil.which("dcmcjpeg") is not None)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def json_and_text(mixed):
    """Both outputs of the mixed tree, captured once for the module."""
    import contextlib
    import io

    outputs = []
    for extra in (["--json"], []):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["inspect", str(mixed.root), *extra])
        outputs.append((code, out.getvalue(), err.getvalue()))
    return outputs


def test_inspect_names_every_problem_file(mixed, json_and_text):
    (code_j, out_j, _), (code_t, out_t, _) = json_and_text
    assert code_j == 0 and code_t == 0
    data = json.loads(out_j)
    by_path = {p["path"]: p for p in data["problems"]}
    assert set(by_path) == set(mixed.problems)
    for path, kind in mixed.problems.items():
        assert by_path[path]["kind"] == kind
        assert path in out_t, f"{path} not named in the readable output"
    summary = {path for g in data["ignored_summary"] for path in g["paths"]}
    assert summary == {p for p, k in mixed.problems.items() if k == "ignored"}
    assert data["counts"]["errors"] == sum(1 for k in mixed.problems.values() if k == "error")


def test_inspect_json_schema_and_series(mixed, json_and_text):
    data = json.loads(json_and_text[0][1])
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["root"] == str(mixed.root)
    assert set(data) == {"schema_version", "root", "files_seen", "images", "counts", "views_note", "studies",
                         "problems", "ignored_summary", "data_format", "layout_notes"}
    assert len(data["studies"]) == 2
    series = {}
    for study in data["studies"]:
        assert set(study) == {"study", "patient", "anatomy", "folder", "problems", "series"}
        for s in study["series"]:
            assert set(s) == SERIES_KEYS
            series[s["folder"]] = s
    for written in mixed.series.values():
        s = series[written.folder.relative_to(mixed.root).as_posix()]
        assert (s["n_slices"], s["n_phases"]) == (written.n_slices, written.n_phases)
        assert s["pixel_spacing_mm"] == pytest.approx(list(written.spacing_mm))
        assert s["shape_px"] == list(written.shape_px)
        assert s["usable"] is True
        assert len(s["transfer_syntaxes"]) == 1
    assert series["patientA/bigendian"]["transfer_syntaxes"] == ["Explicit VR Big Endian"]
    assert series["patientA/cine_le"]["slice_spacing_mm"] == pytest.approx(6.5)


def test_inspect_text_table(mixed, json_and_text):
    text = json_and_text[1][1]
    assert text.startswith(str(mixed.root))
    for folder in ("patientA/cine_le", "patientB/enhanced", "patientB/rle"):
        assert folder in text
    assert "1.25x0.9" in text and "J2K-LL" in text and "ExplBE" in text


def test_no_identifiers_in_any_output(mixed, json_and_text):
    assert mixed.identifiers
    everything = "\n".join(out + err for _, out, err in json_and_text)
    for ident in mixed.identifiers:
        assert ident not in everything, f"identifier {ident!r} leaked"
    assert "Secretname" not in everything and "PID-SECRET" not in everything and "19610203" not in everything


def test_missing_dir_exit_code(tmp_path, capsys):
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "nope"))
    assert code == 2 and "nope: no such file or directory" in err and out == ""


def test_no_dicom_image_exit_code_still_lists_problems(tmp_path, capsys):
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "empty.dcm").write_bytes(b"")
    code, out, err = run_cli(capsys, "inspect", str(tmp_path), "--json")
    assert code == 1 and "no DICOM image found" in err
    data = json.loads(out)
    assert {p["path"] for p in data["problems"]} == {"readme.txt", "empty.dcm"}
    code, out, err = run_cli(capsys, "inspect", str(tmp_path))
    assert code == 1 and "readme.txt" in out and "empty.dcm" in out


def test_empty_dir_exit_code(tmp_path, capsys):
    code, _, err = run_cli(capsys, "inspect", str(tmp_path))
    assert code == 1 and "no DICOM image found" in err


def test_no_progress_when_stderr_is_not_a_tty(mixed, json_and_text):
    assert "scanning" not in json_and_text[0][2] and "scanning" not in json_and_text[1][2]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_overrides_and_anatomy_are_passed_to_view_identification(mixed, tmp_path, capsys, monkeypatch, fmt):
    views = pytest.importorskip("PlaneSSLLib.dicom.views")
    calls = []

    def fake_identify(study, anatomy_hint=None, overrides=None):
        calls.append((anatomy_hint, overrides))
        for s in study.series:
            s.view, s.view_source = overrides.get(s.folder.name), "override"

    monkeypatch.setattr(views, "identify_views", fake_identify)
    path = tmp_path / f"over.{fmt}"
    path.write_text('{"cine_le": "SAX", "rle": "COR"}' if fmt == "json" else "cine_le: SAX\nrle: COR\n")
    code, out, _ = run_cli(capsys, "inspect", str(mixed.root), "--json", "--overrides", str(path),
                           "--anatomy", "knee")
    assert code == 0
    assert calls and all(c == ("knee", {"cine_le": "SAX", "rle": "COR"}) for c in calls)
    views_by_folder = {s["folder"]: (s["view"], s["view_source"]) for st in json.loads(out)["studies"]
                       for s in st["series"]}
    assert views_by_folder["patientA/cine_le"] == ("SAX", "override")
    assert views_by_folder["patientB/rle"] == ("COR", "override")


def test_bad_overrides_file(mixed, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    code, _, err = run_cli(capsys, "inspect", str(mixed.root), "--overrides", str(path))
    assert code == 2 and "bad.yaml" in err and "mapping" in err
    code, _, err = run_cli(capsys, "inspect", str(mixed.root), "--overrides", str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json" in err


def test_lines_on_a_multiframe_file(tmp_path, capsys):
    """``planessl lines`` with --frame-a picks the frame of an enhanced multi-frame file."""
    written = write_enhanced_cine(tmp_path, "enh.dcm", study_info("m"), 1, "cine", n_slices=2, n_phases=2)
    a0 = written.planes[0]
    tilted = unit(a0.normal_lps + 0.5 * a0.x_dir_lps)  # B is oblique to A: lines differ per slice
    other = stack_planes(1, x_dir=tilted, y_dir=a0.y_dir_lps)[0]
    b = write_classic_series(tmp_path, "b", study_info("m"), 2, "lax", planes=[other])
    path_a, frame = written.path_of[(1, 0)]  # slice 1, phase 0 (frame 1 in phase-major order)
    assert frame == 1
    code, out, _ = run_cli(capsys, "lines", str(path_a), str(b.paths[0]), "--frame-a", str(frame), "--json")
    assert code == 0
    got = json.loads(out)
    expected = intersect_images(written.planes[1], other).as_dict()
    assert got["parallel"] is False
    for key in ("in_a", "in_b"):
        assert got[key]["p0"] == pytest.approx(expected[key]["p0"], abs=1e-3)
        assert got[key]["p1"] == pytest.approx(expected[key]["p1"], abs=1e-3)
    # frame 0 lies elsewhere: a different line in A
    code, out0, _ = run_cli(capsys, "lines", str(path_a), str(b.paths[0]), "--frame-a", "0", "--json")
    assert json.loads(out0)["in_a"] != got["in_a"]
