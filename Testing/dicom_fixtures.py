"""Helpers that write small DICOM trees for the reading and inspect tests (no phantom module).

Every image's pixels are a deterministic smooth pattern (so JPEG baseline stays close), and
all identifiers written are returned so tests can check that none leaks into any output.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, generate_uid

from PlaneSSLLib.dicom.write import (
    SeriesInfo,
    StudyInfo,
    build_enhanced_mr_dataset,
    build_mr_dataset,
    uid_from,
    write_dataset_atomic,
)
from PlaneSSLLib.geometry import ImagePlane

#: Oblique orientation (x, y) of the test stacks: rotated about two axes, orthonormal.
_C, _S = np.cos(np.radians(30)), np.sin(np.radians(30))
OBLIQUE_X = np.array([_C, _S, 0.0])
OBLIQUE_Y = np.array([-_S * 0.8, _C * 0.8, 0.6])


@dataclass
class WrittenSeries:
    """What a helper wrote: files, planes and pixel arrays by (slice, phase), identifiers."""

    folder: Path
    paths: list[Path] = field(default_factory=list)
    planes: list[ImagePlane] = field(default_factory=list)  # one per slice, in slice order
    pixels: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # stored values
    path_of: dict[tuple[int, int], tuple[Path, int]] = field(default_factory=dict)  # -> (file, frame)
    identifiers: set[str] = field(default_factory=set)
    n_slices: int = 0
    n_phases: int = 0
    spacing_mm: tuple[float, float] = (1.0, 1.0)
    gap_mm: float = 0.0
    shape_px: tuple[int, int] = (32, 40)


def study_info(tag: str) -> StudyInfo:
    """A synthetic study whose patient name, ID and birth date are easy to search for."""
    return StudyInfo(
        patient_id=f"PID-SECRET-{tag}",
        patient_name=f"Secretname^{tag.capitalize()}",
        patient_birth_date="19610203",
        study_uid=uid_from("study", tag),
        frame_of_reference_uid=uid_from("for", tag),
        study_description=f"test study {tag}",
    )


def study_identifiers(study: StudyInfo) -> set[str]:
    return {study.patient_id, study.patient_name, study.patient_birth_date, study.study_uid,
            study.frame_of_reference_uid}


def pattern(shape: tuple[int, int], seed: int, max_value: int = 4000) -> np.ndarray:
    """A smooth, distinct uint16 image for ``seed`` (values in [0, max_value])."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    v = 0.5 + 0.25 * np.sin(x / 5.0 + seed) + 0.25 * np.cos(y / 7.0 + 0.37 * seed)
    return np.round(v * max_value).astype(np.uint16)


def stack_planes(
    n_slices: int,
    shape: tuple[int, int] = (32, 40),
    spacing: tuple[float, float] = (1.25, 0.9),
    gap_mm: float = 6.5,
    x_dir: np.ndarray = OBLIQUE_X,
    y_dir: np.ndarray = OBLIQUE_Y,
    centre: tuple[float, float, float] = (10.0, -20.0, 30.0),
) -> list[ImagePlane]:
    """``n_slices`` parallel planes ``gap_mm`` apart along their normal."""
    normal = np.cross(x_dir, y_dir)
    return [
        ImagePlane.centred(np.asarray(centre) + k * gap_mm * normal, x_dir, y_dir, spacing, shape)
        for k in range(n_slices)
    ]


def write_classic_series(
    root: Path,
    folder: str,
    study: StudyInfo,
    series_number: int,
    description: str,
    n_slices: int = 3,
    n_phases: int = 1,
    transfer_syntax: str | None = None,
    planes: list[ImagePlane] | None = None,
    eight_bit: bool = False,
    shuffle: bool = True,
) -> WrittenSeries:
    """One classic MR series, one file per (slice, phase); files named in shuffled order."""
    planes = planes or stack_planes(n_slices)
    series = SeriesInfo(
        series_uid=uid_from("series", study.study_uid, series_number),
        series_number=series_number,
        description=description,
        cardiac=n_phases > 1,
    )
    out = WrittenSeries(folder=root / folder, planes=planes, n_slices=len(planes), n_phases=n_phases,
                        spacing_mm=planes[0].spacing_mm, shape_px=planes[0].shape_px)
    out.identifiers |= study_identifiers(study) | {series.series_uid}
    jobs = [(s, p) for s in range(len(planes)) for p in range(n_phases)]
    order = np.random.default_rng(series_number).permutation(len(jobs)) if shuffle else range(len(jobs))
    for file_no, j in enumerate(order):
        s, p = jobs[int(j)]
        px = pattern(planes[s].shape_px, 10 * s + p + series_number, 200 if eight_bit else 4000)
        sop = uid_from("sop", series.series_uid, s, p)
        ds = build_mr_dataset(
            px, planes[s], study, series, instance_number=s * n_phases + p + 1, sop_instance_uid=sop,
            slice_thickness_mm=6.0, trigger_time_ms=40.0 * p if n_phases > 1 else None,
            cardiac_phases=n_phases if n_phases > 1 else None,
        )
        if eight_bit:
            to_eight_bit(ds, px)
        path = out.folder / f"IM{file_no:04d}.dcm"
        write_dataset_atomic(ds, path, transfer_syntax)
        out.paths.append(path)
        out.pixels[(s, p)] = px
        out.path_of[(s, p)] = (path, 0)
        out.identifiers.add(sop)
    return out


