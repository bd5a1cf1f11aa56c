"""Labelled public data sets through the commands: ACDC and M&Ms-2 (finetune seg, experiment transfer,
predict seg on NIfTI) and MRNet (finetune acl), on fixture trees in their real layouts (Testing/layouts_labelled.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from layouts_labelled import write_acdc, write_mrnet

from PlaneSSLLib.data.adapters.acdc import acdc_subjects
from PlaneSSLLib.data.segmentation import prepare_seg_cache
from PlaneSSLLib.data.sources import DataSpec
from PlaneSSLLib.preprocess.config import PrepareConfig
from training_cli.main import main

PREP = PrepareConfig(spacing_mm=3.0, size_px=64, dtype="float32", anatomy="heart")
TINY_SEG = ["model.base_filters=4", "model.levels=3", "optim.epochs=1", "optim.batch_size=8", "runtime.progress=none",
            "runtime.plot=false", "data.spacing_mm=3.0", "data.image_size=64", "data.val_fraction=0.25",
            "data.test_fraction=0.25"]
SEG_CONFIG = Path(__file__).resolve().parents[1] / "Resources" / "Configs" / "finetune_seg_demo.yaml"
ACL_CONFIG = Path(__file__).resolve().parents[1] / "Resources" / "Configs" / "finetune_acl_demo.yaml"


@pytest.fixture(scope="module")
def acdc(heart_cohort, tmp_path_factory) -> Path:
    return write_acdc(heart_cohort, tmp_path_factory.mktemp("acdc") / "training")


@pytest.fixture(scope="module")
def mrnet(knee_cohort, tmp_path_factory) -> Path:
    return write_mrnet(knee_cohort, tmp_path_factory.mktemp("mrnet") / "MRNet-v1.0")


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_acdc_fixture_follows_the_release(acdc):
    names = sorted(p.name for p in (acdc / "patient001").iterdir())
    assert names == ["Info.cfg", "patient001_4d.nii.gz", "patient001_frame01.nii.gz", "patient001_frame01_gt.nii.gz",
                     "patient001_frame02.nii.gz", "patient001_frame02_gt.nii.gz"]
    subjects = acdc_subjects(acdc)
    assert [s.subject for s in subjects] == ["patient001", "patient002", "patient003", "patient004"]
    assert [s.group for s in subjects] == ["DCM", "HCM", "MINF", "NOR"]
    ph = subjects[0].phases["ED"]
    assert ph.image.ndim == 3 and ph.label.shape == ph.image.shape and set(np.unique(ph.label)) == {0, 1, 2, 3}


def test_acdc_seg_cache_matches_the_dicom_it_was_written_from(heart_cohort, tmp_path):
    """With the DICOM geometry in the affine, the ACDC volumes prepare into the same slices as the DICOM study."""
    one = tmp_path / "one"
    shutil.copytree(heart_cohort / "subject_0000", one / "subject_0000")
    shutil.copy(heart_cohort / "subjects.csv", one / "subjects.csv")
    acdc = write_acdc(one, tmp_path / "acdc", copies=1, oriented=True)
    from_dicom = prepare_seg_cache(one, tmp_path / "c1", PREP)
    from_nifti = prepare_seg_cache(DataSpec("acdc", acdc), tmp_path / "c2", PREP)
    assert len(from_dicom.index) == len(from_nifti.index) > 0
    a = {(int(r["phase_kind"]), round(float(r["location_mm"]), 3)): i for i, r in enumerate(from_dicom.index)}
    b = {(int(r["phase_kind"]), round(float(r["location_mm"]), 3)): i for i, r in enumerate(from_nifti.index)}
    assert a.keys() == b.keys()
    for key, i in a.items():
        j = b[key]
        np.testing.assert_allclose(from_dicom.images[i], from_nifti.images[j], atol=1e-4)
        assert np.array_equal(from_dicom.labels[i], from_nifti.labels[j])
    assert from_nifti.subject_groups == ["DCM"]


def test_acdc_broken_subject_is_named_and_the_rest_used(acdc, tmp_path, caplog):
    tree = tmp_path / "training"
    shutil.copytree(acdc, tree)
    (tree / "patient002" / "patient002_frame02_gt.nii.gz").unlink()
    (tree / "patient003" / "Info.cfg").write_text("ED: 1\n")
    cache = prepare_seg_cache(DataSpec("acdc", tree), tmp_path / "cache", PREP)
    assert cache.n_subjects == 2 and cache.subject_groups == ["DCM", "NOR"]
    told = caplog.text  # the user is told the file and the problem
    assert f"{tree}/patient002/patient002_frame02_gt.nii.gz: missing" in told
    assert f"{tree}/patient003/Info.cfg: missing key" in told
    notes = " ".join(cache.meta["notes"])  # the cache names subjects by hashed key only
    assert len(cache.meta["notes"]) == 2
    assert "_frame02_gt.nii.gz: missing" in notes and "/Info.cfg: missing key" in notes
    assert "patient00" not in (cache.path / "meta.json").read_text()


def test_finetune_seg_on_acdc_cli(acdc, tmp_path, capsys):
    code, out, err = _cli(capsys, "finetune", "seg", "--config", str(SEG_CONFIG), "--data", f"acdc:{acdc}",
                          "--out", str(tmp_path / "run"), "--set", *TINY_SEG, f"data.cache={tmp_path / 'cache'}")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["task"] == "seg" and summary["metric"] == "dice mean" and summary["evaluated_on"] == "test"
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["format"] == "acdc" and saved["data"]["root"] == str(acdc) and saved["data"]["dicom"] is None
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_finetune_seg_mis_pointed_folder_is_one_clear_message(heart_cohort, tmp_path, capsys):
    code, out, err = _cli(capsys, "finetune", "seg", "--config", str(SEG_CONFIG), "--data", f"acdc:{heart_cohort}",
                          "--out", str(tmp_path / "run"), "--set", *TINY_SEG)
    assert code == 2 and out == ""
    assert "does not hold the acdc layout" in err and "subject_0000/" in err and "Traceback" not in err
    code, _, err = _cli(capsys, "finetune", "seg", "--config", str(SEG_CONFIG), "--data", f"mrnet:{heart_cohort}",
                        "--out", str(tmp_path / "run"))
    assert code == 2 and "data.format: must be one of 'phantom', 'dicom', 'acdc', 'mnms2'" in err and "mrnet" in err


def test_finetune_acl_on_mrnet_cli(mrnet, tmp_path, capsys):
    code, out, err = _cli(capsys, "finetune", "acl", "--config", str(ACL_CONFIG), "--data", f"mrnet:{mrnet}",
                          "--out", str(tmp_path / "acl"), "--set", "optim.epochs=1", "data.max_slices=4",
                          "data.image_size=32", "runtime.progress=none", "runtime.plot=false",
                          "evaluation.bootstrap=10")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["task"] == "acl" and summary["metric"] == "auc"
    saved = yaml.safe_load((tmp_path / "acl" / "config.yaml").read_text())
    assert saved["data"]["format"] == "mrnet"
