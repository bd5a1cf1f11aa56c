"""The header scan's fast path (``dicom.scan._fast_header``, struct only) gives pydicom's FileHeader or steps aside."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_fixtures import build_mixed_tree, study_info, write_classic_series
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ImplicitVRLittleEndian

from PlaneSSLLib.dicom import scan
from PlaneSSLLib.dicom.records import FileHeader


def _plain(value: object) -> object:
    """A comparable form of a FileHeader (numpy arrays as lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _both(path: Path) -> tuple[FileHeader | None, object]:
    size = path.stat().st_size
    with open(path, "rb") as fp:
        fast = scan._fast_header(path, fp, size)
        fp.seek(0)
        slow = scan._pydicom_header(path, fp, size)
    return fast, slow


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_mixed_tree(tmp_path_factory.mktemp("fast") / "tree", shutil.which("dcmcjpeg") is not None)


def test_fast_path_equals_pydicom_path_on_the_mixed_tree(tree):
    files, _ = scan.list_files(tree.root)
    taken = set()
    for path in files:
        fast, slow = _both(path)
        if fast is not None:
            assert isinstance(slow, FileHeader), (path, slow)
            assert _plain(fast) == _plain(slow), path
            taken.add(path.relative_to(tree.root).parts[1] if len(path.relative_to(tree.root).parts) > 2 else path)
    # the common encodings go the fast way; the odd ones and every broken file go to pydicom
    assert {"cine_le", "implicit", "rle", "j2k", "jpegls"} <= taken
    assert not taken & {"bigendian", "deflated", "enhanced", "cut_header", "j2k_cut", "report"}
    assert "truncated" in taken  # its second file is whole
    truncated = sorted((tree.root / "patientA" / "truncated").iterdir())
    assert [_both(p)[0] is None for p in truncated].count(True) == 1


def _write(path: Path, ts: str | None, edit) -> Path:
    study = study_info("fastpath")
    ws = write_classic_series(path.parent, path.name, study, 7, "fast  ", 1, 1, ts)
    file = ws.paths[0]
    ds = pydicom.dcmread(file)
    edit(ds)
    ds.save_as(file, enforce_file_format=True)
    return file


def _nested_sequence(ds: Dataset) -> None:
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "1", "DCM", "x"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    item.PurposeOfReferenceCodeSequence = DicomSequence([inner])
    ds.ReferencedImageSequence = DicomSequence([item, item])
    for elem in (ds["ReferencedImageSequence"], item["PurposeOfReferenceCodeSequence"]):
        elem.is_undefined_length = True
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True


@pytest.mark.parametrize("ts", [None, ImplicitVRLittleEndian])
def test_fast_path_skips_undefined_length_sequences(tmp_path, ts):
    file = _write(tmp_path / "seq", ts, _nested_sequence)
    fast, slow = _both(file)
    assert fast is not None and _plain(fast) == _plain(slow)
    assert fast.description == "fast"  # trailing spaces dropped as pydicom does


@pytest.mark.parametrize("edit", [
    lambda ds: setattr(ds, "SpecificCharacterSet", "ISO_IR 100") or setattr(ds, "SeriesDescription", "Hérz"),
    lambda ds: setattr(ds, "SeriesDescription", "a\\b"),
    lambda ds: ds.add_new(0x00291010, "OB", bytes(70000)),  # a header past the first read
    lambda ds: ds.__delattr__("SOPClassUID"),
])
def test_odd_headers_go_to_pydicom(tmp_path, edit):
    file = _write(tmp_path / "odd", None, edit)
    fast, slow = _both(file)
    assert fast is None
    assert scan.read_file_header(file) == slow or _plain(scan.read_file_header(file)) == _plain(slow)


def test_scan_tree_is_at_least_as_fast_as_plain_dcmread(tmp_path):
    """The acceptance figure in small (bench/bench_inspect.py measures it properly)."""
    study = study_info("speed")
    for s in range(4):
        write_classic_series(tmp_path, f"s{s}", study, s + 1, f"cine {s}", 10, 5)
    files, _ = scan.list_files(tmp_path)
    for p in files:
        p.read_bytes()

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    plain = best(lambda: [pydicom.dcmread(p) for p in files])
    ours = best(lambda: scan.scan_tree(tmp_path))
    assert ours < plain * 1.0, (ours, plain)
