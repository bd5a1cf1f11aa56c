"""Adversarial campaign: damaged inputs run through the ``planessl`` commands, every outcome classified.

From a small phantom cohort (heart: 3 subjects, 2 phases, 48 px; knee: 1 subject), the bundled
sample weights (``Resources/Sample/``) and tiny ACL weights made here, it writes damaged inputs --
DICOM files (truncated, geometry tags missing or absurd, bad pixel data, a wrong transfer syntax,
huge sizes, sequences nested thousands deep, duplicate slices, missing phases), weights (NaN
tensors, flipped bytes, wrong shapes, wrong-typed or out-of-range manifest fields, a checksum
mismatch, a foreign task), configs (wrong types, non-finite numbers, an alias bomb, unknown keys,
huge sizes) and output paths (a file in the way, an existing output) -- runs each through the
commands that read it (one process per run, with a timeout) and classifies the outcome:

- ``ok``: exit 0 and the outputs pass a sanity check (finite numbers, every slice, probabilities
  in [0, 1], files complete);
- ``refusal``: a non-zero exit with one ``planessl ...: error:`` message naming the file or key;
- ``VAGUE-REFUSAL``: a non-zero exit whose message does not name the damaged file/key;
- ``TRACEBACK``: a Python traceback (or death by a signal);
- ``HANG``: the timeout ran out;
- ``SILENT-WRONG``: exit 0 with a result that is wrong or incomplete, or damage that had to be
  refused or reported and was not;
- ``DATA-LOSS``: an input or an existing output was changed or removed.

It prints the counts per class, a table of every case that is neither ``ok`` nor ``refusal``,
and writes every run to a CSV::

    nice -n 10 python scripts/campaign.py --out runs/campaign            # ~250 runs, < 20 min on 2 cores
    python scripts/campaign.py --quick --out /tmp/campaign               # a few dozen runs, < 2 min
    python scripts/campaign.py --only weights/ --out /tmp/c              # the cases whose name holds 'weights/'
    python scripts/campaign.py --only "no-ipp | lines" --out /tmp/c      # one command on one damage

Exit status: 0 when no run is TRACEBACK, HANG, SILENT-WRONG or DATA-LOSS, else 1.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SAMPLE_SEG = REPO / "Resources" / "Sample" / "heart-segmentation"
SAMPLE_LINES = REPO / "Resources" / "Sample" / "heart-plane-lines"
BAD_CLASSES = ("TRACEBACK", "HANG", "SILENT-WRONG", "DATA-LOSS")
CLASSES = ("ok", "refusal", "VAGUE-REFUSAL", *BAD_CLASSES)


# ----------------------------------------------------------------------------------------------
# Runs and their classification


@dataclass
class Case:
    """One command on one (damaged) input.

    ``expect``: ``refuse`` (exit 0 is wrong), ``ok`` (must succeed), ``any``.
    ``names``: a refusal's message must hold one of these (the damaged file, folder or key).
    ``check``: on exit 0, returns what is wrong with the outputs (None: sane).
    ``protect``: files and folders that must be unchanged afterwards (inputs, existing outputs).
    """

    name: str
    command: str
    argv: list[str]
    expect: str = "any"
    names: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None
    protect: list[Path] = field(default_factory=list)
    timeout: float = 120.0
    needs_baseline: bool = False


@dataclass
class Outcome:
    case: Case
    outcome: str
    rc: int | None
    seconds: float
    detail: str
    stdout: str = ""
    stderr: str = ""


def _tree_digest(paths: list[Path]) -> dict[str, str]:
    """Path → SHA-256 (or 'dir') of every file and folder under ``paths``."""
    digest: dict[str, str] = {}
    for root in paths:
        if not root.exists():
            digest[str(root)] = "absent"
            continue
        items = [root] if root.is_file() else [root, *sorted(root.rglob("*"))]
        for item in items:
            if item.is_file():
                digest[str(item)] = hashlib.sha256(item.read_bytes()).hexdigest()
            else:
                digest[str(item)] = "dir"
    return digest


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")})
    return env


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def run_case(case: Case) -> Outcome:
    before = _tree_digest(case.protect)
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "training_cli.main", *case.argv], cwd=REPO, env=_env(),
                              capture_output=True, timeout=case.timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        seconds = time.monotonic() - start
        out = (exc.stdout or b"").decode("utf-8", "replace")
        err = (exc.stderr or b"").decode("utf-8", "replace")
        return Outcome(case, "HANG", None, seconds, f"no exit after {case.timeout:.0f} s", out, err)
    seconds = time.monotonic() - start
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    after = _tree_digest(case.protect)
    changed = sorted(k for k in before if after.get(k) != before[k]) + sorted(set(after) - set(before))
    if changed:
        return Outcome(case, "DATA-LOSS", proc.returncode, seconds, f"changed/removed: {changed[:3]}", out, err)
    if "Traceback (most recent call last)" in out + err:
        return Outcome(case, "TRACEBACK", proc.returncode, seconds, _last_line(err), out, err)
    if proc.returncode < 0:
        return Outcome(case, "TRACEBACK", proc.returncode, seconds, f"killed by signal {-proc.returncode}", out, err)
    if proc.returncode != 0:
        if case.expect == "ok":
            return Outcome(case, "SILENT-WRONG", proc.returncode, seconds,
                           f"a valid input was refused: {_last_line(err)}", out, err)
        message = err.strip()
        if "error:" not in message:
            return Outcome(case, "VAGUE-REFUSAL", proc.returncode, seconds, f"no error message: {_last_line(err)}",
                           out, err)
        if case.names and not any(n in message for n in case.names):
            return Outcome(case, "VAGUE-REFUSAL", proc.returncode, seconds,
                           f"message names none of {list(case.names)}: {_last_line(err)}", out, err)
        return Outcome(case, "refusal", proc.returncode, seconds, _last_line(err), out, err)
    if case.expect == "refuse":
        return Outcome(case, "SILENT-WRONG", 0, seconds, "damaged input accepted (exit 0)", out, err)
    problem = None
    if case.check is not None:
        try:
            problem = case.check(Result(out, err))
        except Exception as exc:  # a check that cannot read the outputs: they are broken
            problem = f"outputs unreadable: {type(exc).__name__}: {exc}"[:200]
    if problem:
        return Outcome(case, "SILENT-WRONG", 0, seconds, problem, out, err)
    return Outcome(case, "ok", 0, seconds, "", out, err)


@dataclass
class Result:
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout as strict JSON (NaN/Infinity are not JSON: a ValueError)."""
        def bad(token):
            raise ValueError(f"non-standard JSON constant {token}")
        return json.loads(self.stdout, parse_constant=bad)


# ----------------------------------------------------------------------------------------------
# Sanity checks of outputs


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in _numbers(v)]
    if isinstance(obj, (list, tuple)):
        return [n for v in obj for n in _numbers(v)]
    return []


def _all_finite(obj: Any) -> str | None:
    bad = [n for n in _numbers(obj) if not math.isfinite(n)]
    return f"non-finite numbers in the output: {bad[:3]}" if bad else None


def _no_identifiers(text: str, identifiers: list[str]) -> str | None:
    leaked = [i for i in identifiers if i and i in text]
    return f"patient identifier in the output: {leaked[0][:12]}..." if leaked else None


