"""Reading DICOM trees: scan, grouping into series/positions/phases, pixel decoding, robustness."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_fixtures import (
    MixedTree,
    build_mixed_tree,
    stack_planes,
    study_info,
    truncate,
    write_classic_series,
    write_enhanced_cine,
)

from PlaneSSLLib.dicom import scan as scan_module
from PlaneSSLLib.dicom.pixels import (
    PixelReadError,
    read_frame_pixels,
    read_position_pixels,
    read_series_pixels,
)
from PlaneSSLLib.dicom.records import ScanResult, Series
from PlaneSSLLib.dicom.scan import read_file_header, scan_tree
from PlaneSSLLib.geometry import ImagePlane


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> MixedTree:
    with_dcmtk = shutil.which("dcmcjpeg") is not None
    return build_mixed_tree(tmp_path_factory.mktemp("mixed") / "tree", with_dcmtk)


@pytest.fixture(scope="module")
def mixed_scan(mixed) -> ScanResult:
    return scan_tree(mixed.root)


def series_by_description(result: ScanResult) -> dict[str, Series]:
    return {s.description: s for st in result.studies for s in st.series}


# ----------------------------------------------------------------------------- acceptance
def test_mixed_tree_problems_are_named(mixed, mixed_scan):
    """Reading survives the mixed tree and reports each problem by file name."""
    found = {p.path.relative_to(mixed.root).as_posix(): p.kind for p in mixed_scan.problems}
    assert found == mixed.problems
    messages = {p.path.relative_to(mixed.root).as_posix(): p.message for p in mixed_scan.problems}
    assert "Basic Text SR Storage" in messages["patientA/report/sr.dcm"]
    assert "Media Storage Directory Storage" in messages["DICOMDIR"]
    assert "truncated" in messages["patientA/truncated/IM0000.dcm"]
    assert "fragment" in messages["patientB/j2k_cut/IM0000.dcm"]
    assert mixed_scan.files_seen == sum(1 for p in mixed.root.rglob("*") if p.is_file())


def test_mixed_tree_series_counts_and_geometry(mixed, mixed_scan):
    got = series_by_description(mixed_scan)
    assert len(mixed_scan.studies) == 2
    for name, written in mixed.series.items():
        s = got[written.paths[0].parent.name if name != "enhanced" else "enhanced cine"]
        assert s.usable, (name, s.problems)
        assert (s.n_slices, s.n_phases) == (written.n_slices, written.n_phases), name
        assert s.transfer_syntaxes == [mixed.syntax[name]], name
        assert s.pixel_spacing_mm == pytest.approx(written.spacing_mm)
        assert s.shape_px == written.shape_px
        gap = np.linalg.norm(written.planes[1].origin_lps - written.planes[0].origin_lps)
        assert s.slice_spacing_mm == pytest.approx(gap, abs=1e-4)
        for position, plane in zip(s.positions, written.planes, strict=True):
            assert position.plane.is_same_plane(plane, tol_mm=1e-3)
            np.testing.assert_allclose(position.plane.origin_lps, plane.origin_lps, atol=1e-4)
        assert s.folder == written.paths[0].parent
    # the truncated series keeps its one good file
    assert got["truncated"].n_slices == 1
    assert {st.root.name for st in mixed_scan.studies} == {"patientA", "patientB"}


def test_mixed_tree_pixels_decode_for_every_syntax(mixed, mixed_scan):
    got = series_by_description(mixed_scan)
    for name, written in mixed.series.items():
        s = got[written.paths[0].parent.name if name != "enhanced" else "enhanced cine"]
        arr = read_series_pixels(s)
        assert arr.dtype == np.float32
        assert arr.shape == (written.n_slices, written.n_phases, *written.shape_px)
        for (k, p), px in written.pixels.items():
            expected = px.astype(np.float32)
            if name == "enhanced":
                expected = expected * 2.0 - 50.0  # rescale in the Pixel Value Transformation group
            if name in mixed.lossy:
                assert np.abs(arr[k, p] - expected).mean() < 3.0, name
            else:
                np.testing.assert_array_equal(arr[k, p], expected, err_msg=name)


def test_jpeg_lossless_and_baseline_present(mixed):
    from conftest import require_tool

    require_tool("dcmcjpeg")
    assert {"jpeg_sv1", "jpeg_p14", "jpeg_base"} <= set(mixed.series)


# ----------------------------------------------------------------------------- cine and multi-frame
def test_classic_cine_phases_in_trigger_order(tmp_path):
    written = write_classic_series(tmp_path, "cine", study_info("c"), 1, "cine", n_slices=2, n_phases=5)
    result = scan_tree(tmp_path)
    (s,) = result.studies[0].series
    assert (s.n_slices, s.n_phases) == (2, 5)
    for k, position in enumerate(s.positions):
        assert [f.trigger_time_ms for f in position.frames] == [0.0, 40.0, 80.0, 120.0, 160.0]
        arr = read_position_pixels(position)
        assert arr.shape == (5, 32, 40)
        for p in range(5):
            np.testing.assert_array_equal(arr[p], written.pixels[(k, p)])
    locations = [p.location_mm for p in s.positions]
    assert locations == sorted(locations)


def test_enhanced_multiframe_regrouped_by_position(tmp_path):
    from pydicom.uid import RLELossless

    written = write_enhanced_cine(tmp_path, "enh.dcm", study_info("e"), 3, "cine", n_slices=3, n_phases=4,
                                  transfer_syntax=RLELossless)
    (s,) = scan_tree(tmp_path).studies[0].series
    assert (s.n_slices, s.n_phases) == (3, 4)
    assert s.n_files == 1 and s.n_images == 12
    for k, position in enumerate(s.positions):
        assert [f.temporal_position for f in position.frames] == [1, 2, 3, 4]
        assert [f.trigger_time_ms for f in position.frames] == [0.0, 35.0, 70.0, 105.0]
        assert all(f.n_frames_in_file == 12 for f in position.frames)
        for p, frame in enumerate(position.frames):
            assert (frame.path, frame.frame_index) == written.path_of[(k, p)]
            np.testing.assert_array_equal(read_frame_pixels(frame), written.pixels[(k, p)])


def test_single_file_scan(tmp_path):
    written = write_classic_series(tmp_path, "one", study_info("s"), 1, "one", n_slices=1)
    result = scan_tree(written.paths[0])
    assert result.files_seen == 1 and result.studies[0].series[0].n_slices == 1


# ----------------------------------------------------------------------------- geometry problems
def _strip(path: Path, *keywords: str, **values) -> None:
    ds = pydicom.dcmread(path)
    for kw in keywords:
        delattr(ds, kw)
    for kw, v in values.items():
        setattr(ds, kw, v)
    ds.save_as(path, enforce_file_format=True)


def test_series_with_a_file_missing_geometry_is_flagged(tmp_path):
    written = write_classic_series(tmp_path, "sax", study_info("g"), 1, "sax", n_slices=4, shuffle=False)
    _strip(written.paths[2], "ImagePositionPatient")
    (s,) = scan_tree(tmp_path).studies[0].series
    assert not s.usable
    assert s.n_slices == 3 and s.n_images == 4 and s.n_files == 4
    assert any("IM0002.dcm" in p and "ImagePositionPatient" in p for p in s.problems)


def test_degenerate_orientation_and_missing_spacing(tmp_path):
    written = write_classic_series(tmp_path, "bad", study_info("d"), 1, "bad", n_slices=2, shuffle=False)
    _strip(written.paths[0], ImageOrientationPatient=[0, 0, 0, 0, 1, 0])
    _strip(written.paths[1], "PixelSpacing")
    (s,) = scan_tree(tmp_path).studies[0].series
    assert not s.usable and s.n_slices == 0 and s.positions == []
    text = "\n".join(s.problems)
    assert "IM0000.dcm" in text and "IM0001.dcm" in text and "PixelSpacing" in text


def test_series_split_by_orientation(tmp_path):
    """A 3-plane localiser in one series: three parts, two slices each, all usable."""
    study = study_info("l")
    axes = np.eye(3)
    planes = []
    for x, y in ((axes[0], axes[1]), (axes[1], axes[2]), (axes[0], axes[2])):
        planes += stack_planes(2, x_dir=x, y_dir=y, gap_mm=5.0)
    write_classic_series(tmp_path, "loc", study, 1, "localizer", planes=planes)
    parts = scan_tree(tmp_path).studies[0].series
    assert len(parts) == 3
    assert sorted(s.part for s in parts) == [1, 2, 3]
    assert len({s.uid_key for s in parts}) == 1
    assert {s.key for s in parts} == {f"{parts[0].uid_key}-{n}" for n in (1, 2, 3)}
    for s in parts:
        assert s.usable and s.n_slices == 2 and s.slice_spacing_mm == pytest.approx(5.0)
        assert any("split by orientation" in p for p in s.problems)


def test_duplicate_instance_ignored(tmp_path):
    written = write_classic_series(tmp_path, "a", study_info("u"), 1, "a", n_slices=2)
    copy = tmp_path / "copy" / "dup.dcm"
    copy.parent.mkdir()
    shutil.copy(written.paths[0], copy)
    result = scan_tree(tmp_path)
    (problem,) = result.problems
    assert problem.kind == "ignored" and "duplicate" in problem.message
    assert result.studies[0].series[0].n_slices == 2


# ----------------------------------------------------------------------------- file-level robustness
def test_file_without_preamble_is_read(tmp_path):
    written = write_classic_series(tmp_path, "a", study_info("p"), 1, "a", n_slices=1)
    path = written.paths[0]
    path.write_bytes(path.read_bytes()[132:])
    (s,) = scan_tree(tmp_path).studies[0].series
    np.testing.assert_array_equal(read_frame_pixels(s.positions[0].frames[0]), written.pixels[(0, 0)])


@pytest.mark.parametrize("keep", [100, 200, 400, -1])
def test_truncated_files_are_errors_naming_the_file(tmp_path, keep):
    written = write_classic_series(tmp_path, "a", study_info("t"), 1, "a", n_slices=1)
    truncate(written.paths[0], keep)
    result = read_file_header(written.paths[0])
    assert result.kind == "error", result
    assert result.path == written.paths[0]


def test_pixel_data_shorter_than_header_promises(tmp_path):
    written = write_classic_series(tmp_path, "a", study_info("t"), 1, "a", n_slices=1)
    _strip(written.paths[0], Rows=64)
    problem = read_file_header(written.paths[0])
    assert problem.kind == "error" and "promises" in problem.message


def test_missing_plugin_error_names_file(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    written = write_classic_series(tmp_path, "a", study_info("j"), 1, "a", n_slices=1,
                                   transfer_syntax=JPEG2000Lossless)
    (s,) = scan_tree(tmp_path).studies[0].series
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    with pytest.raises(PixelReadError) as info:
        read_frame_pixels(s.positions[0].frames[0])
    assert str(written.paths[0]) in str(info.value) and "pylibjpeg" in str(info.value)


def test_unreadable_pixel_file_names_file(tmp_path):
    written = write_classic_series(tmp_path, "a", study_info("r"), 1, "a", n_slices=1)
    (s,) = scan_tree(tmp_path).studies[0].series
    written.paths[0].write_bytes(b"garbage")
    with pytest.raises(PixelReadError, match="IM0000.dcm"):
        read_frame_pixels(s.positions[0].frames[0])


def test_parallel_header_reading_matches_serial(tmp_path, monkeypatch):
    for n in range(3):
        write_classic_series(tmp_path, f"s{n}", study_info("w"), n + 1, f"s{n}", n_slices=3, n_phases=2)
    (tmp_path / "junk.txt").write_text("x")
    serial = scan_tree(tmp_path)
    monkeypatch.setattr(scan_module, "_MIN_FILES_PER_WORKER", 2)
    progress: list[tuple[int, int]] = []
    parallel = scan_tree(tmp_path, progress=lambda d, t: progress.append((d, t)), workers=2)
    assert progress[-1] == (19, 19) and len(progress) == 19

    def summary(r: ScanResult):
        return [
            (s.key, s.n_slices, s.n_phases, [(f.path, f.frame_index) for f in s.frames])
            for st in r.studies
            for s in st.series
        ], [(p.path, p.kind) for p in r.problems]

    assert summary(serial) == summary(parallel)


def test_missing_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_tree(tmp_path / "nowhere")


def test_plane_tolerances_keep_near_planes_apart(tmp_path):
    """Two slices 0.05 mm apart are two positions; a 0.001 mm jitter is the same position."""
    base = stack_planes(1)[0]
    n = base.normal_lps
    planes = [base, ImagePlane(base.origin_lps + 0.05 * n, base.x_dir_lps, base.y_dir_lps,
                               base.spacing_mm, base.shape_px)]
    write_classic_series(tmp_path, "a", study_info("n"), 1, "a", planes=planes)
    jitter = [ImagePlane(base.origin_lps + 0.001 * n, base.x_dir_lps, base.y_dir_lps, base.spacing_mm,
                         base.shape_px)]
    write_classic_series(tmp_path, "b", study_info("n"), 2, "b", planes=[base] + jitter)
    got = series_by_description(scan_tree(tmp_path))
    assert got["a"].n_slices == 2
    assert got["b"].n_slices == 1 and got["b"].n_phases == 2


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.90",
                                    "1.2.840.10008.1.2.1.99"])
def test_every_truncation_is_an_error(tmp_path, syntax):
    """Cutting a file anywhere gives an "error" for that file, never an exception or a pass."""
    written = write_classic_series(tmp_path, "a", study_info("x"), 1, "a", n_slices=1, transfer_syntax=syntax)
    path = written.paths[0]
    data = path.read_bytes()
    for keep in range(1, len(data), 23):
        path.write_bytes(data[:keep])
        result = read_file_header(path)
        assert getattr(result, "kind", None) == "error", (keep, result)


def test_enhanced_writer_passes_dciodvfy(tmp_path):
    """The Enhanced MR writer used by these tests makes standard-conformant objects."""
    import subprocess

    from conftest import require_tool

    exe = require_tool("dciodvfy")
    written = write_enhanced_cine(tmp_path, "enh.dcm", study_info("v"), 1, "cine", n_slices=2, n_phases=2)
    run = subprocess.run([exe, str(written.paths[0])], capture_output=True, text=True)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors
