"""Small fixture trees in the layouts of the real public data sets, written from phantom heart cohorts.

Each builder reads a phantom cohort (``planessl phantom heart``, Kaggle-like layout: ``sax_N``,
``2ch_N``, ``3ch_N``, ``4ch_N`` series folders, ``labels/sax_{ed,es}.nii.gz``, ``subjects.csv``)
and rewrites its subjects in one real layout, with the folder names, file names and CSV formats
of the public release:

- :func:`write_kaggle_dsb`: Kaggle Data Science Bowl cardiac, ``train/<id>/study/{sax_N,2ch_N,4ch_N}/
  IM-xxxx-yyyy.dcm`` (no 3CH in the competition data) and ``train.csv`` (``Id,Systole,Diastole``),
  with its quirks on request (:class:`DsbQuirks`).
- :func:`write_ukbb`: UK Biobank, one zip per subject and field, ``<eid>_20209_2_0.zip`` (short axis:
  one series per slice, ``CINE_segmented_SAX_b1``...) and ``<eid>_20208_2_0.zip`` (long axis:
  ``CINE_segmented_LAX_2Ch/3Ch/4Ch``), DICOM members at the zip's root named by their SOP Instance
  UID, and a manifest (``filename,patientid,date,series discription,seriesid``; the date is written
  the release's way, ``Aug 30, 2015``, a comma inside an unquoted field), named ``manifest.csv`` or,
  as many real zips do, ``manifest.cvs``.
- :func:`write_mnms2`: M&Ms-2, ``NNN/NNN_{SA,LA}_{ED,ES}.nii.gz`` + ``_gt`` labels (M&Ms-2 values:
  LV 1, Myo 2, RV 3), ``NNN_{SA,LA}_CINE.nii.gz`` (4D) and ``dataset_information.csv``
  (``SUBJECT_CODE,DISEASE,VENDOR,SCANNER,FIELD``). Volumes are ``(columns, rows, slices[, time])``
  with the affine of ``dicom.nifti.stack_affine_ras`` (voxel → RAS mm, slices along the DICOM
  normal), as a DICOM-to-NIfTI conversion that keeps the scanner geometry writes them; LA is the
  4CH plane, one slice. The phantom has no long-axis labels: the LA ``_gt`` files are all zero.

All outputs are byte-reproducible for a cohort (NIfTI gzip without timestamp, zips with a fixed
date). ``cohort_subjects`` and ``read_heart_subject`` give the phantom's own view of a subject
(planes and pixels from the DICOM), so tests can compare a layout with what it was written from.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from PlaneSSLLib.dicom.nifti import read_label_nifti, stack_affine_ras, stack_order
from PlaneSSLLib.dicom.pixels import read_position_pixels
from PlaneSSLLib.dicom.records import Position
from PlaneSSLLib.dicom.report import apply_views
from PlaneSSLLib.dicom.scan import scan_tree
from PlaneSSLLib.geometry.planes import ImagePlane

__all__ = [
    "DsbQuirks",
    "HeartSubject",
    "cohort_subjects",
    "read_heart_subject",
    "write_kaggle_dsb",
    "write_mnms2",
    "write_ukbb",
    "write_nifti",
]

#: ACDC label values (phantom) -> M&Ms-2 label values (LV 1, Myo 2, RV 3).
ACDC_TO_MNMS2 = np.array([0, 3, 2, 1], dtype=np.uint8)
_ZIP_DATE = (2015, 8, 30, 12, 0, 0)


# ----------------------------------------------------------------------------- reading the phantom
def cohort_subjects(cohort: Path) -> list[Path]:
    """The ``subject_NNNN`` folders of a phantom cohort, sorted."""
    return sorted(p for p in Path(cohort).iterdir() if p.is_dir() and p.name.startswith("subject_"))


@dataclass
class HeartSubject:
    """A phantom heart subject as its DICOM says: planes and pixels per view, phases in time order."""

    folder: Path
    ed_phase: int
    es_phase: int
    sax: list[Position] = field(default_factory=list)  # ordered along the stack's DICOM normal
    lax: dict[str, Position] = field(default_factory=dict)  # "2CH", "3CH", "4CH"
    series_folder: dict[int, Path] = field(default_factory=dict)  # id(position) -> its series folder

    def sax_planes(self) -> list[ImagePlane]:
        return [p.plane for p in self.sax]


def _phases(subject_dir: Path) -> tuple[int, int]:
    with (subject_dir.parent / "subjects.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["subject"] == subject_dir.name:
                return int(row["ed_phase"]), int(row["es_phase"])
    raise KeyError(subject_dir.name)


def read_heart_subject(subject_dir: Path) -> HeartSubject:
    """Scan one phantom heart subject (views from geometry) into a :class:`HeartSubject`."""
    result = scan_tree(subject_dir)
    apply_views(result, anatomy_hint="heart")
    (study,) = result.studies
    ed, es = _phases(subject_dir)
    subject = HeartSubject(subject_dir, ed, es)
    sax = []
    for series in study.series:
        for position in series.positions:
            subject.series_folder[id(position)] = series.folder
            if series.view == "SAX":
                sax.append(position)
            elif series.view in ("2CH", "3CH", "4CH"):
                subject.lax[series.view] = position
    subject.sax = [sax[i] for i in stack_order([p.plane for p in sax])]
    return subject


# ----------------------------------------------------------------------------- NIfTI
def write_nifti(path: Path, volume: np.ndarray, affine_ras: np.ndarray) -> Path:
    """A gzip-compressed NIfTI-1 file (qform = sform = ``affine_ras``, code 1), without timestamp."""
    img = nib.Nifti1Image(volume, affine_ras)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine_ras, code=1)
    img.set_sform(affine_ras, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
    return path


def _volume(positions: list[Position], phases: list[int]) -> np.ndarray:
    """int16 ``(cols, rows, slices, phases)`` from the positions' pixels."""
    stacks = [read_position_pixels(p) for p in positions]  # each (phases, rows, cols)
    vol = np.stack([np.stack([s[t].T for t in phases], axis=-1) for s in stacks], axis=2)
    return np.round(vol).astype(np.int16)