def check_inspect(report_names: tuple[str, ...] = (), identifiers: list[str] | None = None):
    def check(r: Result) -> str | None:
        data = r.json()
        problem = _all_finite(data) or _no_identifiers(r.stdout + r.stderr, identifiers or [])
        if problem:
            return problem
        if report_names and not any(n in r.stdout for n in report_names):
            return f"damage not reported (none of {list(report_names)} in the report)"
        return None
    return check


def check_prepare(out: Path, report_names: tuple[str, ...] = ()):
    def check(r: Result) -> str | None:
        import numpy as np

        data = r.json()
        problem = _all_finite(data)
        if problem:
            return problem
        images = np.load(Path(data["cache"]) / "images.npy", mmap_mode="r")
        if images.shape[0] != data["slices"]:
            return f"cache holds {images.shape[0]} slices, the report says {data['slices']}"
        arr = np.asarray(images, dtype=np.float32)
        if not np.isfinite(arr).all():
            return "non-finite values in the cache"
        if data["slices"] == 0:
            return "an empty cache with exit 0"
        if report_names and not any(n in r.stdout for n in report_names):
            return f"damage not reported (none of {list(report_names)} in the report)"
        return None
    return check


def check_seg(out: Path, slices: int, baseline: dict | None = None):
    """``baseline``: phase → volumes of the undamaged study (filled before the run) or None."""
    def check(r: Result) -> str | None:
        import nibabel as nib
        import numpy as np

        data = r.json()
        problem = _all_finite(data)
        if problem:
            return problem
        for phase in data["phases"]:
            if phase["slices"] != slices:
                return f"segmented {phase['slices']} of {slices} slices"
            volumes = phase["volume_ml"]
            if any(v < 0 for v in volumes.values()) or volumes.get("LV", 0) <= 0:
                return f"implausible volumes {volumes}"
            label = np.asarray(nib.load(phase["nifti"]).dataobj)
            if label.shape[-1] != slices and slices not in label.shape:
                return f"label map shape {label.shape} lacks {slices} slices"
            if not set(np.unique(label).tolist()) <= {0, 1, 2, 3}:
                return f"labels outside 0..3: {np.unique(label)[:6]}"
            if baseline and phase["phase"] in baseline:
                ref = baseline[phase["phase"]]
                if any(abs(volumes[k] - ref[k]) > 0.01 * max(ref[k], 1.0) for k in ref):
                    return f"volumes {volumes} differ from the undamaged study's {ref}"
        return None
    return check


def check_lines_json(r: Result) -> str | None:
    data = r.json()
    problem = _all_finite(data)
    if problem:
        return problem
    angle = data.get("angle_deg")
    if angle is not None and not 0.0 <= angle <= 90.0 + 1e-6:
        return f"angle {angle} outside [0, 90]"
    return None


def check_predict_lines(r: Result) -> str | None:
    data = r.json()
    problem = _all_finite(data)
    if problem:
        return problem
    partners = data.get("partners") or []
    if not partners:
        return "no partner lines"
    for p in partners:
        if not 0.0 <= float(p.get("confidence", 0.0)) <= 1.0:
            return f"confidence {p.get('confidence')} outside [0, 1]"
    return None


def check_acl(r: Result) -> str | None:
    data = r.json()
    problem = _all_finite(data)
    if problem:
        return problem
    p = data.get("probability")
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        return f"probability {p!r} outside [0, 1]"
    return None


def check_plan(r: Result) -> str | None:
    data = r.json()
    problem = _all_finite(data)
    if problem:
        return problem
    for view, record in (data.get("views") or {}).items():
        if record is None:
            continue
        n = record.get("normal_lps")
        if n is not None and abs(math.sqrt(sum(x * x for x in n)) - 1.0) > 1e-3:
            return f"{view} normal {n} is not a unit vector"
    if not data.get("views"):
        return "no view planned"
    return None


def check_plan_reports(report_names: tuple[str, ...]):
    """``check_plan``, and a damaged SAX file must be named in the plan (its notes)."""
    def check(r: Result) -> str | None:
        problem = check_plan(r)
        if problem is None and report_names and not any(n in r.stdout for n in report_names):
            return f"damage not reported (none of {list(report_names)} in the plan)"
        return problem
    return check


def check_training_run(out: Path):
    def check(r: Result) -> str | None:
        import numpy as np
        from safetensors.numpy import load_file

        weights = out / "model" / "model.safetensors"
        if not weights.is_file() or not (out / "model" / "manifest.json").is_file():
            return "no exported model"
        tensors = load_file(str(weights))
        bad = [k for k, v in tensors.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            return f"exported non-finite tensor {bad[0]}"
        return None
    return check


def check_pretext_eval(out: Path):
    def check(r: Result) -> str | None:
        data = json.loads((out / "report.json").read_text())
        return _all_finite({k: v for k, v in data.items() if k != "baseline"}) if data else "empty report"
    return check


# ----------------------------------------------------------------------------------------------
# Damaged inputs


def _pydicom():
    import pydicom
    from pydicom import config

    config.settings.writing_validation_mode = config.IGNORE
    config.settings.reading_validation_mode = config.IGNORE
    return pydicom


def _edit(path: Path, change: Callable[[Any], None]) -> None:
    pydicom = _pydicom()
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=False)


def _set(keyword: str, value: Any) -> Callable[[Any], None]:
    def change(ds):
        setattr(ds, keyword, value)
    return change


def _set_text(keyword: str, text: str) -> Callable[[Any], None]:
    """Set a string-valued element to ``text`` as stored bytes, unchecked (values pydicom would refuse)."""
    def change(ds):
        from pydicom.datadict import dictionary_VR, tag_for_keyword
        from pydicom.dataelem import RawDataElement

        tag = tag_for_keyword(keyword)
        value = text.encode("latin-1")
        if len(value) % 2:
            value += b" "
        ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
    return change


def _delete(keyword: str) -> Callable[[Any], None]:
    def change(ds):
        if keyword in ds:
            delattr(ds, keyword)
    return change


def _truncate(fraction: float | int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        n = int(len(data) * fraction) if isinstance(fraction, float) else fraction
        path.write_bytes(data[:n])
    return damage


def _raw(change: Callable[[Any], None]) -> Callable[[Path], None]:
    return lambda path: _edit(path, change)


def _syntax(uid: str) -> Callable[[Path], None]:
    """Claim another transfer syntax in the file meta; the dataset bytes stay explicit VR little endian."""
    def damage(path: Path) -> None:
        import io

        from pydicom.filewriter import write_file_meta_info

        pydicom = _pydicom()
        data = path.read_bytes()
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        group_length = struct.unpack("<I", data[140:144])[0]
        body = data[144 + group_length:]
        meta = ds.file_meta
        meta.TransferSyntaxUID = uid
        buffer = io.BytesIO()
        write_file_meta_info(buffer, meta, enforce_standard=True)
        path.write_bytes(data[:128] + b"DICM" + buffer.getvalue() + body)
    return damage


def _short_pixels(ds) -> None:
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]


def _no_pixels(ds) -> None:
    del ds.PixelData


