"""Cardiac segmentation end to end on tiny phantom cohorts: seg cache, fine-tuning, predict seg/lines."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import require_tool

from PlaneSSLLib.data.segmentation import SegDataError, prepare_seg_cache
from PlaneSSLLib.data.splits import choose_labeled_subjects, split_seg_subjects
from PlaneSSLLib.geometry.lines import image_line
from PlaneSSLLib.inference.predict_lines import map_line_between_grids
from PlaneSSLLib.inference.weights import build_manifest, export_weights
from PlaneSSLLib.models import PlaneSSLNet, UNetConfig
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from PlaneSSLLib.preprocess.config import PrepareConfig
from PlaneSSLLib.preprocess.resample import prepared_plane
from PlaneSSLLib.training.finetune_seg import epoch_batches, finetune_config_from_dict, finetune_seg
from training_cli.main import main

PREP = PrepareConfig(spacing_mm=3.0, size_px=64, dtype="float32", anatomy="heart")
TINY = {"model": {"base_filters": 4, "levels": 3}, "optim": {"epochs": 1, "batch_size": 8},
        "runtime": {"progress": "none", "plot": False}}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "heart"
    write_cohort(out, CohortOptions("heart", subjects=4, seed=3, phases=2, matrix=96), workers=1)
    return out


@pytest.fixture(scope="module")
def seg_cache(cohort, tmp_path_factory):
    return prepare_seg_cache(cohort, tmp_path_factory.mktemp("segcache"), PREP)


def _config(cohort: Path, cache: Path, out: Path, **extra):
    raw = {"data": {"dicom": str(cohort), "cache": str(cache), "spacing_mm": 3.0, "image_size": 64,
                    "val_fraction": 0.25, "test_fraction": 0.25}, **TINY, "output": str(out)}
    for key, value in extra.items():
        raw.setdefault(key, {}).update(value)
    return finetune_config_from_dict(raw)


def _export_line_net(path: Path, base_filters: int = 4) -> Path:
    cfg = UNetConfig(base_filters=base_filters, levels=3, line_channels=4, location_hidden=8)
    manifest = build_manifest(
        cfg, "both", views={"SAX": ["2CH", "3CH", "4CH"], "2CH": ["3CH", "4CH", "SAX"]},
        channels=["2CH", "3CH", "4CH", "SAX"], input_size_hw=(64, 64), input_spacing_mm=3.0,
        intensity_normalisation=PREP.normalisation_record())
    return export_weights(PlaneSSLNet(cfg), path, manifest)


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """``planessl ARGS`` run in this process (no interpreter start-up per call)."""

    def run(*args: str) -> _Run:
        code = main(list(args))
        captured = capsys.readouterr()
        return _Run(code, captured.out, captured.err)

    return run


# ---------------------------------------------------------------- data
def test_seg_cache_holds_aligned_ed_es_slices(cohort, seg_cache, tmp_path):
    n_sax = [int(line.split(",")[3]) for line in (cohort / "subjects.csv").read_text().splitlines()[1:]]
    idx = seg_cache.index
    assert len(seg_cache) == 2 * sum(n_sax)
    assert sorted(set(idx["phase_kind"].tolist())) == [0, 1] and set(idx["phase"].tolist()) == {0, 1}
    images, labels = np.asarray(seg_cache.images), np.asarray(seg_cache.labels)
    assert images.shape[1:] == (64, 64) and set(np.unique(labels).tolist()) == {0, 1, 2, 3}
    # bSSFP: blood pools (RV, LV) are bright, the myocardium dark: labels sit on the anatomy
    assert images[labels == 3].mean() > images[labels == 2].mean() + 0.3
    assert images[labels == 1].mean() > images[labels == 2].mean() + 0.3
    for rows in seg_cache.volumes().values():
        assert idx["k"][rows].tolist() == list(range(len(rows)))
    text = (seg_cache.path / "meta.json").read_text()
    assert str(cohort) not in text and "planessl-heart" not in text  # no paths, no PatientID
    again = prepare_seg_cache(cohort, seg_cache.path.parent, PREP)
    assert again.path == seg_cache.path


def test_labels_missing_or_misaligned_are_clear_errors(cohort, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cohort / "subject_0000", data / "subject_0000")
    shutil.copy(cohort / "subjects.csv", data / "subjects.csv")
    label = data / "subject_0000" / "labels" / "sax_ed.nii.gz"
    img = nib.load(str(label))
    affine = img.affine.copy()
    affine[:3, 3] += [0.0, 0.0, 2.5]
    shifted = nib.Nifti1Image(np.asarray(img.dataobj), affine)
    label.write_bytes(gzip.compress(shifted.to_bytes()))
    with pytest.raises(SegDataError, match="sax_ed.nii.gz.*not on a slice|sax_ed.nii.gz.*axes"):
        prepare_seg_cache(data, tmp_path / "c1", PREP)
    shutil.rmtree(data / "subject_0000" / "labels")
    with pytest.raises(SegDataError, match=r"no labels/sax_ed.nii.gz"):
        prepare_seg_cache(data, tmp_path / "c2", PREP)


def test_labeled_subsets_are_deterministic_and_nested():
    keys = [f"k{i}" for i in range(20)]
    pool, val, test = split_seg_subjects(keys, 0.2, 0.2, split_seed=0)
    assert (len(pool), len(val), len(test)) == (12, 4, 4) and not set(pool) & set(val) | set(test) & set(val)
    assert split_seg_subjects(keys, 0.2, 0.2, 0) == (pool, val, test)
    a2, a4 = (choose_labeled_subjects(pool, keys, n, seed=5) for n in (2, 4))
    assert a2 == choose_labeled_subjects(pool, keys, 2, seed=5) and set(a2) <= set(a4) and set(a4) <= set(pool)
    assert choose_labeled_subjects(pool, keys, 4, seed=6) != a4
    with pytest.raises(ValueError, match="between 1 and 12"):
        choose_labeled_subjects(pool, keys, 13, seed=0)


# ---------------------------------------------------------------- fine-tuning and prediction
@pytest.fixture(scope="module")
def finetuned(cohort, seg_cache, tmp_path_factory):
    """One run from a pretrained export (encoder + decoder) through the Python API."""
    base = tmp_path_factory.mktemp("ft")
    pre = _export_line_net(base / "pretrained")
    cfg = _config(cohort, seg_cache.path.parent, base / "pre_run")
    return finetune_seg(cfg, init=str(pre), labeled_subjects=1, seed=0), pre


def test_fixed_steps_per_epoch_do_not_grow_with_labelled_slices():
    # one pass: every slice once, the last batch short
    one_pass = epoch_batches(10, 4, None, seed=3)
    assert [len(b) for b in one_pass] == [4, 4, 2]
    assert sorted(int(i) for b in one_pass for i in b) == list(range(10))
    # fixed steps: the same number of full batches for 10 and 40 labelled slices, each slice drawn equally often
    for n in (10, 40):
        batches = epoch_batches(n, 4, 25, seed=3)
        assert [len(b) for b in batches] == [4] * 25
        counts = np.bincount(np.concatenate([b.numpy() for b in batches]), minlength=n)
        assert counts.max() - counts.min() <= 1
    # fewer slices than a batch: batches of all of them
    assert [len(b) for b in epoch_batches(3, 8, 5, seed=0)] == [3] * 5
    assert not np.array_equal(epoch_batches(10, 4, 5, seed=0)[0], epoch_batches(10, 4, 5, seed=1)[0])


def test_finetune_from_pretrained_exports_seg_weights(finetuned):
    result, _ = finetuned
    manifest = json.loads((result.weights / "manifest.json").read_text())
    assert manifest["task"] == "seg" and manifest["label_names"] == ["background", "RV", "Myo", "LV"]
    codes = {v["short"]: v["value"] for v in manifest["terminology"]["labels"].values()}
    assert codes == {"RV": "53085002", "Myo": "74281007", "LV": "87878005"}
    assert manifest["architecture"]["config"]["line_channels"] == 4
    assert not manifest["architecture"]["config"]["location_head"]
    assert result.transfer_report["kept"] == ["decoder.head.weight", "decoder.head.bias"]
    assert result.labeled_subjects == 1 and result.evaluated_on == "test"
    assert {(r["phase"], r["structure"]) for r in result.rows} == {
        (p, s) for p in ("ED", "ES") for s in ("RV", "Myo", "LV")}
    assert all(r["status"] in ("ok", "empty_pred", "empty_ref", "both_empty") for r in result.rows)
    json.loads((result.output / "result.json").read_text())  # strict JSON: NaN became null
    assert {"metrics.csv", "test_metrics.csv", "config.yaml"} <= {p.name for p in result.output.iterdir()}
    # per-structure validation Dice per epoch, whose mean is the selection score
    with open(result.output / "metrics.csv", newline="") as f:
        epochs = list(csv.DictReader(f))
    assert epochs and all(r["val_dice"] for r in epochs)
    for r in epochs:
        per = [float(r[f"val_dice_{n}"]) for n in ("RV", "Myo", "LV")]
        assert all(0.0 <= d <= 1.0 for d in per) and float(r["val_dice"]) == pytest.approx(sum(per) / 3)
    rows = result.results_rows()
    assert {"task", "init", "labeled_subjects", "seed", "metric", "value"} == set(rows[0])
    # the validation Dice of the kept epoch travels with the test rows (a study chooses between inits on it)
    (val,) = [r["value"] for r in rows if r["metric"] == "val_dice mean"]
    assert val == pytest.approx(result.best_val_dice)
    assert val == pytest.approx(float(epochs[result.best_epoch - 1]["val_dice"]))


def test_finetune_cli_from_scratch_and_errors(cohort, seg_cache, tmp_path, cli):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"data": {"cache": str(seg_cache.path), "spacing_mm": 3.0, "image_size": 64,
                                        "val_fraction": 0.25, "test_fraction": 0.25}, **TINY}))
    out = cli("finetune", "seg", "--config", str(cfg), "--init", "scratch", "--seed", "1", "--out",
               str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert Path(summary["weights"], "model.safetensors").is_file() and summary["evaluated_on"] == "test"
    bad = _export_line_net(tmp_path / "wide", base_filters=8)
    out = cli("finetune", "seg", "--config", str(cfg), "--init", str(bad), "--out", str(tmp_path / "r2"))
    assert out.returncode == 2 and "base_filters 8 vs 4" in out.stderr and "Traceback" not in out.stderr
    out = cli("finetune", "seg", "--config", str(cfg), "--labeled-subjects", "9", "--out", str(tmp_path / "r3"))
    assert out.returncode == 2 and "labeled_subjects" in out.stderr


def test_predict_seg_writes_aligned_nifti_and_valid_dicom_seg(cohort, finetuned, tmp_path, cli):
    import highdicom as hd

    result, line_weights = finetuned
    subject = cohort / "subject_0002"
    out = cli("predict", "seg", str(subject), "--weights", str(result.weights), "--out", str(tmp_path / "p"),
               "--phase", "0", "1")
    assert out.returncode == 0, out.stderr
    phases = json.loads(out.stdout)["phases"]
    assert [p["phase"] for p in phases] == [0, 1]
    ref = nib.load(str(subject / "labels" / "sax_ed.nii.gz"))
    pred = nib.load(phases[0]["nifti"])
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2, 3}
    seg_path = Path(phases[0]["dicom_seg"])
    dciodvfy = require_tool("dciodvfy")
    check = subprocess.run([dciodvfy, str(seg_path)], capture_output=True, text=True)
    assert "Error" not in check.stdout + check.stderr, check.stdout + check.stderr
    seg = hd.seg.segread(seg_path)
    assert [d.SegmentNumber for d in seg.SegmentSequence] == [1, 2, 3]
    assert seg.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "87878005"
    sax_series = {pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID
                  for f in (subject / "study").glob("sax_*/*.dcm")}
    assert {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence} == sax_series
    # errors: weights of another task, missing weights
    out = cli("predict", "seg", str(subject), "--weights", str(line_weights), "--out", str(tmp_path / "q"))
    assert out.returncode == 2 and "not a segmentation network" in out.stderr
    out = cli("predict", "seg", str(subject), "--weights", str(tmp_path / "none"), "--out", str(tmp_path / "q"))
    assert out.returncode == 2 and "no such file" in out.stderr


def test_predict_seg_single_series_layout(finetuned, tmp_path):
    from PlaneSSLLib.inference.dicom_seg import write_dicom_seg
    from PlaneSSLLib.inference.segment import find_study_sax_stack, load_seg_model, segment_stack

    data = tmp_path / "ukbb"
    write_cohort(data, CohortOptions("heart", subjects=1, seed=4, phases=2, matrix=64, layout="ukbb"), workers=1)
    stack = find_study_sax_stack(data / "subject_0000")
    assert len(stack.series) == 1
    result = segment_stack(load_seg_model(finetuned[0].weights), stack, phase=1)
    labels = result.labels.copy()
    labels[len(labels) // 2, 20:30, 20:30] = 3  # make sure some frame is not empty
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, result.planes, [p.frames[1] for p in stack.positions])
    dciodvfy = require_tool("dciodvfy")
    check = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
    assert "Error" not in check.stdout + check.stderr, check.stdout + check.stderr


def test_predicted_line_maps_back_to_original_pixels(cohort):
    """A line in the prepared grid, mapped back, is the geometric line of the original image."""
    from PlaneSSLLib.dicom.planes import plane_from_dataset

    sax = sorted((cohort / "subject_0001" / "study").glob("sax_*/*.dcm"))[0]
    lax = sorted((cohort / "subject_0001" / "study").glob("4ch_*/*.dcm"))[0]
    p_sax, p_lax = (plane_from_dataset(pydicom.dcmread(f, stop_before_pixels=True)) for f in (sax, lax))
    grid = prepared_plane(p_sax, 3.0, 64)
    mapped = map_line_between_grids(image_line(grid, p_lax), grid, p_sax)
    truth = image_line(p_sax, p_lax)
    sign = np.sign(mapped.a * truth.a + mapped.b * truth.b)
    assert np.allclose(sign * np.array([mapped.a, mapped.b, mapped.d]), [truth.a, truth.b, truth.d], atol=1e-6)


def test_predict_lines_json_form(cohort, finetuned, tmp_path, cli):
    _, line_weights = finetuned
    sax = sorted((cohort / "subject_0001" / "study").glob("sax_*/*.dcm"))[0]
    out = cli("predict", "lines", str(sax), "--weights", str(line_weights), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    header = pydicom.dcmread(sax, stop_before_pixels=True)
    rows, cols = int(header.Rows), int(header.Columns)
    assert result["view"] == "SAX" and [p["view"] for p in result["partners"]] == ["2CH", "3CH", "4CH"]
    for entry in result["partners"]:
        assert set(entry) == {"view", "in_a", "confidence"} and 0.0 <= entry["confidence"] <= 1.0
        if entry["in_a"] is not None:
            for x, y in (entry["in_a"]["p0"], entry["in_a"]["p1"]):
                assert -0.5 - 1e-6 <= x <= cols - 0.5 + 1e-6 and -0.5 - 1e-6 <= y <= rows - 0.5 + 1e-6
    seg_weights = finetuned[0].weights
    out = cli("predict", "lines", str(sax), "--weights", str(seg_weights))
    assert out.returncode == 2 and "no line heatmaps" in out.stderr


def test_demo_config_loads_and_bad_keys_are_named():
    from PlaneSSLLib.training.config import ConfigError
    from PlaneSSLLib.training.finetune_seg import load_finetune_config

    path = Path(__file__).resolve().parents[1] / "Resources" / "Configs" / "finetune_seg_demo.yaml"
    cfg = load_finetune_config(path)
    assert (cfg.model.base_filters, cfg.model.levels, cfg.data.image_size) == (8, 4, 96)
    with pytest.raises(ConfigError, match=r"--set: optim.epoch: unknown key \(did you mean 'epochs'\?\)"):
        load_finetune_config(path, ["optim.epoch=3"])
    with pytest.raises(ConfigError, match="init.transfer"):
        load_finetune_config(path, ["init.transfer=decoder"])
