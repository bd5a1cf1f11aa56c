"""Plain records for what a scan of a DICOM tree finds: studies, series, frames, problems.

Also the per-file header summaries (``FileHeader``, ``FrameHeader``) that ``dicom.scan`` reads and
``dicom.series`` groups: kept here, they let ``scan`` import ``series`` with no import back.

Identifiers are never kept in the clear: studies and series are known by ``hash_identifier``
of their UIDs (a keyed hash under the installation's secret, ``dicom.id_secret``), so reports,
caches and logs built from these records carry no patient identifier (house rule on patient
privacy), and a key cannot be reversed by trying every short patient ID.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry.planes import ImagePlane
from ..geometry.stacks import slice_locations_mm, stack_normal_lps
from .id_secret import installation_secret

__all__ = [
    "hash_identifier", "hash_public_name", "patient_key",
    "Frame", "Position", "Series", "Study", "Problem", "ScanResult", "FileHeader", "FrameHeader",
    "VIEW_LABELS",
]

#: View labels by anatomy (docs/conventions.md, 'Plane and line geometry': heart SAX/2CH/3CH/4CH, knee SAG/COR/AX).
VIEW_LABELS = {"heart": ("SAX", "2CH", "3CH", "4CH"), "knee": ("SAG", "COR", "AX")}

#: Salt of ``hash_public_name`` (public data-set names and synthetic phantom IDs: nothing to hide).
_PUBLIC_SALT = "planessl-v1"
#: PatientIDs the phantom generator writes (``phantoms.cohort``): synthetic, hashed as public names so
#: that phantom studies split alike on every installation.
_SYNTHETIC_PATIENT = re.compile(r"planessl-(heart|knee)-\d{4,}")


def hash_identifier(value: str, length: int = 12) -> str:
    """A short, stable stand-in for a UID or patient identifier: HMAC-SHA256 under the installation's
    secret (``dicom.id_secret``), so a key cannot be reversed by trying every short patient ID."""
    secret = installation_secret()
    keyed = _KEYED.get(secret)
    if keyed is None:  # the key schedule once per secret: a scan hashes four identifiers per file
        keyed = _KEYED[secret] = hmac.new(secret, digestmod=hashlib.sha256)
    h = keyed.copy()
    h.update(value.encode("utf-8"))
    return h.hexdigest()[:length]


_KEYED: dict[bytes, hmac.HMAC] = {}


def hash_public_name(value: str, length: int = 12) -> str:
    """The key of a name that is public anyway (an ACDC, M&Ms-2 or MRNet subject, a phantom patient):
    the same on every installation, so splits of public data sets are reproducible everywhere."""
    return hashlib.sha256(f"{_PUBLIC_SALT}:{value}".encode()).hexdigest()[:length]


def patient_key(patient_id: str) -> str:
    """The key of a DICOM PatientID: ``hash_identifier``, or ``hash_public_name`` for a phantom's."""
    if _SYNTHETIC_PATIENT.fullmatch(patient_id):
        return hash_public_name(patient_id)
    return hash_identifier(patient_id or "no-patient")


@dataclass
class Frame:
    """One 2D image: a classic single-frame file or one frame of an enhanced multi-frame file."""

    path: Path
    frame_index: int  # 0-based frame number within the file (0 for classic images)
    plane: ImagePlane
    instance_number: int | None = None
    trigger_time_ms: float | None = None
    temporal_position: int | None = None  # TemporalPositionIdentifier / TemporalPositionIndex
    slice_thickness_mm: float | None = None
    transfer_syntax: str = ""
    # Added by the scanner (dicom.scan); defaults keep hand-built records valid.
    n_frames_in_file: int = 1  # NumberOfFrames of the file (1 for classic images)
    stack_position: int | None = None  # InStackPositionNumber (enhanced multi-frame), 1-based


@dataclass
class Position:
    """All frames of a series at one plane position (the cine phases of one slice), in time order."""

    plane: ImagePlane
    frames: list[Frame]
    location_mm: float = 0.0  # along the series' stack normal


@dataclass
class Series:
    """One DICOM series (or, for one-series-per-slice layouts, one acquisition of it)."""

    key: str  # hash_identifier(SeriesInstanceUID)
    description: str
    folder: Path  # the directory holding its files (for hints such as ``sax_5``)
    series_number: int | None
    modality: str
    frames: list[Frame] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)  # ordered along ``normal_lps``
    problems: list[str] = field(default_factory=list)  # e.g. why geometry is unusable
    usable: bool = True
    view: str | None = None
    view_source: str = ""  # "override", "geometry", "hint" or "" (unknown)
    view_reason: str = ""
    laterality: str = ""  # "R"/"L" for a paired body part (knee), "" otherwise
    # Added by the scanner (dicom.scan); defaults keep hand-built records valid.
    uid_key: str = ""  # hash_identifier(SeriesInstanceUID); equals ``key`` unless the series was split
    part: int | None = None  # 1-based part number when a series was split by orientation, else None
    n_files: int = 0  # files that contributed images (including those without usable geometry)
    n_images: int = 0  # frames read from headers (including those without usable geometry)
    transfer_syntaxes: list[str] = field(default_factory=list)  # UIDs, sorted

    @property
    def n_slices(self) -> int:
        return len(self.positions)

    @property
    def n_phases(self) -> int:
        return max((len(p.frames) for p in self.positions), default=0)

    @property
    def normal_lps(self) -> np.ndarray | None:
        if not self.positions:
            return None
        return stack_normal_lps([p.plane for p in self.positions])

    @property
    def planes(self) -> list[ImagePlane]:
        return [p.plane for p in self.positions]

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        return self.positions[0].plane.spacing_mm if self.positions else None

    @property
    def shape_px(self) -> tuple[int, int] | None:
        return self.positions[0].plane.shape_px if self.positions else None

    @property
    def slice_spacing_mm(self) -> float | None:
        if len(self.positions) < 2:
            return None
        s = np.sort(slice_locations_mm(self.planes, self.normal_lps))
        return float(np.median(np.diff(s)))


@dataclass
class Study:
    key: str  # hash_identifier(StudyInstanceUID)
    patient_key: str  # hash_identifier(PatientID)
    root: Path  # common directory of its files
    series: list[Series] = field(default_factory=list)
    anatomy: str | None = None  # "heart", "knee" or None when it cannot be told
    problems: list[str] = field(default_factory=list)


@dataclass
class Problem:
    """Something met while scanning: ``kind`` is "ignored" (not an image, noted) or "error"."""

    path: Path
    kind: str
    message: str


@dataclass
class ScanResult:
    root: Path
    studies: list[Study] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files_seen: int = 0


# ----------------------------------------------------------------------------- per-file headers
@dataclass
class FrameHeader:
    """What the header says about one frame (times in ms; geometry may be missing)."""

    frame_index: int
    plane: ImagePlane | None
    geometry_error: str = ""  # why ``plane`` is None
    instance_number: int | None = None
    trigger_time_ms: float | None = None
    temporal_position: int | None = None
    slice_thickness_mm: float | None = None
    stack_position: int | None = None


@dataclass
class FileHeader:
    """A DICOM image file's header, reduced to what grouping needs; identifiers are hashed."""

    path: Path
    study_key: str
    patient_key: str
    series_uid_key: str
    sop_key: str
    description: str
    series_number: int | None
    modality: str
    transfer_syntax: str
    sop_class: str
    samples_per_pixel: int
    n_frames: int
    frames: list[FrameHeader] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # header oddities that do not stop reading
    laterality: str = ""  # "R" or "L" (ImageLaterality, else Laterality); "" when unpaired/unknown