def _deep_sequence(depth: int) -> Callable[[Path], None]:
    """A ReferencedImageSequence nested ``depth`` items deep, appended as raw explicit-VR LE bytes."""
    def damage(path: Path) -> None:
        pydicom = _pydicom()
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.1":
            return
        # (0008,1140) SQ with undefined length, items with undefined length, nested
        item_start = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        seq_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        seq_head = struct.pack("<HH", 0x0008, 0x1140) + b"SQ" + b"\0\0" + struct.pack("<I", 0xFFFFFFFF)
        body = b""
        for _ in range(depth):
            body = seq_head + item_start + body + item_end + seq_end
        data = path.read_bytes()
        # insert right after the meta header: find the first dataset tag >= (0008,1140) is hard; put the
        # nested sequence where (0008,1140) belongs by rewriting through pydicom without it, then splicing
        marker = struct.pack("<HH", 0x0008, 0x103E)  # SeriesDescription: 0008,103E < 0008,1140
        pos = data.find(marker)
        if pos < 0:
            return
        length = struct.unpack("<H", data[pos + 6: pos + 8])[0]
        end = pos + 8 + length
        path.write_bytes(data[:end] + body + data[end:])
    return damage


@dataclass
class Damage:
    """A damage to one file of the study. ``kind``: ``unreadable`` (the file cannot be used),
    ``geometry`` (no usable geometry), ``pixels`` (header fine, image not decodable), ``odd`` (a
    strange but maybe usable value), ``benign`` (must not change anything)."""

    name: str
    target: str  # 'sax' (a middle SAX slice, phase 0), 'sax-end', 'lax' (the 2CH file of phase 0)
    kind: str
    apply: Callable[[Path], None]


DAMAGES: list[Damage] = [
    Damage("truncated-half", "sax", "unreadable", _truncate(0.5)),
    Damage("truncated-200b", "sax", "unreadable", _truncate(200)),
    Damage("empty-file", "sax", "unreadable", _truncate(0)),
    Damage("not-dicom", "sax", "unreadable", lambda p: p.write_bytes(b"this is not a DICOM file\n" * 40)),
    Damage("truncated-lax", "lax", "unreadable", _truncate(0.5)),
    Damage("no-ipp", "sax", "geometry", _raw(_delete("ImagePositionPatient"))),
    Damage("no-ipp-end", "sax-end", "geometry", _raw(_delete("ImagePositionPatient"))),
    Damage("no-iop", "sax", "geometry", _raw(_delete("ImageOrientationPatient"))),
    Damage("no-spacing", "sax", "geometry", _raw(_delete("PixelSpacing"))),
    Damage("iop-zero", "sax", "geometry", _raw(_set("ImageOrientationPatient", [0, 0, 0, 0, 0, 0]))),
    Damage("iop-parallel", "sax", "geometry", _raw(_set("ImageOrientationPatient", [1, 0, 0, 1, 0, 0]))),
    Damage("iop-nan", "sax", "geometry", _raw(_set_text("ImageOrientationPatient", "nan\\0\\0\\0\\1\\0"))),
    Damage("ipp-text", "sax", "geometry", _raw(_set_text("ImagePositionPatient", "abc\\1\\2"))),
    Damage("ipp-inf", "sax", "geometry", _raw(_set_text("ImagePositionPatient", "inf\\1\\2"))),
    Damage("spacing-zero", "sax", "geometry", _raw(_set("PixelSpacing", [0, 0]))),
    Damage("spacing-negative", "sax", "geometry", _raw(_set("PixelSpacing", [-1.5, -1.5]))),
    Damage("spacing-1e-9", "sax", "geometry", _raw(_set_text("PixelSpacing", "1e-9\\1e-9"))),
    Damage("spacing-1e9", "sax", "geometry", _raw(_set_text("PixelSpacing", "1e9\\1e9"))),
    Damage("spacing-one-value", "sax", "geometry", _raw(_set_text("PixelSpacing", "1.5"))),
    Damage("no-ipp-lax", "lax", "geometry", _raw(_delete("ImagePositionPatient"))),
    Damage("pixels-short", "sax", "pixels", _raw(_short_pixels)),
    Damage("pixels-missing", "sax", "pixels", _raw(_no_pixels)),
    Damage("rows-huge", "sax", "pixels", _raw(_set("Rows", 65535))),
    Damage("rows-zero", "sax", "pixels", _raw(_set("Rows", 0))),
    Damage("bits-allocated-12", "sax", "pixels", _raw(_set("BitsAllocated", 12))),
    Damage("samples-per-pixel-3", "sax", "pixels", _raw(_set("SamplesPerPixel", 3))),
    Damage("frames-100000", "sax", "pixels", _raw(_set("NumberOfFrames", 100000))),
    Damage("frames-negative", "sax", "pixels", _raw(_set("NumberOfFrames", -3))),
    Damage("syntax-jpeg2000", "sax", "pixels", _syntax("1.2.840.10008.1.2.4.90")),
    Damage("syntax-big-endian", "sax", "pixels", _syntax("1.2.840.10008.1.2.2")),
    Damage("syntax-deflate", "sax", "pixels", _syntax("1.2.840.10008.1.2.1.99")),
    Damage("syntax-unknown", "sax", "pixels", _syntax("1.2.3.4.5.6.7")),
    Damage("pixels-short-lax", "lax", "pixels", _raw(_short_pixels)),
    Damage("deep-sequence", "sax", "odd", _deep_sequence(3000)),
    Damage("trigger-time-text", "sax", "odd", _raw(_set_text("TriggerTime", "soon"))),
    Damage("temporal-position-huge", "sax", "odd", _raw(_set("TemporalPositionIdentifier", 2**31 - 1))),
    Damage("instance-number-negative", "sax", "benign", _raw(_set("InstanceNumber", -7))),
    Damage("description-binary", "sax", "benign", _raw(_set_text("SeriesDescription", "\xe9t\xe9 \x1b[31m"))),
]

#: Damages that leave no readable header (``lines`` reads headers only: it may answer for the others).
HEADER_LOST = ("truncated-200b", "empty-file", "not-dicom")

#: The damages also run through ``predict lines`` (the damaged image) and ``plan`` (its study).
PREDICT_LINES_DAMAGES = ("truncated-half", "no-ipp", "no-iop", "no-spacing", "iop-zero", "iop-nan", "ipp-inf",
                         "spacing-1e-9", "spacing-1e9", "pixels-short", "rows-huge", "frames-100000",
                         "syntax-jpeg2000", "syntax-unknown", "deep-sequence", "temporal-position-huge")
PLAN_DAMAGES = ("truncated-half", "no-ipp", "iop-parallel", "spacing-1e-9", "pixels-short", "rows-huge",
                "syntax-big-endian", "trigger-time-text", "no-ipp-end")

#: Damages to the study's layout rather than one file.
LAYOUT_DAMAGES = ["missing-phase0-file", "missing-phase1-file", "duplicate-slice", "duplicate-file-copy",
                  "empty-series-folder", "stray-files", "lax-only", "two-studies"]


