"""Labelled public data sets through the commands: ACDC and M&Ms-2 (finetune seg, experiment transfer,
predict seg on NIfTI) and MRNet (finetune acl), on fixture trees in their real layouts (Testing/layouts_labelled.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from layouts import write_mnms2
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


@pytest.fixture(scope="module")
def acdc_run(acdc, tmp_path_factory) -> tuple[Path, str, str]:
    """``planessl finetune seg --data acdc:...`` once for the module: (output folder, stdout, stderr)."""
    out = tmp_path_factory.mktemp("acdc_run")
    code = main(["finetune", "seg", "--config", str(SEG_CONFIG), "--data", f"acdc:{acdc}", "--out", str(out / "run"),
                 "--set", *TINY_SEG, f"data.cache={out / 'cache'}"])
    assert code == 0
    return out / "run", (out / "run" / "result.json").read_text(), ""


def test_finetune_seg_on_acdc_cli(acdc, acdc_run):
    run, result, _ = acdc_run
    assert json.loads(result)["evaluated_on"] == "test"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["format"] == "acdc" and saved["data"]["root"] == str(acdc) and saved["data"]["dicom"] is None
    assert (run / "model" / "model.safetensors").is_file()
    rows = (run / "test_metrics.csv").read_text()
    assert "patient" not in rows and "dice" in rows.splitlines()[0]


def test_finetune_seg_on_mnms2_cli(heart_cohort, tmp_path, capsys):
    """M&Ms-2's labels (LV 1, RV 3) arrive in ACDC's convention: the cache equals the DICOM study's."""
    mnms2 = write_mnms2(heart_cohort, tmp_path / "dataset", cine=False)
    from_dicom = prepare_seg_cache(heart_cohort, tmp_path / "c1", PREP)
    from_nifti = prepare_seg_cache(DataSpec("mnms2", mnms2), tmp_path / "c2", PREP)
    assert from_nifti.subject_groups == ["NOR", "DLV"] and len(from_nifti.index) == len(from_dicom.index)
    for kind in (0, 1):
        a, b = (np.flatnonzero((c.index["phase_kind"] == kind) & (c.index["subject"] == 0))
                for c in (from_dicom, from_nifti))
        a = sorted(a, key=lambda i: from_dicom.index["location_mm"][i])
        b = sorted(b, key=lambda i: from_nifti.index["location_mm"][i])
        assert len(a) == len(b) > 0
        for i, j in zip(a, b, strict=True):
            assert np.array_equal(from_dicom.labels[i], from_nifti.labels[j])
    code, out, err = _cli(capsys, "finetune", "seg", "--config", str(SEG_CONFIG), "--data", f"mnms2:{mnms2}",
                          "--out", str(tmp_path / "run"), "--set", *TINY_SEG, f"data.cache={tmp_path / 'cache'}")
    assert code == 0, err
    assert json.loads(out)["task"] == "seg"


def test_experiment_transfer_on_acdc(acdc, acdc_run, tmp_path, capsys):
    cache = acdc_run[0].parent / "cache"  # the seg cache of the same data and settings is reused by key
    exp = {"task": "seg", "finetune_config": str(SEG_CONFIG), "labeled_subjects": [1], "seeds": [0],
           "inits": {"scratch": "scratch"},
           "finetune_overrides": {"data.format": "acdc", "data.root": str(acdc), "data.cache": str(cache),
                                  **{k: yaml.safe_load(v) for k, v in (i.split("=", 1) for i in TINY_SEG)}}}
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(exp))
    code, out, err = _cli(capsys, "experiment", "transfer", "--config", str(cfg), "--out", str(tmp_path / "exp"))
    assert code == 0, err
    rows = (tmp_path / "exp" / "results.csv").read_text().splitlines()
    assert rows[0] == "task,init,labeled_subjects,seed,metric,value" and any(",dice mean," in r for r in rows)


def test_predict_seg_on_acdc_nifti(acdc, acdc_run, tmp_path, capsys):
    weights = acdc_run[0] / "model"
    frame = acdc / "patient001" / "patient001_frame01.nii.gz"
    code, out, err = _cli(capsys, "predict", "seg", f"acdc:{frame}", "--weights", str(weights), "--out", str(tmp_path))
    assert code == 0, err
    result = json.loads(out)
    assert result["input"] == "nifti" and "dicom_seg" not in out
    src, pred = nib.load(frame), nib.load(result["frames"][0]["nifti"])
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine) and pred.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2, 3}
    assert not list(tmp_path.glob("*.dcm"))
    # a 4D cine: every frame on its grid; --ed-es: the frames Info.cfg names
    cine = acdc / "patient001" / "patient001_4d.nii.gz"
    code, out, err = _cli(capsys, "predict", "seg", str(cine), "--weights", str(weights), "--out", str(tmp_path / "c"))
    assert code == 0, err
    pred = nib.load(json.loads(out)["frames"][0]["nifti"])
    assert pred.shape == nib.load(cine).shape
    code, out, err = _cli(capsys, "predict", "seg", str(cine), "--weights", str(weights), "--ed-es",
                          "--out", str(tmp_path / "e"))
    assert code == 0, err
    assert [f["frame"] for f in json.loads(out)["frames"]] == [0, 1]


def test_predict_seg_refuses_what_is_not_a_sax_volume(acdc, acdc_run, tmp_path, capsys):
    weights = acdc_run[0] / "model"
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 1), np.float32) * 100, np.eye(4)), flat)
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    label = acdc / "patient001" / "patient001_frame01_gt.nii.gz"
    cases = ((flat, "a 2D image"), (text, "not a readable NIfTI volume"), (label, "looks like a label map"))
    for path, message in cases:
        code, out, err = _cli(capsys, "predict", "seg", str(path), "--weights", str(weights), "--out", str(tmp_path))
        assert code == 2 and out == "" and message in err and str(path) in err and "Traceback" not in err