def write_mnms2(cohort: Path, out: Path, cine: bool = True) -> Path:
    """An M&Ms-2 ``dataset`` folder at ``out`` from the phantom heart ``cohort`` (subject k -> ``00{k+1}``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = [["SUBJECT_CODE", "DISEASE", "VENDOR", "SCANNER", "FIELD"]]
    vendors = [("SIEMENS", "Avanto", "1.5"), ("Philips Medical Systems", "Achieva", "3.0"),
               ("GE MEDICAL SYSTEMS", "SIGNA EXCITE", "1.5")]
    for k, folder in enumerate(cohort_subjects(cohort)):
        code = f"{k + 1:03d}"
        subject = read_heart_subject(folder)
        sub = out / code
        sa_affine = stack_affine_ras(subject.sax_planes())
        la = subject.lax["4CH"]
        la_affine = stack_affine_ras([la.plane])
        n_phases = len(subject.sax[0].frames)
        labels = {"ED": folder / "labels" / "sax_ed.nii.gz", "ES": folder / "labels" / "sax_es.nii.gz"}
        for phase_name, phase in (("ED", subject.ed_phase), ("ES", subject.es_phase)):
            sa = _volume(subject.sax, [phase])[..., 0]
            write_nifti(sub / f"{code}_SA_{phase_name}.nii.gz", sa, sa_affine)
            lab, lab_affine = read_label_nifti(labels[phase_name])
            assert np.allclose(lab_affine, sa_affine, atol=1e-4), "phantom labels off the SAX grid"
            write_nifti(sub / f"{code}_SA_{phase_name}_gt.nii.gz", ACDC_TO_MNMS2[lab], sa_affine)
            la_vol = _volume([la], [phase])[..., 0]
            write_nifti(sub / f"{code}_LA_{phase_name}.nii.gz", la_vol, la_affine)
            write_nifti(sub / f"{code}_LA_{phase_name}_gt.nii.gz", np.zeros(la_vol.shape, np.uint8), la_affine)
        if cine:
            write_nifti(sub / f"{code}_SA_CINE.nii.gz", _volume(subject.sax, list(range(n_phases))), sa_affine)
            write_nifti(sub / f"{code}_LA_CINE.nii.gz", _volume([la], list(range(n_phases))), la_affine)
        vendor, scanner, tesla = vendors[k % len(vendors)]
        info.append([code, "NOR" if k % 2 == 0 else "DLV", vendor, scanner, tesla])
    with (out / "dataset_information.csv").open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(info)
    return out


# ----------------------------------------------------------------------------- Kaggle DSB
@dataclass
class DsbQuirks:
    """The Data Science Bowl's known oddities, each on request (subject index -> quirk)."""

    nested: bool = False  #: studies under ``train/train/<id>/study`` (one level deeper)
    missing: dict[int, tuple[str, ...]] = field(default_factory=dict)  #: subject -> long-axis kinds to drop ("2ch")
    duplicate_sax: tuple[int, ...] = ()  #: subjects whose second SAX slice is acquired twice (a new sax_N folder)
    merged_sax: tuple[int, ...] = ()  #: subjects whose 3rd SAX slice's files sit in the 2nd slice's folder
    respaced_sax: tuple[int, ...] = ()  #: subjects whose last SAX series has another pixel spacing


def _rewrite(path: Path, dest: Path, **changes: object) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)


