"""A user's mistake or a full disk is a message, never a traceback (issue 15, finding 8).

Each case is a real input a user could give (wrong-typed weights manifests, a DICOM file with
sequences nested thousands deep, ``--out`` naming a file, an absurd learning rate, a disk that
fills while a cache is written); the command must end with a message naming the file or key
and a non-zero exit status, and leave nothing half-written.
"""

from __future__ import annotations

import copy
import errno
import io
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from test_weights_contract import _manifest, _network

from PlaneSSLLib.errors import ConfigError
from PlaneSSLLib.inference.manifest import validate_manifest
from PlaneSSLLib.inference.weights import WeightsError, export_model
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from PlaneSSLLib.training.config import config_from_dict
from training_cli.main import main


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_cohort(root / "c", CohortOptions("heart", subjects=1, seed=3, phases=2, matrix=48), workers=1)
    return root / "c" / "subject_0000" / "study"


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _set(manifest: dict, dotted: str, value) -> dict:
    manifest = copy.deepcopy(manifest)
    *parents, last = dotted.split(".")
    node = manifest
    for p in parents:
        node = node[p]
    node[last] = value
    return manifest


@pytest.mark.parametrize("task,key,value", [
    ("seg", "architecture.config.levels", 2.5),
    ("seg", "architecture.config.base_filters", "2"),
    ("seg", "architecture.config.location_head", "no"),
    ("seg", "architecture.config.in_channels", True),
    ("seg", "intensity_normalisation.method", 5),
    ("seg", "task", ["seg"]),
    ("acl", "architecture.config.encoder.levels", "3"),
    ("acl", "architecture.config.hidden", 1.5),
])
def test_wrong_typed_manifest_values_are_named(task, key, value):
    with pytest.raises(WeightsError) as info:
        validate_manifest(_set(_manifest(task), key, value), "m.json", expect_task=task)
    assert "m.json" in str(info.value) and key.rsplit(".", 1)[-1] in str(info.value)


def test_an_absurd_learning_rate_is_a_config_error():
    from training_helpers import TINY

    for key in ("lr", "transferred_lr"):
        raw = copy.deepcopy(TINY)
        raw.setdefault("optim", {})[key] = 1e38
        with pytest.raises(ConfigError, match=f"optim.{key}"):
            config_from_dict(raw, "c.yaml")


def test_a_seed_beyond_64_bits_is_a_config_error():
    """runtime.seed 10**23 passed the checks and ended in torch.manual_seed's OverflowError (campaign)."""
    from training_helpers import TINY

    raw = copy.deepcopy(TINY)
    raw["runtime"]["seed"] = 10**23
    with pytest.raises(ConfigError, match="runtime.seed"):
        config_from_dict(raw, "c.yaml")
    raw["runtime"]["seed"] = 2**32 - 1
    assert config_from_dict(raw, "c.yaml").runtime.seed == 2**32 - 1


def _deep_sequence_file(source: Path, target: Path, depth: int = 5000) -> Path:
    """``source`` with a ReferencedImageSequence nested ``depth`` items deep (explicit VR little endian)."""
    raw = source.read_bytes()
    at = raw.index(b"\xe0\x7f\x10\x00")  # Pixel Data

    def tag(group: int, element: int) -> bytes:
        return struct.pack("<HH", group, element)

    undefined = b"\xff\xff\xff\xff"
    opening = tag(0x0008, 0x1140) + b"SQ\x00\x00" + undefined + tag(0xFFFE, 0xE000) + undefined
    closing = tag(0xFFFE, 0xE00D) + bytes(4) + tag(0xFFFE, 0xE0DD) + bytes(4)
    target.write_bytes(raw[:at] + opening * depth + closing * depth + raw[at:])
    return target


def test_deeply_nested_sequences_are_a_message(study, tmp_path, capsys):
    other = next((study / "4ch_4").glob("*.dcm"))
    deep = _deep_sequence_file(next((study / "sax_5").glob("*.dcm")), tmp_path / "deep.dcm")
    code, out, err = _run(capsys, "lines", deep, other)
    assert code == 2 and "deep.dcm" in err and "nested too deep" in err and "Traceback" not in err