def test_finetune_seg_mis_pointed_folder_is_one_clear_message(heart_cohort, tmp_path, capsys):
    code, out, err = _cli(capsys, "finetune", "seg", "--config", str(SEG_CONFIG), "--data", f"acdc:{heart_cohort}",
                          "--out", str(tmp_path / "run"), "--set", *TINY_SEG)
    assert code == 2 and out == ""
    assert "does not hold the acdc layout" in err and "subject_0000/" in err and "Traceback" not in err
    code, _, err = _cli(capsys, "finetune", "seg", "--config", str(SEG_CONFIG), "--data", f"mrnet:{heart_cohort}",
                        "--out", str(tmp_path / "run"))
    assert code == 2 and "data.format: must be one of 'phantom', 'dicom', 'acdc', 'mnms2'" in err and "mrnet" in err
    code, out, err = _cli(capsys, "finetune", "acl", "--config", str(ACL_CONFIG), "--data", f"mrnet:{heart_cohort}",
                          "--out", str(tmp_path / "acl"))
    assert code == 2 and out == "" and "does not hold the mrnet layout" in err and "Traceback" not in err


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
    valid = sorted((mrnet / "valid" / "axial").glob("*.npy"))[0].stem
    code, out, err = _cli(capsys, "predict", "acl", f"mrnet:{mrnet}", "--exam", f"valid/{valid}",
                          "--weights", str(tmp_path / "acl" / "model"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert 0.0 <= result["probability"] <= 1.0 and result["inputs"]["SAG"]["slices"] > 0
    code, _, err = _cli(capsys, "predict", "acl", f"mrnet:{mrnet}", "--exam", "valid/9999",
                        "--weights", str(tmp_path / "acl" / "model"))
    assert code == 2 and "9999.npy" in err


def test_mrnet_broken_exam_is_named_and_the_rest_used(mrnet, tmp_path, caplog):
    from PlaneSSLLib.training.finetune_acl import AclDataConfig, load_exams

    tree = tmp_path / "MRNet-v1.0"
    shutil.copytree(mrnet, tree)
    (tree / "train" / "coronal" / "0001.npy").unlink()
    (tree / "train" / "axial" / "0002.npy").write_bytes(b"not numpy")
    prep = PrepareConfig(spacing_mm=1.0, size_px=32, dtype="float32", anatomy="knee")
    exams = load_exams(AclDataConfig(format="mrnet", root=str(tree)), prep, memo=False)
    n_train = len(list((mrnet / "train" / "axial").glob("*.npy")))
    assert len(exams) == n_train - 2 and "mrnet-train-0001" not in {e.key for e in exams}
    assert "train/coronal/0001.npy: missing" in caplog.text and "train/axial/0002.npy: not a readable" in caplog.text


def test_predict_lines_on_mnms2_nifti_equals_the_dicom_it_was_written_from(heart_cohort, tmp_path, capsys):
    """The LA NIfTI slice (plane from the affine) gives the same predicted lines as its DICOM 4CH image."""
    import pydicom

    from PlaneSSLLib.dicom.nifti import slice_image
    from PlaneSSLLib.inference.weights import build_manifest, export_weights
    from PlaneSSLLib.models import PlaneSSLNet, UNetConfig

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = UNetConfig(base_filters=4, levels=3, line_channels=4, location_hidden=8)
    manifest = build_manifest(cfg, "both", views={"4CH": ["2CH", "3CH", "SAX"], "SAX": ["2CH", "3CH", "4CH"]},
                              channels=["2CH", "3CH", "4CH", "SAX"], input_size_hw=(64, 64), input_spacing_mm=3.0,
                              intensity_normalisation=PREP.normalisation_record())
    weights = export_weights(PlaneSSLNet(cfg), tmp_path / "w", manifest)
    mnms2 = write_mnms2(heart_cohort, tmp_path / "dataset", cine=False)
    la = mnms2 / "001" / "001_LA_ED.nii.gz"
    la_pixels = slice_image(np.asarray(nib.load(la).dataobj), 0)
    dicom = next(p for p in sorted((heart_cohort / "subject_0000" / "study").glob("4ch_*/*.dcm"))
                 if np.array_equal(pydicom.dcmread(p).pixel_array.astype(np.int16), la_pixels))
    results = []
    for image in (f"mnms2:{la}", str(dicom)):
        code, out, err = _cli(capsys, "predict", "lines", image, "--weights", str(weights), "--view", "4CH", "--json")
        assert code == 0, err
        results.append(json.loads(out))
    assert results[0]["view"] == results[1]["view"] == "4CH"
    for a, b in zip(results[0]["partners"], results[1]["partners"], strict=True):
        assert a["view"] == b["view"] and abs(a["confidence"] - b["confidence"]) < 1e-3
        assert (a["in_a"] is None) == (b["in_a"] is None)
        if a["in_a"] is not None:
            assert np.allclose(a["in_a"]["p0"], b["in_a"]["p0"], atol=0.1)
            assert np.allclose(a["in_a"]["p1"], b["in_a"]["p1"], atol=0.1)


@pytest.mark.parametrize("flag, value", [("--seed", "-3"), ("--labeled-subjects", "0"), ("--seed", "two")])
def test_run_flags_are_checked_by_their_own_name(flag, value, tmp_path, capsys):
    from training_cli.main import main

    argv = ["finetune", "seg", "--config", "Resources/Configs/finetune_seg_demo.yaml", flag, value,
            "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {flag}:" in err and "runtime.seed" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
