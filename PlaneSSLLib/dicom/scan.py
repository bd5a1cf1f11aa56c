"""Scanning a folder tree for DICOM images: headers only, then studies, series, positions, phases.

``scan_tree(root)`` walks ``root`` (or takes a single file), reads every file's header once with
pydicom (``stop_before_pixels``, never decoding pixels), and hands the per-file summaries to
``dicom.series`` for grouping. Nothing read here is kept in the clear if it identifies a patient
or an object: studies, patients, series and instances are known by ``hash_identifier``.

What is *not* an image is noted and skipped (``Problem.kind == "ignored"``): non-DICOM files,
empty and hidden files, and DICOM objects without pixel data (structured reports, presentation
states, RT structure sets, DICOMDIR...), named by their SOP class. What is broken is skipped and
named (``kind == "error"``): unreadable headers, image objects without pixel data, and pixel data
cut short (checked cheaply from the Pixel Data element's offset and length against the file's
size, or by walking the fragment headers of encapsulated pixel data). No exception escapes for
bad data: every problem names its file.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..geometry.planes import ImagePlane
from .containers import MANIFEST_NAMES, manifest_filenames
from .planes import GeometryError, plane_from_dataset
from .records import FileHeader, FrameHeader, Problem, ScanResult, hash_identifier, patient_key
from .series import build_studies

__all__ = [
    "ProgressCallback",
    "list_files",
    "read_file_header",
    "read_header_bytes",
    "read_headers",
    "read_zip_headers",
    "scan_tree",
    "sop_class_name",
]

#: ``progress(done, total)``: called after each file's header is read (``total`` files in all).
ProgressCallback = Callable[[int, int], None]

#: Headers larger than this are read but not kept in memory (e.g. vendor private blobs).
_DEFER_SIZE = 16384

#: The only top-level attributes the scan keeps (pydicom skips the others without parsing
#: them); the functional group sequences carry enhanced multi-frame geometry and timing.
_HEADER_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "Modality",
    "SeriesDescription", "SeriesNumber", "InstanceNumber", "TriggerTime", "TemporalPositionIdentifier",
    "SliceThickness", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
    "BitsAllocated", "SamplesPerPixel", "NumberOfFrames", "Laterality", "ImageLaterality",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
)
_HEADER_TAGS = [int(tag_for_keyword(k)) for k in _HEADER_KEYWORDS]  # type: ignore[arg-type]
_BINARY_VRS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}

#: Below this many files a process pool costs more than it saves.
_MIN_FILES_PER_WORKER = 200

_PIXEL_DATA_TAGS = (0x7FE00010,)
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_VR_WITH_32BIT_LENGTH = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


# ----------------------------------------------------------------------------- walking the tree
def list_files(root: Path) -> tuple[list[Path], list[Problem]]:
    """Every regular file under ``root`` (or ``root`` itself), sorted; hidden ones as problems.

    Hidden directories (``.git``, ``.cache``...) are not entered; hidden files are noted as
    ignored; a folder that cannot be listed is an "error" problem naming it.
    Symbolic links to files are followed, to directories not (no loops).
    """
    root = Path(root)
    if root.is_file():
        return [root], []
    files: list[Path] = []
    hidden: list[Problem] = []

    def unreadable(exc: OSError) -> None:  # os.walk would skip such a folder without a word
        folder = Path(exc.filename) if exc.filename is not None else root
        hidden.append(Problem(folder, "error", f"unreadable folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath)
        for name in sorted(filenames):
            path = base / name
            if name.startswith("."):
                hidden.append(Problem(path, "ignored", "hidden file"))
            elif path.is_file():
                files.append(path)
    return files, hidden


# ----------------------------------------------------------------------------- reading one file
@functools.lru_cache(maxsize=256)
def sop_class_name(uid: str) -> str:
    """A SOP class's name from the DICOM dictionary, or the UID itself when unknown."""
    name = UID(uid).name if uid else ""
    return name if name and name != uid else (uid or "unknown SOP class")


