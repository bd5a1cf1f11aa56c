"""Naming a data set (FORMAT:PATH) and NIfTI planes: parsing, layout detection, messages, affine round trip."""

from __future__ import annotations

import numpy as np
import pytest

from PlaneSSLLib.data.sources import DataSourceError, DataSpec, detect_format, parse_data_spec, resolve_data_spec
from PlaneSSLLib.dicom.nifti import planes_from_affine_ras, slice_image, stack_affine_ras
from PlaneSSLLib.geometry.planes import ImagePlane


def test_parse_forms(tmp_path):
    assert parse_data_spec(f"acdc:{tmp_path}") == DataSpec("acdc", tmp_path)
    assert parse_data_spec(f"KAGGLE-DSB:{tmp_path}").format == "kaggle-dsb"
    assert parse_data_spec(str(tmp_path)).format == "auto"
    assert parse_data_spec("C:/data/acdc") == DataSpec("auto", parse_data_spec("C:/data/acdc").root)
    with pytest.raises(DataSourceError, match="unknown format 'nifty'"):
        parse_data_spec("nifty:/x")
    with pytest.raises(DataSourceError, match="no path"):
        parse_data_spec("acdc:")


def test_detect_and_mispointed(tmp_path):
    acdc = tmp_path / "acdc"
    (acdc / "patient001").mkdir(parents=True)
    (acdc / "patient001" / "Info.cfg").write_text("ED: 1\n")
    assert detect_format(acdc) == "acdc"
    mrnet = tmp_path / "mrnet"
    (mrnet / "train" / "sagittal").mkdir(parents=True)
    assert resolve_data_spec(f"auto:{mrnet}") == DataSpec("mrnet", mrnet)
    with pytest.raises(DataSourceError) as err:
        resolve_data_spec(f"acdc:{mrnet}")
    assert "acdc layout" in str(err.value) and "train/" in str(err.value)
    with pytest.raises(DataSourceError, match="cannot be used here"):
        resolve_data_spec(f"mrnet:{mrnet}", allowed=("acdc", "mnms2"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataSourceError, match="no known data-set layout"):
        detect_format(empty)
    with pytest.raises(DataSourceError, match="no such folder"):
        resolve_data_spec(f"acdc:{tmp_path / 'missing'}")


def test_nifti_planes_invert_the_stack_affine():
    x = np.array([0.8, 0.6, 0.0])
    y = np.array([0.0, 0.0, -1.0])
    normal = np.cross(x, y)
    planes = [ImagePlane(np.array([1.0, 2.0, 3.0]) + 8.0 * k * normal, x, y, (1.5, 1.2), (100, 120)) for k in range(5)]
    back = planes_from_affine_ras(stack_affine_ras(planes), (120, 100, 5))
    for a, b in zip(planes, back, strict=True):
        assert np.allclose(a.origin_lps, b.origin_lps) and np.allclose(a.x_dir_lps, b.x_dir_lps)
        assert np.allclose(a.y_dir_lps, b.y_dir_lps)
        assert a.spacing_mm == pytest.approx(b.spacing_mm) and a.shape_px == b.shape_px
    vol = np.arange(120 * 100 * 5).reshape(120, 100, 5)
    assert slice_image(vol, 2).shape == (100, 120) and slice_image(vol, 2)[3, 7] == vol[7, 3, 2]