def write_kaggle_dsb(cohort: Path, out: Path, quirks: DsbQuirks | None = None) -> Path:
    """A Data Science Bowl folder at ``out`` (``train/<id>/study/...`` + ``train.csv``), subject k -> Id k+1."""
    quirks = quirks or DsbQuirks()
    out = Path(out)
    split = out / "train" / "train" if quirks.nested else out / "train"
    rows = [["Id", "Systole", "Diastole"]]
    for k, folder in enumerate(cohort_subjects(cohort)):
        sid = k + 1
        study = split / str(sid) / "study"
        series_dirs = sorted(p for p in (folder / "study").iterdir() if p.is_dir())
        sax_dirs = sorted((p for p in series_dirs if p.name.startswith("sax_")), key=lambda p: int(p.name[4:]))
        for src in series_dirs:
            kind = src.name.split("_")[0]
            if kind == "3ch" or kind in quirks.missing.get(k, ()):
                continue
            shutil.copytree(src, study / src.name)
        if k in quirks.duplicate_sax:  # the same slice acquired again: new series, same plane
            src = sax_dirs[1]
            number = int(sax_dirs[-1].name[4:]) + 10
            for i, f in enumerate(sorted(src.glob("*.dcm"))):
                _rewrite(f, study / f"sax_{number}" / f"IM-{number:04d}-{i + 1:04d}.dcm", SeriesNumber=number,
                         SeriesInstanceUID=pydicom.uid.generate_uid(entropy_srcs=[str(f), "dup"]),
                         SOPInstanceUID=pydicom.uid.generate_uid(entropy_srcs=[str(f), "dup-sop"]))
        if k in quirks.merged_sax:  # two slice locations in one folder (and one series)
            keep, gone = sax_dirs[1].name, sax_dirs[2].name
            uid = pydicom.dcmread(next((study / keep).glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID
            n = len(list((study / keep).glob("*.dcm")))
            for i, f in enumerate(sorted((study / gone).glob("*.dcm"))):
                _rewrite(f, study / keep / f"IM-{int(keep[4:]):04d}-{n + i + 1:04d}.dcm", SeriesInstanceUID=uid,
                         SeriesNumber=int(keep[4:]), InstanceNumber=n + i + 1)
            shutil.rmtree(study / gone)
        if k in quirks.respaced_sax:
            last = study / sax_dirs[-1].name
            for f in sorted(last.glob("*.dcm")):
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                _rewrite(f, f, PixelSpacing=[float(v) * 1.25 for v in ds.PixelSpacing])
        rows.append([str(sid), f"{40.0 + 5 * k:.1f}", f"{120.0 + 7 * k:.1f}"])
    with (out / "train.csv").open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return out


# ----------------------------------------------------------------------------- UK Biobank
def _zip_write(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def _ukbb_member(path: Path, description: str, series_uid: str) -> tuple[str, bytes, pydicom.Dataset]:
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = description
    ds.SeriesInstanceUID = series_uid
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return f"{ds.SOPInstanceUID}.dcm", buf.getvalue(), ds


def write_ukbb(cohort: Path, out: Path, first_eid: int = 1000001, broken: dict[int, str] | None = None) -> Path:
    """UK Biobank zips at ``out``: ``<eid>_20209_2_0.zip`` (SAX) and ``<eid>_20208_2_0.zip`` (LAX) per subject.

    Subject k gets eid ``first_eid + k``; even subjects carry ``manifest.csv``, odd ones the
    misspelled ``manifest.cvs``. ``broken`` = {subject: "truncate" | "corrupt"}: that subject's SAX zip
    has its first DICOM member cut to 200 bytes ("truncate") or the SAX zip file itself is cut in half
    ("corrupt"; an unreadable zip).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    broken = broken or {}
    for k, folder in enumerate(cohort_subjects(cohort)):
        eid = first_eid + k
        manifest_name = "manifest.csv" if k % 2 == 0 else "manifest.cvs"
        series_dirs = sorted(p for p in (folder / "study").iterdir() if p.is_dir())
        sax_dirs = sorted((p for p in series_dirs if p.name.startswith("sax_")), key=lambda p: int(p.name[4:]))
        groups = {
            20209: [(d, f"CINE_segmented_SAX_b{i + 1}") for i, d in enumerate(sax_dirs)],
            20208: [(d, f"CINE_segmented_LAX_{d.name[0]}Ch") for d in series_dirs if d.name[1:3] == "ch"],
        }
        for field_id, series in groups.items():
            path = out / f"{eid}_{field_id}_2_0.zip"
            manifest = [["filename", "patientid", "date", "series discription", "seriesid"]]
            members: list[tuple[str, bytes]] = []
            for d, description in series:
                uid = pydicom.uid.generate_uid(entropy_srcs=[str(eid), description])
                for f in sorted(d.glob("*.dcm")):
                    name, data, ds = _ukbb_member(f, description, uid)
                    members.append((name, data))
                    manifest.append([name, str(ds.PatientID), "Aug 30, 2015 12:00:00", description,
                                     str(ds.SeriesNumber)])
            if field_id == 20209 and broken.get(k) == "truncate":
                members[0] = (members[0][0], members[0][1][:200])
            text = "\n".join(",".join(row) for row in manifest) + "\n"  # unquoted: the date's comma splits a field
            with zipfile.ZipFile(path, "w") as zf:
                _zip_write(zf, manifest_name, text.encode())
                for name, data in members:
                    _zip_write(zf, name, data)
            if field_id == 20209 and broken.get(k) == "corrupt":
                raw = path.read_bytes()
                path.write_bytes(raw[: len(raw) // 2])
    return out