def read_file_header(path: Path) -> FileHeader | Problem:
    """Read one file's header; a Problem (naming ``path``) when it is no usable DICOM image.

    Never raises for bad data: any failure of pydicom on the file becomes an "error" Problem.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size == 0:
                return Problem(path, "ignored", "empty file")
            return _header_from(path, fp, size)
    except OSError as exc:
        return Problem(path, "error", f"cannot read file: {exc.strerror or _clean(exc)}")


def read_header_bytes(path: Path, data: bytes) -> FileHeader | Problem:
    """``read_file_header`` of an in-memory file (a zip member); ``path`` names it in the results."""
    if not data:
        return Problem(path, "ignored", "empty file")
    return _header_from(Path(path), io.BytesIO(data), len(data))


def _header_from(path: Path, fp: BinaryIO, size: int) -> FileHeader | Problem:
    try:
        fast = _fast_header(path, fp, size)
        if fast is not None:
            return fast
        fp.seek(0)
        return _pydicom_header(path, fp, size)
    except OSError as exc:
        return Problem(path, "error", f"cannot read file: {exc.strerror or _clean(exc)}")


def _pydicom_header(path: Path, fp: BinaryIO, size: int) -> FileHeader | Problem:
    """``_header_from`` through pydicom: every file the fast path does not take."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd values are pydicom's warnings, not our problems
            parsed = _read_dataset_header(fp, size)
            if parsed is None:
                if _cut_in_preamble(fp, size):
                    return Problem(path, "error", f"DICOM file cut short in its preamble ({size} bytes)")
                return Problem(path, "ignored", "not a DICOM file")
            return _summarise(path, fp, parsed, size)
    except (InvalidDicomError, EOFError, zlib.error) as exc:
        return Problem(path, "error", f"unreadable DICOM header: {_clean(exc)}")
    except OSError as exc:
        return Problem(path, "error", f"cannot read file: {exc.strerror or _clean(exc)}")
    except Exception as exc:  # noqa: BLE001 - bad data must never end the scan with a traceback
        return Problem(path, "error", f"unreadable DICOM file ({type(exc).__name__}: {_clean(exc)})")