def to_eight_bit(ds: Dataset, px: np.ndarray) -> None:
    """Make ``ds`` an 8-bit image holding ``px`` (values < 256), e.g. for JPEG baseline."""
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = px.astype(np.uint8).tobytes()


def write_enhanced_cine(
    root: Path,
    name: str,
    study: StudyInfo,
    series_number: int,
    description: str,
    n_slices: int = 2,
    n_phases: int = 4,
    transfer_syntax: str | None = None,
    rescale: tuple[float, float] = (1.0, 0.0),
) -> WrittenSeries:
    """One Enhanced MR Image file: ``n_slices`` × ``n_phases`` frames, stored phase-major
    (all slices of phase 0, then phase 1...) so that the reader has to regroup them."""
    planes = stack_planes(n_slices, gap_mm=8.0)
    series = SeriesInfo(
        series_uid=uid_from("series", study.study_uid, series_number),
        series_number=series_number,
        description=description,
        cardiac=True,
    )
    out = WrittenSeries(folder=root / Path(name).parent, planes=planes, n_slices=n_slices, n_phases=n_phases,
                        spacing_mm=planes[0].spacing_mm, shape_px=planes[0].shape_px)
    jobs = [(s, p) for p in range(n_phases) for s in range(n_slices)]
    frames = np.stack([pattern(planes[s].shape_px, 10 * s + p + series_number) for s, p in jobs])
    sop = uid_from("sop", series.series_uid)
    ds = build_enhanced_mr_dataset(
        frames=frames,
        planes=[planes[s] for s, _ in jobs],
        study=study,
        series=series,
        sop_instance_uid=sop,
        slice_thickness_mm=6.0,
        trigger_times_ms=[35.0 * p for _, p in jobs],
        temporal_positions=[p + 1 for _, p in jobs],
        stack_positions=[s + 1 for s, _ in jobs],
        rescale=rescale,
    )
    path = root / name
    write_dataset_atomic(ds, path, transfer_syntax)
    out.paths.append(path)
    for i, (s, p) in enumerate(jobs):
        out.pixels[(s, p)] = frames[i]
        out.path_of[(s, p)] = (path, i)
    out.identifiers |= study_identifiers(study) | {series.series_uid, sop}
    return out


def write_text_sr(path: Path, study: StudyInfo) -> Path:
    """A Basic Text SR document (a non-image DICOM object) in ``study``."""
    ds = Dataset()
    sop = uid_from("sr", study.study_uid)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BasicTextSRStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = sop
    ds.Modality = "SR"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["sr-series", study.study_uid])
    ds.ValueType = "CONTAINER"
    ds.ContentSequence = DicomSequence()
    write_dataset_atomic(ds, path)
    return path


def dcmcjpeg(src: Path, dst: Path, mode: str) -> Path:
    """Re-encode ``src`` with dcmtk: mode "+e1" (lossless SV1), "+el" (lossless), "+eb" (baseline)."""
    exe = shutil.which("dcmcjpeg")
    if exe is None:
        raise RuntimeError("dcmcjpeg not installed")
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, mode, str(src), str(dst)], check=True, capture_output=True)
    return dst


def truncate(path: Path, keep_bytes: int) -> Path:
    """Cut ``path`` to its first ``keep_bytes`` bytes (negative: drop that many from the end)."""
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])
    return path


def write_dicomdir_like(path: Path) -> Path:
    """A minimal Media Storage Directory object (what a DICOMDIR is), no pixel data."""
    from pydicom.uid import MediaStorageDirectoryStorage

    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = uid_from("dicomdir", str(path))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.FileSetID = "TEST"
    ds.DirectoryRecordSequence = DicomSequence()
    write_dataset_atomic(ds, path)
    return path


@dataclass
class MixedTree:
    """The acceptance-test tree: good series by name, problem files, identifiers written."""

    root: Path
    series: dict[str, WrittenSeries] = field(default_factory=dict)  # name -> what was written
    syntax: dict[str, str] = field(default_factory=dict)  # name -> transfer syntax UID
    lossy: set[str] = field(default_factory=set)  # names whose pixels are only close
    problems: dict[str, str] = field(default_factory=dict)  # relative path -> "error" | "ignored"
    identifiers: set[str] = field(default_factory=set)