def test_a_file_claiming_the_deflated_syntax_is_a_message(study, tmp_path, capsys):
    """Its body is not deflate data: pydicom's zlib.error was a traceback in ``lines`` (campaign)."""
    import pydicom
    from pydicom.filewriter import write_file_meta_info

    source = next((study / "sax_5").glob("*.dcm"))
    raw = source.read_bytes()
    meta_end = 144 + struct.unpack("<I", raw[140:144])[0]
    meta = pydicom.dcmread(source, stop_before_pixels=True).file_meta
    meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    write_file_meta_info(buffer, meta)
    bad = tmp_path / "deflated.dcm"
    bad.write_bytes(raw[:128] + b"DICM" + buffer.getvalue() + raw[meta_end:])
    code, out, err = _run(capsys, "lines", bad, next((study / "4ch_4").glob("*.dcm")))
    assert code == 2 and "deflated.dcm" in err and "not a readable DICOM file" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def seg_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export_model(_network("seg").eval(), tmp_path_factory.mktemp("w") / "seg", _manifest("seg"))


def test_out_that_is_a_file_is_a_message(study, seg_weights, tmp_path, capsys):
    in_the_way = tmp_path / "out"
    in_the_way.write_text("not a folder")
    code, out, err = _run(capsys, "predict", "seg", study, "--weights", seg_weights, "--out", in_the_way)
    assert code == 1 and str(in_the_way) in err and "folder" in err and "Traceback" not in err
    code, out, err = _run(capsys, "predict", "seg", study, "--weights", seg_weights, "--out", in_the_way / "x")
    assert code == 1 and str(in_the_way) in err and "Traceback" not in err
    assert in_the_way.read_text() == "not a folder"


def test_a_pixel_decode_error_names_the_file_without_pydicom_tracebacks(study, seg_weights, tmp_path, capsys):
    import shutil

    import pydicom
    from pydicom.encaps import encapsulate

    damaged = Path(shutil.copytree(study, tmp_path / "study"))
    bad = damaged / "sax_7" / "IM-0007-0001.dcm"  # phase 0, the phase segmented
    ds = pydicom.dcmread(bad)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream"])
    ds.save_as(bad, enforce_file_format=True)
    code, out, err = _run(capsys, "predict", "seg", damaged, "--weights", seg_weights, "--out", tmp_path / "o")
    assert code == 2 and str(bad) in err and "decode" in err
    assert "Traceback" not in err and "ERROR pydicom" not in err


def test_a_full_disk_while_writing_the_cache_is_a_message_not_sigbus(study, tmp_path, capsys, monkeypatch):
    """The cache's memory map has its blocks reserved first, so ENOSPC comes as an OSError there."""

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    cache = tmp_path / "cache"
    code, out, err = _run(capsys, "prepare", study, "--out", cache, "--size", "32", "--spacing", "4", "--quiet")
    assert code == 1 and "disk full" in err and "images" in err and "Traceback" not in err
    assert not [p for p in cache.rglob("*.npy")] if cache.exists() else True


def test_a_readonly_output_is_a_message(study, seg_weights, tmp_path, capsys, monkeypatch):
    """An unwritable output folder (EACCES/EROFS as a non-root user sees it) is said as such."""
    import PlaneSSLLib.atomic as atomic

    real_mkstemp = atomic.tempfile.mkstemp

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir", "?"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    code, out, err = _run(capsys, "predict", "seg", study, "--weights", seg_weights, "--out", tmp_path / "o",
                          "--no-dicom-seg")
    monkeypatch.setattr(atomic.tempfile, "mkstemp", real_mkstemp)
    assert code == 1 and "read-only file system" in err and str(tmp_path / "o") in err and "Traceback" not in err
    assert json.loads(out or "null") is None