def read_zip_headers(archive: Path) -> list[FileHeader | Problem]:
    """The headers of every member of a zip archive (read in memory, never unpacked to disk).

    Members are named ``ARCHIVE/MEMBER`` (``dicom.containers``). A UK Biobank manifest
    (``manifest.csv`` or ``manifest.cvs``) is noted as ignored and its file list checked: a member
    it lists but the archive lacks is an error naming both. An archive that cannot be opened, or
    a member that cannot be inflated, is one error naming it; the other members are still read.
    """
    archive = Path(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return [Problem(archive, "error", f"unreadable zip archive ({_clean(exc)})")]
    out: list[FileHeader | Problem] = []
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        names = {i.filename for i in infos}
        for info in infos:
            member = archive / info.filename
            if info.filename.rsplit("/", 1)[-1].lower() in MANIFEST_NAMES:
                out.append(Problem(member, "ignored", "zip manifest"))
                try:
                    listed = manifest_filenames(zf.read(info))
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as exc:
                    out.append(Problem(member, "error", f"damaged zip member ({_clean(exc)})"))
                    continue
                base = info.filename.rpartition("/")[0]
                for name in listed:
                    full = f"{base}/{name}" if base else name
                    if full not in names:
                        out.append(Problem(archive / full, "error", f"listed in {info.filename} but missing from "
                                                                    "the archive"))
                continue
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as exc:
                out.append(Problem(member, "error", f"damaged zip member ({_clean(exc)})"))
                continue
            out.append(read_header_bytes(member, data))
    return out


def _read_any(path: Path) -> list[FileHeader | Problem]:
    """One file's header, or the headers of a zip archive's members."""
    if path.suffix.lower() == ".zip":
        return read_zip_headers(path)
    return [read_file_header(path)]


# ----------------------------------------------------------------------------- the fast path
#: Bytes read at first by the fast path; a header that needs more goes to pydicom.
_FAST_READ = 65536
_ITEM_DELIMITER = 0xFFFEE00D
_ENHANCED_TAGS = frozenset(int(tag_for_keyword(k)) for k in (  # type: ignore[arg-type]
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"))
_KEEP_TAGS = frozenset(_HEADER_TAGS) - _ENHANCED_TAGS
_KEEP_VR = {tag: dictionary_VR(tag) for tag in _KEEP_TAGS}
_SERIES_DESCRIPTION = int(tag_for_keyword("SeriesDescription"))  # type: ignore[arg-type]
_TS_MAIN = {ImplicitVRLittleEndian: True, "1.2.840.10008.1.2.1": False}  # transfer syntax: implicit VR


class _RawElement:
    """An element's undecoded value, as pydicom's raw data elements hold it."""

    __slots__ = ("VR", "value")
    is_little_endian = True

    def __init__(self, value: bytes, vr: str) -> None:
        self.value, self.VR = value, vr


class _RawHeader:
    """The kept elements of a header read by ``_fast_header``: the part of pydicom's ``Dataset``
    interface that ``_file_header`` uses (``get_item``, ``in``, ``len``, ``get`` of the description)."""

    def __init__(self, elements: dict[int, _RawElement], file_meta: _RawHeader | None, description: str) -> None:
        self._elements, self.file_meta, self._description = elements, file_meta, description

    def get_item(self, tag: int) -> _RawElement | None:
        return self._elements.get(tag)

    def __contains__(self, keyword: str) -> bool:
        return (_TAGS.get(keyword) or _tag(keyword)) in self._elements

    def __len__(self) -> int:
        return len(self._elements)

    def get(self, keyword: str, default: object = None) -> object:
        if keyword != "SeriesDescription":
            raise KeyError(keyword)  # the fast path hands on nothing else
        return self._description if _SERIES_DESCRIPTION in self._elements else default


def _fast_header(path: Path, fp: BinaryIO, size: int) -> FileHeader | None:
    """The FileHeader of a plain, whole image file read with ``struct`` alone; None: ask pydicom.

    Takes only the common case: preamble and "DICM", explicit or implicit VR little endian data
    set (native or encapsulated pixel data), a classic image (no functional groups), a header
    within the first ``_FAST_READ`` bytes, an ASCII series description, an image SOP class and
    Pixel Data that is whole. Anything else (a truncated file, an odd encoding, a non-image...)
    returns None and goes to the pydicom path, which names the problem; where both apply they
    give the same FileHeader (``Testing/test_dicom_scan_fast.py``).
    """
    try:
        return _fast_header_unchecked(path, fp, size)
    except Exception:  # noqa: BLE001 - whatever the fast path cannot take, pydicom reads and judges
        return None


def _fast_header_unchecked(path: Path, fp: BinaryIO, size: int) -> FileHeader | None:
    buf = fp.read(_FAST_READ)
    n = len(buf)
    if n < 144 or buf[128:132] != b"DICM":
        return None
    unpack = struct.unpack_from
    pos, meta = 132, {}
    while pos + 8 <= n:
        group, elem = unpack("<HH", buf, pos)
        if group != 0x0002:
            break
        vr = buf[pos + 4:pos + 6]
        if vr in _VR_WITH_32BIT_LENGTH:
            length, start = unpack("<L", buf, pos + 8)[0], pos + 12
        else:
            length, start = unpack("<H", buf, pos + 6)[0], pos + 8
        if length == 0xFFFFFFFF or start + length > n:
            return None
        meta[group << 16 | elem] = _RawElement(buf[start:start + length], vr.decode("ascii"))
        pos = start + length
    file_meta = _RawHeader(meta, None, "")
    implicit = _TS_MAIN.get(_text(file_meta, "TransferSyntaxUID"))
    if implicit is None:
        ts = _text(file_meta, "TransferSyntaxUID")
        if not ts or _encoding(ts) != (True, False) or ts == DeflatedExplicitVRLittleEndian:
            return None
        implicit = False  # encapsulated (compressed) syntaxes: explicit VR little endian
    elements: dict[int, _RawElement] = {}
    while True:
        if pos + 12 > n:
            return None
        group, elem = unpack("<HH", buf, pos)
        tag = group << 16 | elem
        if tag >= 0x7FE00008:
            if tag != 0x7FE00010:
                return None
            break
        if implicit:
            vr = b""
            length, start = unpack("<L", buf, pos + 4)[0], pos + 8
        else:
            vr = buf[pos + 4:pos + 6]
            if vr in _VR_WITH_32BIT_LENGTH:
                length, start = unpack("<L", buf, pos + 8)[0], pos + 12
            else:
                length, start = unpack("<H", buf, pos + 6)[0], pos + 8
        if tag in _ENHANCED_TAGS:
            return None
        if length == 0xFFFFFFFF:
            if tag in _KEEP_TAGS or vr == b"UN":
                return None
            end = _skip_sequence(buf, start, implicit)
            if end is None:
                return None
            pos = end
            continue
        end = start + length
        if end > size:
            return None
        if tag in _KEEP_TAGS:
            if end > n:
                return None
            vr_text = _KEEP_VR[tag] if implicit else vr.decode("ascii")
            if vr_text != _KEEP_VR[tag]:
                return None  # (UN or a wrong VR: pydicom's conversions apply)
            elements[tag] = _RawElement(buf[start:end], vr_text)
        pos = end
    pixel_pos = pos
    description = ""
    raw = elements.get(_SERIES_DESCRIPTION)
    if raw is not None:
        if not raw.value.isascii() or b"\\" in raw.value:
            return None
        description = raw.value.decode("ascii").rstrip("\0 ")
    ds = _RawHeader(elements, file_meta, description)
    sop_class = _text(ds, "SOPClassUID")
    if not sop_class or not _is_image(sop_class, ds):  # type: ignore[arg-type]
        return None
    if _check_pixel_data(fp, ds, pixel_pos, size) is not None:  # type: ignore[arg-type]
        return None
    return _file_header(path, ds, sop_class)  # type: ignore[arg-type]


def _skip_sequence(buf: bytes, pos: int, implicit: bool) -> int | None:
    """Offset after the undefined-length sequence whose items start at ``pos``; None if not in ``buf``."""
    n = len(buf)
    while pos + 8 <= n:
        group, elem, length = struct.unpack_from("<HHL", buf, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQUENCE_DELIMITER:
            return pos
        if tag != _ITEM:
            return None
        if length != 0xFFFFFFFF:
            pos += length
            continue
        end = _skip_item(buf, pos, implicit)
        if end is None:
            return None
        pos = end
    return None


def _skip_item(buf: bytes, pos: int, implicit: bool) -> int | None:
    """Offset after the undefined-length item whose elements start at ``pos``; None if not in ``buf``."""
    n = len(buf)
    while pos + 8 <= n:
        group, elem = struct.unpack_from("<HH", buf, pos)
        if (group << 16 | elem) == _ITEM_DELIMITER:
            return pos + 8
        if implicit:
            vr = b""
            length, start = struct.unpack_from("<L", buf, pos + 4)[0], pos + 8
        else:
            vr = buf[pos + 4:pos + 6]
            if vr in _VR_WITH_32BIT_LENGTH:
                if pos + 12 > n:
                    return None
                length, start = struct.unpack_from("<L", buf, pos + 8)[0], pos + 12
            else:
                length, start = struct.unpack_from("<H", buf, pos + 6)[0], pos + 8
        if length == 0xFFFFFFFF:
            if vr == b"UN":
                return None
            end = _skip_sequence(buf, start, implicit)
            if end is None:
                return None
            pos = end
        else:
            pos = start + length
    return None


@dataclass
class _Parsed:
    """A header parsed up to Pixel Data."""

    ds: Dataset
    pixel_pos: int | None  # byte offset of the Pixel Data element; None: absent or not locatable
    overran: bool  # a skipped element claimed bytes past the end of the file


def _read_dataset_header(fp: BinaryIO, size: int) -> _Parsed | None:
    """Parse the header up to Pixel Data, keeping only ``_HEADER_TAGS``; None if not DICOM.

    The Pixel Data offset is not located for the deflated syntax (its data set is inflated in
    memory). Files without the 128-byte preamble are read when they start like a DICOM data set
    (group 0002 or 0008).
    """
    options = {"stop_before_pixels": True, "defer_size": _DEFER_SIZE, "specific_tags": _HEADER_TAGS}
    try:
        ds = pydicom.dcmread(fp, force=False, **options)
    except InvalidDicomError:
        fp.seek(0)
        if not _looks_like_raw_dataset(fp.read(8)):
            return None
        fp.seek(0)
        ds = pydicom.dcmread(fp, force=True, **options)
    pos = fp.tell()  # pydicom seeks over skipped values, so past the end when one is cut short
    head = fp.read(4)
    if len(head) < 4 or _transfer_syntax(ds) == DeflatedExplicitVRLittleEndian:
        return _Parsed(ds, None, pos > size)
    group, elem = struct.unpack("<HH" if _is_little_endian(ds) else ">HH", head)
    return _Parsed(ds, pos if (group << 16 | elem) in _PIXEL_DATA_TAGS else None, False)


def _cut_in_preamble(fp: BinaryIO, size: int) -> bool:
    """True for a file shorter than preamble + "DICM" that looks like the start of one."""
    if size >= 132:
        return False
    fp.seek(0)
    head = fp.read(132)
    return head[:128].strip(b"\0") == b"" and b"DICM".startswith(head[128:])


def _looks_like_raw_dataset(head: bytes) -> bool:
    """True when ``head`` starts like a little-endian data set without preamble."""
    if len(head) < 8:
        return False
    group, elem = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or elem > 0x0100:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    return struct.unpack("<L", head[4:8])[0] < 1024  # implicit VR: a short first value


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    return ts or ImplicitVRLittleEndian


def _is_little_endian(ds: Dataset) -> bool:
    return _encoding(_transfer_syntax(ds))[0]


@functools.lru_cache(maxsize=64)
def _encoding(transfer_syntax: str) -> tuple[bool, bool]:
    """(little endian, implicit VR) of a transfer syntax; unknown ones as implicit little endian."""
    ts = UID(transfer_syntax)
    if not ts.is_transfer_syntax:
        return True, True
    return ts.is_little_endian, ts.is_implicit_VR


def _summarise(path: Path, fp: BinaryIO, parsed: _Parsed, size: int) -> FileHeader | Problem:
    """Turn a parsed header into a FileHeader, or a Problem when it is not a usable image."""
    ds, pixel_pos = parsed.ds, parsed.pixel_pos
    meta_end = _file_meta_end(fp, ds)
    if not len(ds) and (meta_end is None or size <= meta_end):
        return Problem(path, "error", f"file truncated in or right after its file meta information ({size} bytes)")
    if parsed.overran or pixel_pos is None and _header_cut_short(ds, size):
        return Problem(path, "error", f"file truncated inside the DICOM header ({size} bytes)")
    meta = getattr(ds, "file_meta", None)
    sop_class = _text(ds, "SOPClassUID") or (str(meta.get("MediaStorageSOPClassUID", "")) if meta else "")
    if not _is_image(sop_class, ds):
        return Problem(path, "ignored", f"non-image DICOM ({sop_class_name(sop_class)})")
    if pixel_pos is None and _transfer_syntax(ds) != DeflatedExplicitVRLittleEndian:
        # (a deflated data set is inflated whole; truncation shows as a zlib error)
        return Problem(path, "error", f"{sop_class_name(sop_class)} without Pixel Data (file truncated?)")
    if pixel_pos is not None:
        problem = _check_pixel_data(fp, ds, pixel_pos, size)
        if problem:
            return Problem(path, "error", problem)
    return _file_header(path, ds, sop_class)


def _file_meta_end(fp: BinaryIO, ds: Dataset) -> int | None:
    """Byte offset where the file meta information ends (from its group length), or None."""
    meta = getattr(ds, "file_meta", None)
    length = _int(meta, "FileMetaInformationGroupLength") if meta is not None else None
    if length is None:
        return None
    fp.seek(128)
    start = 132 if fp.read(4) == b"DICM" else 0
    return start + 12 + length


def _header_cut_short(ds: Dataset, size: int) -> bool:
    """True when the data set's last element claims bytes past the file's end."""
    if _transfer_syntax(ds) == DeflatedExplicitVRLittleEndian or not len(ds):
        return False  # data set offsets would refer to the inflated stream
    last = ds.get_item(max(ds.keys()))
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    return tell is not None and length is not None and length != 0xFFFFFFFF and tell + length > size


def _is_image(sop_class: str, ds: Dataset) -> bool:
    """Image SOP classes by name ("... Image Storage"); unknown (private) classes by Rows."""
    name = sop_class_name(sop_class)
    if sop_class and name != sop_class:
        return "Image Storage" in name
    return "Rows" in ds


def _file_header(path: Path, ds: Dataset, sop_class: str) -> FileHeader:
    n_frames = max(1, _int(ds, "NumberOfFrames") or 1)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    instance = _int(ds, "InstanceNumber")
    frames = [_frame_header(ds, i, enhanced, instance) for i in range(n_frames)]
    notes = []
    if "StudyInstanceUID" not in ds:
        notes.append("StudyInstanceUID missing")
    if "SeriesInstanceUID" not in ds:
        notes.append("SeriesInstanceUID missing")
    series_uid = _text(ds, "SeriesInstanceUID") or f"no-series:{path.parent}:{_text(ds, 'SeriesNumber')}"
    return FileHeader(
        path=path,
        study_key=hash_identifier(_text(ds, "StudyInstanceUID") or "no-study"),
        patient_key=patient_key(_text(ds, "PatientID")),
        series_uid_key=hash_identifier(series_uid),
        sop_key=hash_identifier(_text(ds, "SOPInstanceUID") or f"no-sop:{path}"),
        description=str(ds.get("SeriesDescription", "") or ""),  # pydicom decodes the character set
        series_number=_int(ds, "SeriesNumber"),
        modality=_text(ds, "Modality"),
        transfer_syntax=_transfer_syntax(ds),
        sop_class=sop_class,
        samples_per_pixel=_int(ds, "SamplesPerPixel") or 1,
        n_frames=n_frames,
        frames=frames,
        notes=notes,
        laterality=_laterality(ds),
    )


def _laterality(ds: Dataset) -> str:
    """"R"/"L" of a paired body part (ImageLaterality wins over the series' Laterality)."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = _text(ds, keyword).strip().upper()
        if value in ("R", "L"):
            return value
    return ""


def _frame_header(ds: Dataset, index: int, enhanced: bool, instance: int | None) -> FrameHeader:
    try:
        plane, error = (plane_from_dataset(ds, index) if enhanced else classic_plane(ds)), ""
    except GeometryError as exc:
        plane, error = None, str(exc)
    if not enhanced:
        return FrameHeader(
            frame_index=index,
            plane=plane,
            geometry_error=error,
            instance_number=instance,
            trigger_time_ms=_float(ds, "TriggerTime"),
            temporal_position=_int(ds, "TemporalPositionIdentifier"),
            slice_thickness_mm=_float(ds, "SliceThickness"),
        )
    content = functional_item(ds, index, "FrameContentSequence")
    cardiac = functional_item(ds, index, "CardiacSynchronizationSequence")
    measures = functional_item(ds, index, "PixelMeasuresSequence")
    trigger = _float(cardiac, "NominalCardiacTriggerDelayTime") if cardiac is not None else None
    return FrameHeader(
        frame_index=index,
        plane=plane,
        geometry_error=error,
        instance_number=instance,
        trigger_time_ms=trigger if trigger is not None else _float(ds, "TriggerTime"),
        temporal_position=_int(content, "TemporalPositionIndex") if content is not None else None,
        slice_thickness_mm=_float(measures, "SliceThickness") if measures is not None else None,
        stack_position=_int(content, "InStackPositionNumber") if content is not None else None,
    )


def classic_plane(ds: Dataset) -> ImagePlane:
    """The plane of a classic (single-frame) image from its top-level attributes.

    Same result and GeometryError messages as ``planes.plane_from_dataset(ds, 0)`` for a
    classic image, reading the raw header values directly (several times faster on a scan).
    """
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols:
        raise GeometryError("Rows/Columns missing")
    values = {}
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        numbers = _numbers(ds, keyword)
        if numbers is None:
            raise GeometryError(f"{keyword} missing")
        values[keyword] = numbers
    try:
        return ImagePlane.from_dicom(
            values["ImagePositionPatient"], values["ImageOrientationPatient"], values["PixelSpacing"], rows, cols
        )
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"invalid plane geometry: {exc}") from exc


def _numbers(ds: Dataset, keyword: str) -> list[float] | None:
    """All values of a decimal-string attribute as floats; None when absent or empty."""
    elem = ds.get_item(_TAGS.get(keyword) or _tag(keyword))
    if elem is None or elem.value is None:
        return None
    value = elem.value
    try:
        if isinstance(value, bytes | bytearray):
            parts = [v.strip(" \0") for v in value.decode("latin-1").split("\\")]
            return [float(v) for v in parts] if any(parts) else None
        if isinstance(value, str | int | float):
            return [float(value)] if value != "" else None
        return [float(v) for v in value] or None
    except ValueError as exc:
        raise GeometryError(f"{keyword} is not numeric") from exc


def functional_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of functional group ``sequence`` for ``frame``: per-frame, else shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        seq = per_frame[frame].get(sequence)
        if seq:
            return seq[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        seq = shared[0].get(sequence)
        if seq:
            return seq[0]
    return None


def _value(ds: Dataset | None, keyword: str) -> object:
    """A top-level value without pydicom's conversion where possible (raw bytes decoded here).

    Text VRs come back as ``str`` (first value of a multi-valued one), binary VRs (US, UL...)
    as numbers; None when absent or empty. Elements pydicom already converted are used as is.
    """
    if ds is None:
        return None
    tag = _TAGS.get(keyword) or _tag(keyword)
    elem = ds.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    if not isinstance(value, bytes | bytearray):
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return value[0] if len(value) else None
        return None if value == "" else value
    vr = elem.VR or dictionary_VR(tag)
    if vr in _BINARY_VRS:
        fmt = _BINARY_VRS[vr]
        width = struct.calcsize("<" + fmt)
        if len(value) < width:
            return None
        return struct.unpack(("<" if elem.is_little_endian else ">") + fmt, value[:width])[0]
    text = value.decode("latin-1").split("\\", 1)[0].strip(" \0")
    return text or None


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    _TAGS[keyword] = int(tag)
    return int(tag)


_TAGS: dict[str, int] = {}


def _text(ds: Dataset | None, keyword: str) -> str:
    value = _value(ds, keyword)
    return "" if value is None else str(value)


def _int(ds: Dataset | None, keyword: str) -> int | None:
    try:
        value = _value(ds, keyword)
        return None if value is None else int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def _float(ds: Dataset | None, keyword: str) -> float | None:
    try:
        value = _value(ds, keyword)
        return None if value is None else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def _clean(exc: BaseException) -> str:
    """An exception's message on one line, without pydicom's advice to use force=True."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.replace(" Use force=True to force reading.", "")


# ----------------------------------------------------------------------------- pixel data checks
def expected_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes of native (uncompressed) Pixel Data the header promises, or None if unknown."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    bits = _int(ds, "BitsAllocated")
    if not rows or not cols or not bits:
        return None
    samples = _int(ds, "SamplesPerPixel") or 1
    n_bits = rows * cols * samples * max(1, _int(ds, "NumberOfFrames") or 1) * bits
    return (n_bits + 7) // 8


def _check_pixel_data(fp: BinaryIO, ds: Dataset, pos: int, size: int) -> str | None:
    """Why the Pixel Data element at byte ``pos`` is cut short, or None when it looks whole."""
    little, implicit = _encoding(_transfer_syntax(ds))
    fp.seek(pos + 4)
    if implicit:
        raw = fp.read(4)
        if len(raw) < 4:
            return f"file truncated inside the Pixel Data element header (file has {size} bytes)"
        length, start = struct.unpack("<L" if little else ">L", raw)[0], pos + 8
    else:
        raw = fp.read(8)
        if len(raw) < 8:
            return f"file truncated inside the Pixel Data element header (file has {size} bytes)"
        if raw[:2] in _VR_WITH_32BIT_LENGTH:
            length, start = struct.unpack("<L" if little else ">L", raw[4:8])[0], pos + 12
        else:
            length, start = struct.unpack("<H" if little else ">H", raw[2:4])[0], pos + 8
    if length == 0xFFFFFFFF:
        return _check_fragments(fp, start, size, max(1, _int(ds, "NumberOfFrames") or 1))
    if start + length > size:
        return (
            f"file truncated: Pixel Data needs {length} bytes from byte {start}, "
            f"the file ends after {size - start}"
        )
    expected = expected_pixel_bytes(ds)
    if expected is not None and length < expected:
        return f"Pixel Data holds {length} bytes, the header promises {expected}"
    return None


def _check_fragments(fp: BinaryIO, start: int, size: int, n_frames: int) -> str | None:
    """Walk the items of encapsulated Pixel Data (seek only); why it is cut short, or None."""
    pos, items = start, 0
    while True:
        fp.seek(pos)
        raw = fp.read(8)
        if len(raw) < 8:
            return f"file truncated: encapsulated Pixel Data ends without its delimiter ({size} bytes)"
        group, elem, length = struct.unpack("<HHL", raw)
        tag = group << 16 | elem
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM:
            return f"damaged encapsulated Pixel Data: unexpected tag ({group:04X},{elem:04X}) at byte {pos}"
        if pos + 8 + length > size:
            return (
                f"file truncated: Pixel Data fragment at byte {pos} needs {length} bytes, "
                f"the file ends after {size - pos - 8}"
            )
        pos += 8 + length
        items += 1
    fragments = items - 1  # the first item is the Basic Offset Table
    if fragments < n_frames:
        return f"encapsulated Pixel Data holds {max(fragments, 0)} fragments for {n_frames} frames"
    return None


# ----------------------------------------------------------------------------- the whole tree
def read_headers(
    paths: Sequence[Path], progress: ProgressCallback | None = None, workers: int = 1
) -> list[FileHeader | Problem]:
    """``read_file_header`` of every path, in order (a zip archive gives one item per member, see
    ``read_zip_headers``); ``workers > 1`` reads in a process pool.

    The pool is only used for trees of at least a few hundred files per worker; results are
    identical either way.
    """
    total = len(paths)
    workers = max(1, min(int(workers), total // _MIN_FILES_PER_WORKER))
    results: list[FileHeader | Problem] = []
    iterator: Iterable[list[FileHeader | Problem]]
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        iterator = pool.map(_read_any, paths, chunksize=max(16, total // (workers * 16)))
    else:
        iterator = map(_read_any, paths)
    try:
        for done, items in enumerate(iterator, start=1):
            results.extend(items)
            if progress is not None:
                progress(done, total)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results


def scan_tree(root: Path, progress: ProgressCallback | None = None, workers: int = 1) -> ScanResult:
    """Scan ``root`` (a folder tree or one file) for DICOM images, headers only.

    Returns a ScanResult whose studies hold series of positions (plane positions of the stack,
    ordered along the stack normal) of frames (cine phases, in time order); see
    ``dicom.series.build_studies`` for the grouping rules. ``progress(done, total)`` is called
    once per file. ``workers > 1`` reads headers in that many processes on large trees (keep 1
    inside 3D Slicer). Raises FileNotFoundError when ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    paths, problems = list_files(root)
    headers: list[FileHeader] = []
    for item in read_headers(paths, progress, workers):
        if isinstance(item, Problem):
            problems.append(item)
        else:
            headers.append(item)
    studies, grouping_problems = build_studies(headers)
    problems.extend(grouping_problems)
    problems.sort(key=lambda p: (str(p.path), p.kind))
    study_root = root if root.is_dir() else root.parent
    return ScanResult(root=study_root, studies=studies, problems=problems, files_seen=len(paths) + _hidden(problems))


def _hidden(problems: Iterable[Problem]) -> int:
    return sum(1 for p in problems if p.message == "hidden file")