def build_mixed_tree(root: Path, with_dcmtk: bool) -> MixedTree:
    """Two studies mixing native, big-endian, deflated and compressed series, an enhanced cine,
    a truncated image (pixels cut), an image cut inside its header, a non-image DICOM (SR), a
    DICOMDIR and stray non-DICOM files. ``with_dcmtk`` adds JPEG lossless (process 14, SV1) and
    JPEG baseline series made with dcmtk's ``dcmcjpeg``."""
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGLSLossless,
        RLELossless,
    )

    tree = MixedTree(root=root)
    heart, knee = study_info("heart1"), study_info("knee2")
    specs = [
        ("cine_le", heart, None, 3, 3),
        ("implicit", heart, ImplicitVRLittleEndian, 2, 1),
        ("bigendian", heart, ExplicitVRBigEndian, 3, 1),
        ("deflated", heart, DeflatedExplicitVRLittleEndian, 2, 1),
        ("rle", knee, RLELossless, 3, 1),
        ("j2k", knee, JPEG2000Lossless, 2, 2),
        ("jpegls", knee, JPEGLSLossless, 2, 1),
    ]
    for number, (name, study, ts, n_slices, n_phases) in enumerate(specs, start=1):
        folder = f"{'patientA' if study is heart else 'patientB'}/{name}"
        tree.series[name] = write_classic_series(root, folder, study, number, name, n_slices, n_phases, ts)
        tree.syntax[name] = ts or ExplicitVRLittleEndian
    enh = write_enhanced_cine(root, "patientB/enhanced/cine.dcm", knee, 20, "enhanced cine", rescale=(2.0, -50.0))
    tree.series["enhanced"] = enh
    tree.syntax["enhanced"] = ExplicitVRLittleEndian
    if with_dcmtk:
        _add_dcmtk_series(tree, heart)
    # broken and stray files
    trunc = write_classic_series(root, "patientA/truncated", heart, 40, "truncated", 2, 1)
    truncate(trunc.paths[0], -100)
    tree.problems[_rel(trunc.paths[0], root)] = "error"
    tree.identifiers |= trunc.identifiers  # its second file is good: a 1-slice series remains
    cut = write_classic_series(root, "patientA/cut_header", heart, 41, "cut header", 1, 1)
    truncate(cut.paths[0], 600)
    tree.problems[_rel(cut.paths[0], root)] = "error"
    j2k_cut = write_classic_series(root, "patientB/j2k_cut", knee, 42, "j2k cut", 1, 1, JPEG2000Lossless)
    truncate(j2k_cut.paths[0], -40)
    tree.problems[_rel(j2k_cut.paths[0], root)] = "error"
    write_text_sr(root / "patientA/report/sr.dcm", heart)
    tree.problems["patientA/report/sr.dcm"] = "ignored"
    write_dicomdir_like(root / "DICOMDIR")
    tree.problems["DICOMDIR"] = "ignored"
    (root / "README").write_text("test data\n")
    (root / "patientA/notes.txt").write_text("nothing to see\n")
    (root / "patientB/preview.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (root / "patientB/empty.dcm").write_bytes(b"")
    (root / "patientA/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    for name in ("README", "patientA/notes.txt", "patientB/preview.png", "patientB/empty.dcm", "patientA/.DS_Store"):
        tree.problems[name] = "ignored"
    for ws in tree.series.values():
        tree.identifiers |= ws.identifiers
    tree.identifiers |= cut.identifiers | j2k_cut.identifiers | study_identifiers(heart) | study_identifiers(knee)
    return tree


def _add_dcmtk_series(tree: MixedTree, study: StudyInfo) -> None:
    """JPEG lossless SV1 / process 14 and baseline series, re-encoded from native files by dcmcjpeg."""
    from pydicom.uid import JPEGBaseline8Bit, JPEGLossless, JPEGLosslessSV1

    staging = tree.root.parent / f"{tree.root.name}_staging"
    modes = (
        ("jpeg_sv1", "+e1", JPEGLosslessSV1),
        ("jpeg_p14", "+el", JPEGLossless),
        ("jpeg_base", "+eb", JPEGBaseline8Bit),
    )
    for number, (name, mode, ts) in enumerate(modes, start=30):
        src = write_classic_series(staging, name, study, number, name, 2, 1, eight_bit=name == "jpeg_base")
        out = WrittenSeries(folder=tree.root / "patientA" / name, planes=src.planes, n_slices=2, n_phases=1,
                            spacing_mm=src.spacing_mm, shape_px=src.shape_px, identifiers=src.identifiers)
        for key, (path, frame) in src.path_of.items():
            dst = dcmcjpeg(path, out.folder / path.name, mode)
            out.paths.append(dst)
            out.pixels[key] = src.pixels[key]
            out.path_of[key] = (dst, frame)
        tree.series[name] = out
        tree.syntax[name] = ts
        if mode == "+eb":
            tree.lossy.add(name)
    shutil.rmtree(staging)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
