"""Phantom files are valid DICOM MR: dciodvfy finds no error, and SimpleITK (ITK/GDCM, an
independent reader) loads every image with the geometry and pixels PlaneSSL computes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import require_tool

from PlaneSSLLib.dicom.planes import plane_from_dataset
from PlaneSSLLib.geometry import slice_locations_mm
from PlaneSSLLib.phantoms import CohortOptions, write_cohort

sitk = pytest.importorskip("SimpleITK")

COHORTS = {
    "heart_kaggle": CohortOptions("heart", 1, seed=2, phases=2, matrix=96),
    "heart_ukbb": CohortOptions("heart", 1, seed=2, layout="ukbb", phases=2, matrix=96),
    "knee": CohortOptions("knee", 1, seed=2, matrix=96),
    "knee_clinical": CohortOptions("knee", 1, seed=2, matrix=96, realism="clinical"),
    "heart_clinical": CohortOptions("heart", 1, seed=2, phases=2, matrix=96, realism="clinical"),
    "heart_clinical_ukbb": CohortOptions("heart", 1, seed=4, layout="ukbb", phases=2, matrix=96, realism="clinical"),
}


@pytest.fixture(scope="module", params=sorted(COHORTS))
def cohort(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(request.param)
    write_cohort(out, COHORTS[request.param], workers=1)
    return out


def series_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("subject_*/study/*") if p.is_dir())


def test_dciodvfy_reports_no_errors(cohort):
    dciodvfy = require_tool("dciodvfy")
    folders = series_folders(cohort)
    assert folders
    kinds = set()
    for folder in folders:
        files = sorted(folder.glob("*.dcm"))
        kind = folder.name.rsplit("_", 1)[0] if folder.name[-1].isdigit() else folder.name
        if kind in kinds and kind == "sax":
            continue  # one SAX slice series is enough in the one-series-per-slice layout
        kinds.add(kind)
        for path in (files[0], files[-1]):
            proc = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
            report = proc.stdout + proc.stderr
            errors = [line for line in report.splitlines() if "Error" in line]
            assert not errors, f"{path}:\n" + "\n".join(errors)
    assert len(kinds) >= 3


def test_simpleitk_reads_the_geometry_and_pixels(cohort):
    n_files = 0
    for folder in series_folders(cohort):
        for path in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            plane = plane_from_dataset(ds)
            img = sitk.ReadImage(str(path))
            # ITK's physical space is LPS, like DICOM and PlaneSSL's geometry.
            assert np.allclose(img.GetOrigin(), plane.origin_lps, atol=1e-3)
            direction = np.array(img.GetDirection()).reshape(3, 3)
            assert np.allclose(direction[:, 0], plane.x_dir_lps, atol=1e-5)
            assert np.allclose(direction[:, 1], plane.y_dir_lps, atol=1e-5)
            assert np.allclose(direction[:, 2], plane.normal_lps, atol=1e-5)
            dr, dc = plane.spacing_mm
            assert np.allclose(img.GetSpacing()[:2], (dc, dr), atol=1e-6)  # ITK: (column, row) spacing
            pixels = sitk.GetArrayFromImage(img)
            assert pixels.shape == (1, plane.rows, plane.columns)
            assert np.array_equal(pixels[0], ds.pixel_array)
            n_files += 1
    assert n_files >= 20


def test_simpleitk_series_reader_builds_the_stacks(cohort):
    """GDCM's series grouping and slice ordering agree with PlaneSSL's stack geometry."""
    checked = 0
    for folder in series_folders(cohort):
        reader = sitk.ImageSeriesReader()
        ids = reader.GetGDCMSeriesIDs(str(folder))
        assert len(ids) == 1, folder
        names = reader.GetGDCMSeriesFileNames(str(folder), ids[0])
        dss = [pydicom.dcmread(n, stop_before_pixels=True) for n in names]
        planes = [plane_from_dataset(d) for d in dss]
        positions = {tuple(np.round(p.origin_lps, 3)) for p in planes}
        if len(positions) != len(planes):
            continue  # cine series: several frames per position, not a spatial volume
        reader.SetFileNames(names)
        vol = reader.Execute()
        assert np.allclose(vol.GetOrigin(), planes[0].origin_lps, atol=1e-3)
        s = slice_locations_mm(planes, planes[0].normal_lps)
        assert np.all(np.diff(s) > 0)  # GDCM sorts along the normal
        assert abs(vol.GetSpacing()[2] - float(np.median(np.diff(s)))) < 1e-3
        dr, dc = planes[0].spacing_mm
        assert np.allclose(vol.GetSpacing()[:2], (dc, dr), atol=1e-6)
        direction = np.array(vol.GetDirection()).reshape(3, 3)
        assert np.allclose(direction[:, 2], planes[0].normal_lps, atol=1e-5)
        checked += 1
    if "knee" in cohort.name:
        assert checked == 3