class Workspace:
    """The clean cohort, weights and config fixtures the cases are made from."""

    def __init__(self, root: Path):
        self.root = root
        self.heart = root / "clean" / "heart"
        self.knee = root / "clean" / "knee"
        self.study = self.heart / "subject_0000" / "study"
        self.exam = self.knee / "subject_0000" / "study"
        self._acl_weights = root / "clean" / "acl-weights"
        self.filters: list[str] = []
        self.identifiers: list[str] = []
        self.baseline: dict = {}
        self.n_sax = 0

    def build(self) -> None:
        from PlaneSSLLib.phantoms import CohortOptions, write_cohort

        if not self.heart.exists():
            write_cohort(self.heart, CohortOptions("heart", subjects=3, seed=3, phases=2, matrix=48), workers=1)
        self.n_sax = len(self.sax_dirs())
        pydicom = _pydicom()
        ds = pydicom.dcmread(self.sax_file(), stop_before_pixels=True)
        self.identifiers = [str(ds.get(k, "")) for k in ("PatientName", "PatientID", "StudyInstanceUID",
                                                           "SeriesInstanceUID", "SOPInstanceUID")]
        self.identifiers = [i for i in self.identifiers if len(i) >= 6]

    @property
    def acl_weights(self) -> Path:
        """Tiny ACL weights and the knee exam they read (made on first use)."""
        from PlaneSSLLib.phantoms import CohortOptions, write_cohort

        if not self.knee.exists():
            write_cohort(self.knee, CohortOptions("knee", subjects=1, seed=3, matrix=48), workers=1)
        if not self._acl_weights.exists():
            _export_acl_weights(self._acl_weights)
        return self._acl_weights

    def wants(self, tag: str) -> bool:
        """Whether some ``--only`` filter can select a case of ``tag`` (its inputs are made only then)."""
        names = [f.split(" | ")[0].strip() for f in self.filters]
        return not self.filters or any(n in tag or tag in n for n in names)

    def sax_dirs(self, study: Path | None = None) -> list[Path]:
        study = study or self.study
        return sorted((d for d in study.iterdir() if d.name.startswith("sax_")), key=lambda d: int(d.name[4:]))

    def sax_file(self, study: Path | None = None, end: bool = False, phase: int = 0) -> Path:
        dirs = self.sax_dirs(study)
        folder = dirs[0] if end else dirs[len(dirs) // 2]
        return sorted(folder.glob("*.dcm"))[phase]

    def lax_file(self, study: Path | None = None) -> Path:
        return sorted(((study or self.study) / "2ch_2").glob("*.dcm"))[0]

    def copy_study(self, name: str) -> Path:
        target = self.root / "inputs" / name / "study"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(self.study, target)
        return target

    def copy_weights(self, source: Path, name: str) -> Path:
        target = self.root / "weights" / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        return target


def _export_acl_weights(out: Path) -> None:
    import torch

    from PlaneSSLLib.inference.manifest import ACL_LABELS, build_manifest
    from PlaneSSLLib.inference.weights import export_model
    from PlaneSSLLib.models import UNetConfig
    from PlaneSSLLib.models.exam_classifier import ExamClassifier, ExamClassifierConfig

    torch.manual_seed(0)
    encoder = UNetConfig(base_filters=4, levels=2, line_channels=0, location_head=False)
    config = ExamClassifierConfig(encoder=encoder, hidden=8, attention_hidden=4)
    manifest = build_manifest(config, "acl", views=["SAG", "COR", "AX"], label_names=list(ACL_LABELS),
                              decision={"threshold": 0.5, "positive": "torn"}, input_size_hw=(32, 32),
                              input_spacing_mm=4.0,
                              intensity_normalisation={"method": "minmax", "clip_percentiles": [0.5, 99.5]})
    export_model(ExamClassifier(config).eval(), out, json.loads(json.dumps(manifest)))


# ----------------------------------------------------------------------------------------------
# Case lists


def dicom_cases(ws: Workspace, quick: bool) -> list[Case]:
    cases: list[Case] = []
    damages = [d for d in DAMAGES if not quick or d.name in
               ("truncated-half", "no-ipp-end", "pixels-short", "spacing-1e-9", "deep-sequence", "syntax-jpeg2000")]
    for d in damages:
        if not ws.wants(f"dicom/{d.name}"):
            continue
        study = ws.copy_study(d.name)
        target = {"sax": ws.sax_file(study), "sax-end": ws.sax_file(study, end=True),
                  "lax": ws.lax_file(study)}[d.target]
        d.apply(target)
        on_sax = d.target != "lax"
        names = (target.name, target.parent.name)
        harmful = d.kind in ("unreadable", "geometry", "pixels")
        tag = f"dicom/{d.name}"
        cases.append(Case(tag, "inspect", ["inspect", str(study), "--json"], expect="any",
                          check=check_inspect(names if harmful else (), ws.identifiers), protect=[study]))
        out = ws.root / "out" / tag / "cache"
        cases.append(Case(tag, "prepare", ["prepare", str(study), "--out", str(out), "--size", "32",
                                           "--spacing", "6", "--json", "--quiet", "--jobs", "1"],
                          check=check_prepare(out, names if harmful else ()), names=names, protect=[study]))
        out = ws.root / "out" / tag / "seg"
        seg_expect = "refuse" if (on_sax and harmful) else "any"
        # damage to another file, or to a SAX header field that does not change the image or its place:
        # the segmentation must be the undamaged study's
        baseline = ws.baseline if not on_sax or d.kind in ("odd", "benign") else None
        cases.append(Case(tag, "predict seg", ["predict", "seg", str(study), "--weights", str(SAMPLE_SEG),
                                               "--out", str(out)],
                          expect=seg_expect, names=names, check=check_seg(out, ws.n_sax, baseline=baseline),
                          protect=[study], needs_baseline=baseline is not None))
        partner = ws.lax_file(study) if on_sax else ws.sax_file(study)
        cases.append(Case(tag, "lines", ["lines", str(target), str(partner), "--json"],
                          expect="refuse" if d.kind == "geometry" or d.name in HEADER_LOST else "any",
                          names=names, check=check_lines_json, protect=[study]))
        if d.name in PREDICT_LINES_DAMAGES and not quick:
            cases.append(Case(tag, "predict lines", ["predict", "lines", str(target), "--weights", str(SAMPLE_LINES),
                                                     "--json"],
                              expect="refuse" if d.kind in ("geometry", "pixels") else "any", names=names,
                              check=check_predict_lines, protect=[study]))
        if d.name in PLAN_DAMAGES and not quick:
            cases.append(Case(tag, "plan", ["plan", str(study), "--weights", str(SAMPLE_LINES), "--json"],
                              expect="any", names=names, check=check_plan_reports(names if on_sax and harmful else ()),
                              protect=[study]))
    return cases


def layout_cases(ws: Workspace, quick: bool) -> list[Case]:
    cases: list[Case] = []
    for name in (LAYOUT_DAMAGES if not quick else ["missing-phase0-file"]):
        if not ws.wants(f"layout/{name}"):
            continue
        study = ws.copy_study(name)
        names: tuple[str, ...] = ()
        seg_expect, seg_args = "any", []
        slices = ws.n_sax
        if name == "missing-phase0-file":
            gone = ws.sax_file(study)
            names = (gone.parent.name,)
            gone.unlink()
            seg_expect = "refuse"
        elif name == "missing-phase1-file":
            gone = ws.sax_file(study, phase=1)
            names = (gone.parent.name,)
            gone.unlink()
            seg_args = ["--phase", "1"]
            seg_expect = "refuse"
        elif name == "duplicate-slice":  # the same slice acquired again in a later series
            src = ws.sax_dirs(study)[3]
            dup = study / "sax_99"
            shutil.copytree(src, dup)
            for f in dup.glob("*.dcm"):
                pydicom = _pydicom()
                ds = pydicom.dcmread(f)
                ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".99"
                ds.SOPInstanceUID = ds.SOPInstanceUID + ".99"
                ds.SeriesNumber = 99
                ds.save_as(f, enforce_file_format=False)
        elif name == "duplicate-file-copy":  # the very same file twice
            src = ws.sax_file(study)
            shutil.copy2(src, src.with_name("copy-of-" + src.name))
        elif name == "empty-series-folder":
            (study / "sax_77").mkdir()
        elif name == "stray-files":
            (study / "notes.txt").write_text("scan notes\n")
            (study / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
            (study / "sax_5" / ".DS_Store").write_bytes(os.urandom(64))
        elif name == "lax-only":
            for d in ws.sax_dirs(study):
                shutil.rmtree(d)
            seg_expect, names = "refuse", ("SAX",)
        elif name == "two-studies":
            other = ws.heart / "subject_0001" / "study"
            shutil.copytree(other, study / "other")
            seg_expect = "any"
        tag = f"layout/{name}"
        cases.append(Case(tag, "inspect", ["inspect", str(study), "--json"], check=check_inspect((), ws.identifiers),
                          protect=[study]))
        out = ws.root / "out" / tag / "cache"
        cases.append(Case(tag, "prepare", ["prepare", str(study), "--out", str(out), "--size", "32", "--spacing", "6",
                                           "--json", "--quiet", "--jobs", "1"],
                          check=check_prepare(out), protect=[study]))
        out = ws.root / "out" / tag / "seg"
        cases.append(Case(tag, "predict seg", ["predict", "seg", str(study), "--weights", str(SAMPLE_SEG), "--out",
                                               str(out), *seg_args],
                          expect=seg_expect, names=names, check=check_seg(out, slices), protect=[study]))
        if name in ("duplicate-slice", "two-studies", "missing-phase0-file") and not quick:
            cases.append(Case(tag, "plan", ["plan", str(study), "--weights", str(SAMPLE_LINES), "--json"],
                              check=check_plan_reports(names), protect=[study]))
    return cases


def _weights_damages() -> list[tuple[str, str, Any]]:
    """(name, 'tensor'|'bytes'|'manifest'|'files', change). Tensor changes keep the checksum in step."""
    def nan(state):
        key = sorted(k for k, v in state.items() if v.dtype.kind == "f" and v.size > 1)[0]
        state[key] = state[key].copy()
        state[key].flat[0] = float("nan")

    def inf(state):
        key = sorted(k for k, v in state.items() if v.dtype.kind == "f" and v.size > 1)[-1]
        state[key] = state[key].copy()
        state[key].flat[-1] = float("inf")

    def shape(state):
        key = sorted(k for k, v in state.items() if v.ndim == 4 and v.shape[1] > 1)[0]
        state[key] = state[key][:, :1].copy()

    def missing(state):
        del state[sorted(state)[0]]

    def extra(state):
        import numpy as np
        state["stranger.weight"] = np.zeros(3, dtype=np.float32)

    def m(path, value):
        def change(manifest):
            node = manifest
            *parents, last = path.split(".")
            for p in parents:
                node = node[p]
            if value is KeyError:
                del node[last]
            else:
                node[last] = value
        return change

    return [
        ("nan-tensor", "tensor", nan),
        ("inf-tensor", "tensor", inf),
        ("wrong-shape", "tensor", shape),
        ("missing-tensor", "tensor", missing),
        ("extra-tensor", "tensor", extra),
        ("flipped-byte", "bytes", "flip"),
        ("truncated-weights", "bytes", "truncate"),
        ("header-length-huge", "bytes", "header"),
        ("levels-string", "manifest", m("architecture.config.levels", "4")),
        ("levels-float", "manifest", m("architecture.config.levels", 2.5)),
        ("levels-40", "manifest", m("architecture.config.levels", 40)),
        ("base-filters-2e20", "manifest", m("architecture.config.base_filters", 2 ** 20)),
        ("size-60000", "manifest", m("input.size_hw", [60000, 60000])),
        ("size-negative", "manifest", m("input.size_hw", [-96, 96])),
        ("spacing-zero", "manifest", m("input.spacing_mm", [0.0, 0.0])),
        ("spacing-nan", "manifest", m("input.spacing_mm", "NaN-literal")),
        ("spacing-1e-9", "manifest", m("input.spacing_mm", [1e-9, 1e-9])),
        ("clip-reversed", "manifest", m("intensity_normalisation.clip_percentiles", [99.5, 0.5])),
        ("clip-out-of-range", "manifest", m("intensity_normalisation.clip_percentiles", [-5, 150])),
        ("method-unknown", "manifest", m("intensity_normalisation.method", "magic")),
        ("task-foreign", "manifest", "foreign-task"),
        ("task-missing", "manifest", m("task", KeyError)),
        ("format-version-99", "manifest", m("format_version", 99)),
        ("model-id-fake", "manifest", m("model_id", "0123456789abcdef")),
        ("sha256-mismatch", "manifest", m("weights_sha256", "0" * 64)),
        ("channels-short", "manifest", m("channels", ["background"])),
        ("manifest-list", "files", "manifest-list"),
        ("manifest-not-json", "files", "manifest-not-json"),
        ("manifest-missing", "files", "manifest-missing"),
        ("weights-missing", "files", "weights-missing"),
        ("weights-is-dir", "files", "weights-is-dir"),
        ("zip-truncated", "files", "zip-truncated"),
        ("zip-slip", "files", "zip-slip"),
        ("path-is-file", "files", "path-is-file"),
    ]


def _damage_weights(folder: Path, kind: str, change: Any, foreign_task: str) -> Path:
    """Apply one damage to a weights folder copy; the weights path to pass (a folder, zip or file)."""
    from safetensors.numpy import load, save

    weights, manifest_path = folder / "model.safetensors", folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if kind == "tensor":
        state = dict(load(weights.read_bytes()))
        change(state)
        data = save(state)
        weights.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        if "weights_sha256" in manifest:
            manifest["weights_sha256"] = digest
        manifest["model_id"] = digest[:16]
        manifest_path.write_text(json.dumps(manifest))
    elif kind == "bytes":
        data = bytearray(weights.read_bytes())
        if change == "flip":
            data[len(data) - 40] ^= 0xFF
        elif change == "truncate":
            data = data[: len(data) // 2]
        elif change == "header":
            data[0:8] = struct.pack("<Q", 2 ** 60)
        weights.write_bytes(bytes(data))
    elif kind == "manifest":
        if change == "foreign-task":
            manifest["task"] = foreign_task
        else:
            change(manifest)
        text = json.dumps(manifest).replace('"NaN-literal"', "[NaN, NaN]")
        manifest_path.write_text(text)
    elif kind == "files":
        if change == "manifest-list":
            manifest_path.write_text("[1, 2, 3]")
        elif change == "manifest-not-json":
            manifest_path.write_bytes(b"\xff\xfe{not json")
        elif change == "manifest-missing":
            manifest_path.unlink()
        elif change == "weights-missing":
            weights.unlink()
        elif change == "weights-is-dir":
            weights.unlink()
            weights.mkdir()
        elif change == "zip-truncated":
            archive = folder.with_suffix(".zip")
            with zipfile.ZipFile(archive, "w") as z:
                z.write(weights, "model.safetensors")
                z.write(manifest_path, "manifest.json")
            archive.write_bytes(archive.read_bytes()[:-200])
            return archive
        elif change == "zip-slip":
            archive = folder.with_suffix(".zip")
            with zipfile.ZipFile(archive, "w") as z:
                z.write(weights, "../../escaped.safetensors")
                z.write(manifest_path, "manifest.json")
            return archive
        elif change == "path-is-file":
            return manifest_path
    return folder


#: The weights damages also tried on the line and ACL weights (every one is tried on the seg weights).
OTHER_TASK_DAMAGES = ("nan-tensor", "inf-tensor", "wrong-shape", "flipped-byte", "truncated-weights",
                      "header-length-huge", "levels-40", "size-60000", "spacing-nan", "clip-reversed",
                      "task-foreign", "sha256-mismatch", "manifest-not-json", "zip-slip")


def weights_cases(ws: Workspace, quick: bool) -> list[Case]:
    cases: list[Case] = []
    damages = _weights_damages()
    if quick:
        damages = [d for d in damages if d[0] in ("nan-tensor", "flipped-byte", "levels-string", "task-foreign")]
    study = ws.study
    targets = [("seg", SAMPLE_SEG, "lines"), ("lines", SAMPLE_LINES, "seg"), ("acl", None, "seg")]
    for name, kind, change in damages:
        for task, source, foreign in targets:
            if not ws.wants(f"weights/{task}/{name}"):
                continue
            source = source or ws.acl_weights
            if task != "seg" and name not in (("nan-tensor", "task-foreign") if quick else OTHER_TASK_DAMAGES):
                continue
            folder = ws.copy_weights(source, f"{task}-{name}")
            path = _damage_weights(folder, kind, change, foreign)
            protect = [path, study]
            tag = f"weights/{task}/{name}"
            names = ("manifest.json", "model.safetensors", path.name, folder.name)
            harmful = name not in ("extra-tensor",)
            expect = "refuse" if harmful else "any"
            if task == "seg":
                out = ws.root / "out" / tag
                cases.append(Case(tag, "predict seg", ["predict", "seg", str(study), "--weights", str(path),
                                                       "--out", str(out), "--no-dicom-seg"],
                                  expect=expect, names=names, check=check_seg(out, ws.n_sax), protect=protect))
            elif task == "lines":
                cases.append(Case(tag, "predict lines", ["predict", "lines", str(ws.sax_file()), "--weights",
                                                         str(path), "--json"],
                                  expect=expect, names=names, check=check_predict_lines, protect=protect))
                if name in ("nan-tensor", "flipped-byte", "task-foreign", "levels-40", "spacing-zero") and not quick:
                    cases.append(Case(tag, "plan", ["plan", str(study), "--weights", str(path), "--json"],
                                      expect=expect, names=names, check=check_plan, protect=protect))
            else:
                cases.append(Case(tag, "predict acl", ["predict", "acl", str(ws.exam), "--weights", str(path),
                                                       "--json"],
                                  expect=expect, names=names, check=check_acl, protect=protect))
    return cases


def _config_damages() -> list[tuple[str, str, str]]:
    """(name, YAML text appended/replacing, the key a refusal must name). ``{TINY}`` is the valid base."""
    return [
        ("lr-string", "optim: {lr: fast}", "optim.lr"),
        ("lr-nan", "optim: {lr: .nan}", "optim.lr"),
        ("lr-inf", "optim: {lr: .inf}", "optim.lr"),
        ("lr-negative", "optim: {lr: -1.0}", "optim.lr"),
        ("epochs-float", "optim: {epochs: 2.5}", "optim.epochs"),
        ("epochs-string", "optim: {epochs: '2'}", "optim.epochs"),
        ("batch-zero", "optim: {batch_size: 0}", "optim.batch_size"),
        ("image-size-huge", "data: {image_size: 1000000}", "data.image_size"),
        ("levels-40", "model: {levels: 40}", "model.levels"),
        ("base-filters-huge", "model: {base_filters: 1048576}", "model.base_filters"),
        ("sigma-negative", "data: {sigma_px: -2}", "data.sigma_px"),
        ("sigma-nan", "data: {sigma_px: .nan}", "data.sigma_px"),
        ("val-fraction-1.5", "data: {val_fraction: 1.5}", "data.val_fraction"),
        ("unknown-key", "optim: {learning_rate: 0.1}", "learning_rate"),
        ("unknown-section", "optimiser: {lr: 0.1}", "optimiser"),
        ("seed-huge", "runtime: {seed: 100000000000000000000000}", "runtime.seed"),
        ("lr-overflow", "optim: {lr: 1.0e+400}", "optim.lr"),
        ("section-wrong-type", "optim: [1, 2]", "optim"),
        ("device-unknown", "runtime: {device: tpu9}", "runtime.device"),
    ]


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def config_cases(ws: Workspace, quick: bool) -> list[Case]:
    import yaml

    cases: list[Case] = []
    cache = ws.root / "clean" / "cache"
    if not cache.exists():  # the pretraining cache of the phantom heart cohort (evaluate-pretext needs one)
        subprocess.run([sys.executable, "-m", "training_cli.main", "prepare", str(ws.heart), "--out", str(cache),
                        "--size", "32", "--spacing", "6", "--quiet", "--jobs", "1"], cwd=REPO, env=_env(), check=True,
                       capture_output=True)
    tiny = {
        "data": {"source": "cache", "cache": str(cache), "anatomy": "heart", "image_size": 32, "spacing_mm": 6.0,
                 "sigma_px": 2.0, "val_fraction": 0.34, "augment": False},
        "model": {"base_filters": 2, "levels": 2, "location_hidden": 4},
        "optim": {"epochs": 1, "batch_size": 2, "decay_every": 1},
        "runtime": {"seed": 3, "tensorboard": False, "plot": False, "progress": "log", "log_every": 5,
                    "device": "cpu"},
    }
    if not ws.wants("config/") and not ws.wants("finetune/"):
        return cases
    folder = ws.root / "configs"
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, text: str) -> Path:
        path = folder / f"{name}.yaml"
        path.write_text(text)
        return path

    base = write("valid", yaml.safe_dump(tiny))
    out = ws.root / "out" / "config" / "valid"
    cases.append(Case("config/valid", "pretrain", ["pretrain", "--config", str(base), "--out", str(out)],
                      expect="ok", check=check_training_run(out), protect=[base], timeout=240))
    # a batch larger than the data set is one step of every slice (said in train.log): sane, not refused
    path = write("batch-huge", yaml.safe_dump({**tiny, "optim": {**tiny["optim"], "batch_size": 10 ** 11}}))
    out = ws.root / "out" / "config" / "batch-huge"
    if not quick:
        cases.append(Case("config/batch-huge", "pretrain", ["pretrain", "--config", str(path), "--out", str(out)],
                          check=check_training_run(out), protect=[path]))
    damages = _config_damages()
    if quick:
        damages = [d for d in damages if d[0] in ("lr-nan", "levels-40", "unknown-key")]
    for name, text, key in damages:
        raw = yaml.safe_load(yaml.safe_dump(tiny))
        for section, values in yaml.safe_load(text).items():
            if isinstance(values, dict) and isinstance(raw.get(section), dict):
                raw[section].update(values)
            else:
                raw[section] = values
        path = write(name, yaml.safe_dump(raw))  # .nan/.inf come back in YAML's own spelling
        out = ws.root / "out" / "config" / name
        cases.append(Case(f"config/{name}", "pretrain", ["pretrain", "--config", str(path), "--out", str(out)],
                          expect="refuse", names=(key,), check=check_training_run(out), protect=[path]))
    files = [
        ("alias-bomb", _alias_bomb() + yaml.safe_dump(tiny), ("alias",)),
        ("yaml-syntax", "optim: {lr: 0.1\nmodel: [", ("yaml", "YAML", "line")),
        ("config-list", "- 1\n- 2\n", ("mapping",)),
        ("config-empty", "", ("empty",)),
        ("config-binary", "\x00\x01\x02\xff" * 10, ()),
    ]
    if quick:
        files = files[:1]
    for name, text, keys in files:
        path = folder / f"{name}.yaml"
        path.write_bytes(text.encode("utf-8", "surrogateescape") if name != "config-binary" else
                         bytes([0, 1, 2, 255]) * 10)
        out = ws.root / "out" / "config" / name
        cases.append(Case(f"config/{name}", "pretrain", ["pretrain", "--config", str(path), "--out", str(out)],
                          expect="refuse", names=(path.name, *keys), check=check_training_run(out), protect=[path]))
    if not quick:
        for name, sets, key in [("set-nan", ["optim.lr=.nan"], "optim.lr"), ("set-unknown", ["optim.lrr=1"], "lrr"),
                                ("set-no-equals", ["optim.lr"], "optim.lr"), ("set-type", ["model.levels=[1]"],
                                                                               "model.levels")]:
            out = ws.root / "out" / "config" / name
            cases.append(Case(f"config/{name}", "pretrain", ["pretrain", "--config", str(base), "--out", str(out),
                                                             "--set", *sets],
                              expect="refuse", names=(key,), check=check_training_run(out), protect=[base]))
    if not quick and ws.wants("finetune/"):  # fine-tuning on the phantom cohort, tiny budget, then bad settings
        seg = {
            "data": {"format": "phantom", "root": str(ws.heart), "cache": str(ws.root / "seg_cache"),
                     "spacing_mm": 6.0, "image_size": 32, "val_fraction": 0.34, "test_fraction": 0.34},
            "model": {"base_filters": 2, "levels": 2},
            "optim": {"epochs": 1, "batch_size": 2, "steps_per_epoch": 2},
            "runtime": {"device": "cpu", "seed": 0, "tensorboard": False, "plot": False, "progress": "log"},
        }
        seg_base = write("finetune-valid", yaml.safe_dump(seg))
        out = ws.root / "out" / "finetune" / "valid"
        cases.append(Case("finetune/valid", "finetune seg", ["finetune", "seg", "--config", str(seg_base), "--out",
                                                             str(out)],
                          expect="ok", check=check_training_run(out), protect=[seg_base, ws.heart], timeout=240))
        for name, sets, key, expect in [
            ("labeled-0", ["--labeled-subjects", "0"], "labeled", "refuse"),
            ("labeled-99", ["--labeled-subjects", "99"], "labeled", "any"),
            ("init-nan-weights", ["--init", str(ws.root / "weights" / "seg-nan-tensor")], "nan", "refuse"),
            ("init-foreign", ["--init", str(ws.acl_weights)], "acl", "refuse"),
            ("data-missing", ["--data", f"phantom:{ws.root / 'nowhere'}"], "nowhere", "refuse"),
            ("data-wrong-layout", ["--data", f"acdc:{ws.heart}"], "acdc", "refuse"),
            ("test-fraction-1", ["--set", "data.test_fraction=1.0"], "test_fraction", "refuse"),
        ]:
            out = ws.root / "out" / "finetune" / name
            cases.append(Case(f"finetune/{name}", "finetune seg", ["finetune", "seg", "--config", str(seg_base),
                                                                   "--out", str(out), *sets],
                              expect=expect, names=(key,), check=check_training_run(out),
                              protect=[seg_base, ws.heart], timeout=240))
    return cases


def output_cases(ws: Workspace, quick: bool) -> list[Case]:
    cases: list[Case] = []
    if not any(ws.wants(t) for t in ("output/", "evaluate-pretext/")):
        return cases
    folder = ws.root / "outputs"
    folder.mkdir(parents=True, exist_ok=True)
    blocker = folder / "a-file"
    blocker.write_text("keep me\n")
    inside = blocker / "sub"
    for command, argv in [
        ("predict seg", ["predict", "seg", str(ws.study), "--weights", str(SAMPLE_SEG), "--out", "{OUT}"]),
        ("prepare", ["prepare", str(ws.study), "--out", "{OUT}", "--size", "32", "--spacing", "6", "--quiet"]),
        ("plan", ["plan", str(ws.study), "--weights", str(SAMPLE_LINES), "--out", "{OUT}"]),
        ("phantom", ["phantom", "heart", "--subjects", "1", "--matrix", "32", "--phases", "2", "--out", "{OUT}",
                     "--quiet"]),
    ]:
        if quick and command not in ("predict seg",):
            continue
        for label, target in (("out-is-file", blocker), ("out-below-file", inside)):
            cases.append(Case(f"output/{label}", command, [a.replace("{OUT}", str(target)) for a in argv],
                              expect="refuse", names=(str(blocker),), protect=[blocker, ws.study]))
    if quick:
        return cases
    # an unwritable output folder: read-only for a user; root writes anywhere, so /sys (EPERM) stands in
    if os.geteuid() != 0:
        locked = folder / "read-only"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        unwritable = locked / "out"
    else:
        unwritable = Path("/sys/planessl-campaign/out")
    if unwritable.parent.exists() or os.geteuid() == 0 and Path("/sys").is_dir():
        for command, argv in [
            ("predict seg", ["predict", "seg", str(ws.study), "--weights", str(SAMPLE_SEG), "--out", str(unwritable)]),
            ("prepare", ["prepare", str(ws.study), "--out", str(unwritable), "--size", "32", "--spacing", "6"]),
            ("plan", ["plan", str(ws.study), "--weights", str(SAMPLE_LINES), "--out", str(unwritable)]),
            ("pretrain", ["pretrain", "--config", str(ws.root / "configs" / "valid.yaml"), "--out", str(unwritable)]),
        ]:
            cases.append(Case("output/unwritable", command, argv, expect="refuse",
                              names=(str(unwritable.parent), str(unwritable)), protect=[ws.study]))
    # an existing output folder holding the user's other files: they must survive
    keep = folder / "existing"
    keep.mkdir(exist_ok=True)
    (keep / "notes.txt").write_text("the user's notes\n")
    cases.append(Case("output/existing-folder", "predict seg", ["predict", "seg", str(ws.study), "--weights",
                                                                str(SAMPLE_SEG), "--out", str(keep)],
                      expect="ok", check=check_seg(keep, ws.n_sax), protect=[keep / "notes.txt", ws.study]))
    # a non-empty folder that is not a cohort must not be written over without --force
    cases.append(Case("output/phantom-into-study", "phantom", ["phantom", "heart", "--subjects", "1", "--matrix", "32",
                                                               "--phases", "2", "--out", str(ws.study), "--quiet"],
                      expect="refuse", names=(str(ws.study),), protect=[ws.study]))
    # prepare writing its cache into the data folder itself
    data_copy = ws.copy_study("prepare-into-data")
    cases.append(Case("output/prepare-into-data", "prepare", ["prepare", str(data_copy), "--out", str(data_copy),
                                                              "--size", "32", "--spacing", "6", "--json", "--quiet"],
                      check=check_prepare(data_copy), names=(str(data_copy),),
                      protect=[*sorted(data_copy.rglob("*.dcm"))]))
    # pretrain into a finished run's folder without --resume: the finished weights must not be replaced silently
    run = ws.root / "out" / "config" / "valid"
    cases.append(Case("output/pretrain-over-finished-run", "pretrain",
                      ["pretrain", "--config", str(ws.root / "configs" / "valid.yaml"), "--out", str(run)],
                      expect="any", names=(str(run),), check=check_training_run(run),
                      protect=[run / "model"], timeout=240))
    # evaluate-pretext on the finished run and on damaged copies of it
    out = run / "pretext_eval"
    cases.append(Case("evaluate-pretext/valid", "evaluate-pretext", ["evaluate-pretext", "--run", str(run), "--json",
                                                                     "--overlays", "1", "--no-baseline"],
                      expect="ok", check=check_pretext_eval(out), protect=[run / "model"], timeout=240))
    for name in ("no-config", "config-garbage", "no-model", "nan-model", "run-missing"):
        damaged = ws.root / "runs" / name
        cases.append(Case(f"evaluate-pretext/{name}", "evaluate-pretext",
                          ["evaluate-pretext", "--run", str(damaged), "--json", "--overlays", "0", "--no-baseline"],
                          expect="refuse", names=(str(damaged), "config.yaml", "model", "nan", "NaN"),
                          check=check_pretext_eval(damaged / "pretext_eval"), timeout=240))
    return cases


def prepare_damaged_runs(ws: Workspace) -> None:
    """Damaged copies of the finished tiny pretraining run (made after it ran)."""
    run = ws.root / "out" / "config" / "valid"
    if not (run / "model").is_dir():
        return
    for name in ("no-config", "config-garbage", "no-model", "nan-model"):
        damaged = ws.root / "runs" / name
        if damaged.exists():
            shutil.rmtree(damaged)
        shutil.copytree(run, damaged, ignore=shutil.ignore_patterns("pretext_eval", "tensorboard"))
        if name == "no-config":
            (damaged / "config.yaml").unlink()
        elif name == "config-garbage":
            (damaged / "config.yaml").write_text("model: {levels: [oops\n")
        elif name == "no-model":
            shutil.rmtree(damaged / "model")
        elif name == "nan-model":
            def nan(state):
                key = sorted(k for k, v in state.items() if v.dtype.kind == "f" and v.size > 1)[0]
                state[key] = state[key].copy()
                state[key].flat[0] = float("nan")
            _damage_weights(damaged / "model", "tensor", nan, "seg")


# ----------------------------------------------------------------------------------------------


def _baseline(ws: Workspace) -> None:
    """The undamaged study's segmentation volumes (damage to other files must not change them)."""
    out = ws.root / "out" / "baseline-seg"
    case = Case("baseline", "predict seg", ["predict", "seg", str(ws.study), "--weights", str(SAMPLE_SEG), "--out",
                                            str(out), "--no-dicom-seg"], expect="ok", check=check_seg(out, ws.n_sax))
    result = run_case(case)
    if result.outcome != "ok":
        raise SystemExit(f"campaign: the undamaged study does not segment: {result.outcome} {result.detail}\n"
                         f"{result.stderr[-2000:]}")
    ws.baseline.update({p["phase"]: p["volume_ml"] for p in json.loads(result.stdout)["phases"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="work folder (inputs, outputs, campaign.csv)")
    parser.add_argument("--quick", action="store_true", help="a few dozen cases (< 2 minutes)")
    parser.add_argument("--only", action="append", default=[],
                        help="run the cases whose 'NAME | COMMAND' holds this text (repeat)")
    parser.add_argument("--command", action="append", default=[], help="run only this command (repeat)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run (default: per case)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    try:
        os.nice(10)
    except OSError:
        pass
    started = time.monotonic()
    ws = Workspace(args.out.resolve())
    ws.root.mkdir(parents=True, exist_ok=True)
    ws.filters = list(args.only)
    for name in ("inputs", "weights", "out", "runs", "outputs", "configs"):
        shutil.rmtree(ws.root / name, ignore_errors=True)
    ws.build()
    cases = (dicom_cases(ws, args.quick) + layout_cases(ws, args.quick) + weights_cases(ws, args.quick)
             + config_cases(ws, args.quick) + output_cases(ws, args.quick))
    if args.only:
        cases = [c for c in cases if any(o in f"{c.name} | {c.command}" for o in args.only)]
    if args.command:
        cases = [c for c in cases if c.command in args.command]
    if args.timeout:
        for c in cases:
            c.timeout = args.timeout
    if args.list:
        for c in cases:
            print(f"{c.name:45s} {c.command:16s} expect={c.expect}")
        print(f"{len(cases)} cases")
        return 0
    if any(c.needs_baseline for c in cases):
        _baseline(ws)
    results: list[Outcome] = []
    damaged_runs_made = False
    for i, case in enumerate(cases, 1):
        if case.command == "evaluate-pretext" and not damaged_runs_made:
            prepare_damaged_runs(ws)
            damaged_runs_made = True
        result = run_case(case)
        results.append(result)
        mark = "" if result.outcome in ("ok", "refusal") else f"  <-- {result.detail}"
        print(f"[{i:3d}/{len(cases)}] {result.outcome:13s} {result.seconds:5.1f}s {case.name} | {case.command}{mark}",
              flush=True)
    csv_path = ws.root / "campaign.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "command", "expect", "outcome", "exit", "seconds", "detail", "argv"])
        for r in results:
            writer.writerow([r.case.name, r.case.command, r.case.expect, r.outcome, r.rc, f"{r.seconds:.1f}",
                             r.detail, " ".join(r.case.argv)])
    counts = Counter(r.outcome for r in results)
    print(f"\n{len(results)} runs in {time.monotonic() - started:.0f} s; CSV: {csv_path}")
    print("  ".join(f"{c}: {counts.get(c, 0)}" for c in CLASSES))
    flagged = [r for r in results if r.outcome not in ("ok", "refusal")]
    if flagged:
        print(f"\n{'outcome':13s} {'case':40s} {'command':16s} detail")
        for r in flagged:
            print(f"{r.outcome:13s} {r.case.name:40s} {r.case.command:16s} {r.detail[:160]}")
    return 1 if any(counts.get(c, 0) for c in BAD_CLASSES) else 0


if __name__ == "__main__":
    sys.exit(main())
