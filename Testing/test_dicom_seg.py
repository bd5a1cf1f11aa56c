"""The DICOM SEG writer (pydicom only): highdicom and pydicom read back the label maps written, dciodvfy accepts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import require_tool

from PlaneSSLLib.dicom.report import apply_views
from PlaneSSLLib.dicom.scan import scan_tree
from PlaneSSLLib.dicom.stacks import find_sax_stack
from PlaneSSLLib.inference.dicom_seg import SEGMENTATION_STORAGE, write_dicom_seg
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from PlaneSSLLib.preprocess.labels import ACDC_STRUCTURES

ROOT = Path(__file__).resolve().parents[1]


def _stack(tmp_path_factory, layout: str):
    out = tmp_path_factory.mktemp(f"seg-{layout}")
    write_cohort(out, CohortOptions("heart", subjects=1, seed=5, phases=2, matrix=48, layout=layout), workers=1)
    result = scan_tree(out / "subject_0000" / "study")
    apply_views(result, anatomy_hint="heart")
    stack = find_sax_stack(result.studies[0])
    assert stack is not None
    return stack


@pytest.fixture(scope="module", params=["kaggle", "ukbb"])
def stack(request, tmp_path_factory):
    return _stack(tmp_path_factory, request.param)


def _labels(stack, seed: int = 0) -> np.ndarray:
    rows, cols = stack.planes[0].shape_px
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(len(stack.planes), rows, cols)).astype(np.uint8)
    labels[0] = 0  # an empty slice: its frames are left out
    labels[1, :, :] = 2  # a slice with one structure only
    return labels


def test_seg_round_trip_highdicom_pydicom_dciodvfy(stack, tmp_path):
    import highdicom as hd

    frames = [p.frames[0] for p in stack.positions]
    labels = _labels(stack)
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, stack.planes, frames)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SEGMENTATION_STORAGE
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    sources = [pydicom.dcmread(f.path, stop_before_pixels=True) for f in frames]
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert {s.SeriesInstanceUID for s in ds.ReferencedSeriesSequence} == {s.SeriesInstanceUID for s in sources}
    # frames: segment by segment, only the non-empty ones
    expected = [(s.label, k) for s in ACDC_STRUCTURES for k in range(len(labels)) if (labels[k] == s.label).any()]
    got = [(int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
            int(f.FrameContentSequence[0].DimensionIndexValues[1]) - 1) for f in ds.PerFrameFunctionalGroupsSequence]
    assert got == expected and int(ds.NumberOfFrames) == len(expected)
    # pydicom unpacks the bits into the same masks
    pixels = ds.pixel_array.reshape(len(expected), *labels.shape[1:])
    for (label, k), mask in zip(expected, pixels, strict=True):
        assert np.array_equal(mask.astype(bool), labels[k] == label)
    # highdicom (independent reader): the label map per source image is the one written
    seg = hd.seg.segread(path)
    assert [int(d.SegmentNumber) for d in seg.SegmentSequence] == [1, 2, 3]
    assert seg.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "87878005"
    uids = [s.SOPInstanceUID for s in sources]
    for k in range(1, len(uids)):  # (the empty slice has no frame to look up)
        back = seg.get_pixels_by_source_instance([uids[k]], combine_segments=True, skip_overlap_checks=True)
        assert np.array_equal(back[0], labels[k]), k
    # geometry: every frame on its source image's plane
    for f, (_, k) in zip(ds.PerFrameFunctionalGroupsSequence, expected, strict=True):
        assert np.allclose([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient],
                           stack.planes[k].image_position_patient, atol=1e-3)
        ref = f.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == uids[k]
    dciodvfy = require_tool("dciodvfy")
    check = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
    assert "Error" not in check.stdout + check.stderr, check.stdout + check.stderr


def test_seg_of_an_empty_map_keeps_every_frame(stack, tmp_path):
    frames = [p.frames[0] for p in stack.positions]
    labels = np.zeros((len(frames), *stack.planes[0].shape_px), dtype=np.uint8)
    ds = pydicom.dcmread(write_dicom_seg(tmp_path / "empty.dcm", labels, stack.planes, frames))
    assert int(ds.NumberOfFrames) == len(ACDC_STRUCTURES) * len(frames)
    assert not ds.pixel_array.any()


def test_seg_writer_needs_no_highdicom(stack, tmp_path):
    """The writer runs with highdicom unimportable (the fast predict-seg path never imports it)."""
    frames = [p.frames[0] for p in stack.positions]
    np.save(tmp_path / "labels.npy", _labels(stack, seed=1))
    script = (
        "import sys, pickle, numpy as np\n"
        "sys.modules['highdicom'] = None\n"
        "from PlaneSSLLib.inference.dicom_seg import write_dicom_seg\n"
        "planes, frames = pickle.load(open(sys.argv[1], 'rb'))\n"
        "write_dicom_seg(sys.argv[2], np.load(sys.argv[3]), planes, frames)\n"
        "assert 'highdicom' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    import pickle

    (tmp_path / "in.pkl").write_bytes(pickle.dumps((stack.planes, frames)))
    root = str(Path(__file__).resolve().parents[1])
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "in.pkl"), str(tmp_path / "s.dcm"),
                          str(tmp_path / "labels.npy")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": root})
    assert run.returncode == 0, run.stderr
    assert pydicom.dcmread(tmp_path / "s.dcm").Modality == "SEG"


def test_seg_source_without_uid_is_named(stack, tmp_path):
    from PlaneSSLLib.errors import InputError

    frames = [p.frames[0] for p in stack.positions]
    bad = pydicom.dcmread(frames[2].path)
    del bad.SOPInstanceUID
    copy = tmp_path / "bad.dcm"
    bad.save_as(copy)
    frames[2] = type(frames[2])(**{**frames[2].__dict__, "path": copy})
    labels = _labels(stack)
    with pytest.raises(InputError, match="bad.dcm.*SOPInstanceUID"):
        write_dicom_seg(tmp_path / "seg.dcm", labels, stack.planes, frames)
    assert not (tmp_path / "seg.dcm").exists()


def test_seg_carries_the_manifests_terminology(stack, tmp_path):
    import json

    from PlaneSSLLib.inference.dicom_seg import structures_from_terminology

    manifest = json.loads((ROOT / "Resources" / "Sample" / "heart-segmentation" / "manifest.json").read_text())
    record = manifest["terminology"]
    assert structures_from_terminology(record)[1] == list(ACDC_STRUCTURES)  # the sample model: ACDC codes
    record = {"category": {"scheme": "SCT", "value": "91723000", "meaning": "Anatomical structure"},
              "labels": {"2": {"name": "Blood pool", "scheme": "SCT", "value": "87612001", "meaning": "Blood"},
                         "1": {"name": "Wall", "short": "W", "scheme": "SCT", "value": "74281007",
                               "meaning": "Myocardium", "color_rgb": [1, 2, 3]}}}
    category, structures = structures_from_terminology(record)
    frames = [p.frames[0] for p in stack.positions]
    labels = np.clip(_labels(stack), 0, 2)
    ds = pydicom.dcmread(write_dicom_seg(tmp_path / "t.dcm", labels, stack.planes, frames, structures,
                                         category=category))
    got = [(int(s.SegmentNumber), s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
            s.SegmentedPropertyCategoryCodeSequence[0].CodeValue) for s in ds.SegmentSequence]
    assert got == [(1, "Wall", "74281007", "91723000"), (2, "Blood pool", "87612001", "91723000")]
