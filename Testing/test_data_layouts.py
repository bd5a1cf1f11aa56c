"""Real data-set layouts on the pretext side: ``--data FORMAT:PATH`` through inspect, prepare and pretrain.

Fixture trees are written from the shared phantom heart cohort (Testing/layouts.py) in the Kaggle
DSB, UK Biobank and M&Ms-2 layouts; ACDC and MRNet trees are made here from the M&Ms-2 volumes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from layouts import DsbQuirks, cohort_subjects, read_heart_subject, write_kaggle_dsb, write_mnms2, write_ukbb

from PlaneSSLLib.data.cache import open_cache
from PlaneSSLLib.data.pairs import line_targets
from PlaneSSLLib.data.sources import detect_format
from PlaneSSLLib.dicom.nifti import planes_from_affine_ras
from PlaneSSLLib.dicom.pixels import read_file_frames, read_position_pixels
from PlaneSSLLib.geometry.lines import image_line
from PlaneSSLLib.preprocess.codes import VIEW_CODES
from training_cli.main import main

PREPARE = ["--size", "32", "--spacing", "6", "--jobs", "1", "--quiet"]
TINY_PRETRAIN = ["data.image_size=32", "data.spacing_mm=6", "data.sigma_px=1.5", "model.base_filters=4",
                 "model.levels=3", "model.location_hidden=8", "optim.epochs=1", "optim.slices_per_subject=2",
                 "optim.batch_size=2", "data.val_fraction=0.5", "data.augment=false", "runtime.tensorboard=false",
                 "runtime.plot=false"]
CONFIG = Path(__file__).resolve().parents[1] / "Resources" / "Configs" / "pretrain_demo.yaml"


@pytest.fixture(scope="module")
def trees(heart_cohort, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    quirks = DsbQuirks(nested=True, missing={1: ("2ch",)}, duplicate_sax=(0,), merged_sax=(1,), respaced_sax=(0,))
    return {
        "cohort": heart_cohort,
        "kaggle-dsb": write_kaggle_dsb(heart_cohort, root / "dsb", quirks),
        "ukbb": write_ukbb(heart_cohort, root / "ukbb", inline_vf=True),
        "mnms2": write_mnms2(heart_cohort, root / "mnms2"),
    }


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_auto_detects_each_layout_and_says_so(trees, capsys):
    for fmt in ("kaggle-dsb", "ukbb", "mnms2"):
        assert detect_format(trees[fmt]) == fmt
        assert main(["inspect", "--data", f"auto:{trees[fmt]}", "--json"]) == 0
        captured = capsys.readouterr()
        assert f"holds the {fmt} layout" in captured.err
        data = json.loads(captured.out)
        assert data["data_format"] == fmt and data["counts"]["usable_series"] >= 2


def test_mispointed_folder_names_expected_layout_and_what_was_found(trees, tmp_path, capsys):
    assert main(["prepare", "--data", f"mnms2:{trees['kaggle-dsb']}", "--out", str(tmp_path / "c"), *PREPARE]) == 2
    err = capsys.readouterr().err
    assert "does not hold the mnms2 layout" in err and "NNN_SA_ED.nii.gz" in err
    assert "train/" in err and "train.csv" in err and "Traceback" not in err
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.txt").write_text("hello")
    assert main(["inspect", "--data", f"auto:{tmp_path / 'odd'}"]) == 2
    err = capsys.readouterr().err
    assert "no known data-set layout" in err and "notes.txt" in err and "ukbb:" in err
    assert main(["inspect", str(tmp_path), "--data", f"ukbb:{trees['ukbb']}"]) == 2  # both forms at once
    assert "give the data set once" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["kaggle-dsb", "ukbb", "mnms2"])
def test_prepare_and_pretrain_each_layout(fmt, trees, tmp_path, capsys):
    assert main(["prepare", "--data", f"{fmt}:{trees[fmt]}", "--out", str(tmp_path / "cache"), "--json",
                 *PREPARE]) == 0
    report = _json(capsys)
    assert report["data_format"] == fmt and report["subjects"] == 2 and not report["scan_errors"]
    cache = open_cache(tmp_path / "cache")
    sax = np.flatnonzero(cache.index["view"] == VIEW_CODES["SAX"])
    lines, valid, _ = line_targets(cache.index, sax, "heart")
    channels = ["2CH", "3CH", "4CH"] if fmt == "ukbb" else ["4CH"]  # DSB and M&Ms-2 have no 3CH
    for view in channels:  # every SAX slice gets the partner's line, as in a DICOM study
        assert valid[:, ["2CH", "3CH", "4CH"].index(view)].all() or (fmt == "kaggle-dsb" and view == "2CH"), view
    assert np.isfinite(cache.index["location"][sax]).all()
    # each SAX slice once (no derived copy); subjects are numbered in the order of their keys, which are
    # keyed hashes (UK Biobank eids: per-installation secret), so the counts are compared as a set
    truths = [read_heart_subject(folder).sax for folder in cohort_subjects(trees["cohort"])]
    counts = np.bincount(cache.index["subject"][sax], minlength=len(truths))
    assert sorted(counts.tolist()) == sorted(len(t) * len(t[0].frames) for t in truths)
    if fmt == "ukbb":
        assert [n for n in report["layout_notes"] if "InlineVF" in n]
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(CONFIG), "--data", f"{fmt}:{trees[fmt]}", "--out", str(out),
                 "--set", "data.cache=null", *TINY_PRETRAIN]) == 0
    err = capsys.readouterr().err
    assert f"{fmt}:{trees[fmt]} -> prepared cache" in err
    assert (out / "model" / "model.safetensors").is_file() and (out / "cache" / "current.json").is_file()
    saved = (out / "config.yaml").read_text()
    assert f"format: {fmt}" in saved and "root: " in saved


def test_kaggle_quirks_handled_and_reported(trees, heart_cohort, tmp_path, capsys):
    assert main(["prepare", "--data", f"kaggle-dsb:{trees['kaggle-dsb']}", "--out", str(tmp_path / "c"),
                 *PREPARE]) == 0
    out = capsys.readouterr().out
    assert "nested one level deeper" in out
    assert "train/train/1/study: SAX series with 2 different pixel spacings" in out
    assert "train/train/2/study: no 2CH series" in out
    assert "train/train/1/study/sax_6: same slice location as sax_" in out  # the re-acquisition is kept
    assert "train/train/2/study/sax_6: one SAX series folder holds 2 slice locations" in out
    index = open_cache(tmp_path / "c").index
    for subject, folder in enumerate(cohort_subjects(heart_cohort)):  # one position per true SAX slice
        n_sax = len(read_heart_subject(folder).sax)
        rows = index[(index["subject"] == subject) & (index["view"] == VIEW_CODES["SAX"])]
        assert int(rows["n_positions"][0]) == n_sax and len(np.unique(rows["position"])) == n_sax


def test_ukbb_broken_members_named_rest_read_and_no_eid(heart_cohort, tmp_path, capsys):
    root = write_ukbb(heart_cohort, tmp_path / "ukbb", broken={0: "truncate", 1: "corrupt"})
    assert main(["prepare", "--data", f"ukbb:{root}", "--out", str(tmp_path / "c"), "--json", *PREPARE]) == 0
    report = _json(capsys)
    errors = {Path(e["path"]).name if e["path"].endswith(".zip") else Path(e["path"]).parent.name: e["reason"]
              for e in report["scan_errors"]}
    assert "1000001_20209_2_0.zip" in errors and "truncated" in errors["1000001_20209_2_0.zip"]  # the member
    assert "1000002_20209_2_0.zip" in errors and "unreadable zip archive" in errors["1000002_20209_2_0.zip"]
    assert report["subjects"] == 2  # the second subject keeps its long-axis views
    assert main(["inspect", "--data", f"ukbb:{root}", "--json"]) == 0
    data = _json(capsys)
    cache_dir = Path(report["cache"])
    shown = [data["studies"], data["ignored_summary"], [p for p in data["problems"] if p["kind"] == "ignored"]]
    assert data["ignored_summary"]  # the manifests are noted (under the pseudonym)
    stored = (cache_dir / "meta.json").read_text() + json.dumps(shown)
    stored += open_cache(cache_dir).index.tobytes().decode("latin-1")
    for secret in ("1000001", "1000002", "planessl-heart-0001"):  # eid, PatientID
        assert secret not in stored


def test_nifti_frames_and_line_targets_agree_with_their_dicom(trees, tmp_path):
    subject = read_heart_subject(cohort_subjects(trees["cohort"])[0])
    import nibabel as nib

    sa = nib.load(str(trees["mnms2"] / "001" / "001_SA_CINE.nii.gz"))
    la = nib.load(str(trees["mnms2"] / "001" / "001_LA_CINE.nii.gz"))
    sa_planes, la_plane = planes_from_affine_ras(sa.affine, sa.shape), planes_from_affine_ras(la.affine, la.shape)[0]
    n = len(subject.sax)
    for k, position in enumerate(subject.sax):  # pixels: frame t*n+k of the cine = the DICOM frame
        dicom_px = read_position_pixels(position)
        nifti_px = read_file_frames(trees["mnms2"] / "001" / "001_SA_CINE.nii.gz", [k, n + k])
        np.testing.assert_array_equal(np.stack(nifti_px), np.round(dicom_px))
        for image, cutting, image_d, cutting_d in ((sa_planes[k], la_plane, position.plane, subject.lax["4CH"].plane),
                                                   (la_plane, sa_planes[k], subject.lax["4CH"].plane, position.plane)):
            a, b = image_line(image, cutting), image_line(image_d, cutting_d)
            va, vb = np.array([a.a, a.b, a.d]), np.array([b.a, b.b, b.d])
            assert min(np.abs(va - vb).max(), np.abs(va + vb).max()) < 0.1  # pixels (|a|,|b| unit)
    # and in the prepared caches: the 4CH line in every SAX slice of subject 0, DICOM vs NIfTI, with the
    # NIfTI in DICOM's voxel order and with its rows stored reversed (the prepared image flips with them)
    flipped = write_mnms2(trees["cohort"], tmp_path / "mnms2_flipped", flip_rows=True)
    rows = {}
    for name, spec in (("dicom", f"dicom:{trees['cohort']}"), ("nifti", f"mnms2:{trees['mnms2']}"),
                       ("flipped", f"mnms2:{flipped}")):
        assert main(["prepare", "--data", spec, "--out", str(tmp_path / name), *PREPARE]) == 0
        index = open_cache(tmp_path / name).index
        sel = np.flatnonzero((index["subject"] == 0) & (index["view"] == VIEW_CODES["SAX"]))
        lines, valid, _ = line_targets(index, sel, "heart")
        order = np.lexsort((index["phase"][sel], index["position"][sel]))
        assert valid[order, 2].all()
        rows[name] = lines[order, 2].astype(np.float64)
    a, b, d = rows["dicom"].T
    height = int(PREPARE[1])
    expected = {"nifti": rows["dicom"], "flipped": np.stack([a, -b, d + b * (height - 1)], axis=1)}  # y -> H-1-y
    for name, want in expected.items():
        assert len(rows[name]) == len(want) > 0
        diff = np.minimum(np.abs(rows[name] - want).max(axis=1), np.abs(rows[name] + want).max(axis=1))
        assert diff.max() < 0.1, (name, diff)
    f, n = rows["flipped"], rows["nifti"]
    same = np.minimum(np.abs(f - n).max(axis=1), np.abs(f + n).max(axis=1))
    assert same.max() > 1.0  # the reversed rows really moved the lines in the prepared grid


def test_acdc_and_mrnet_give_location_only(trees, tmp_path, capsys):
    acdc = tmp_path / "acdc" / "patient001"
    acdc.mkdir(parents=True)
    shutil.copy(trees["mnms2"] / "001" / "001_SA_CINE.nii.gz", acdc / "patient001_4d.nii.gz")
    (acdc / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\nHeight: 180.0\nNbFrame: 2\nWeight: 80.0\n")
    (tmp_path / "acdc" / "patient002").mkdir()
    (tmp_path / "acdc" / "patient002" / "Info.cfg").write_text("ED: 1\n")
    (tmp_path / "acdc" / "patient002" / "patient002_4d.nii.gz").write_bytes(b"not a nifti")  # a broken member
    assert main(["prepare", "--data", f"acdc:{tmp_path / 'acdc'}", "--out", str(tmp_path / "ca"), "--json",
                 *PREPARE]) == 0
    report = _json(capsys)
    assert [Path(e["path"]).name for e in report["scan_errors"]] == ["patient002_4d.nii.gz"]
    index = open_cache(tmp_path / "ca").index
    assert set(index["view"].tolist()) == {VIEW_CODES["SAX"]}
    _, valid, _ = line_targets(index, np.arange(len(index)), "heart")
    assert not valid.any()  # no partner view: no line target
    n = int(index["n_positions"][0])
    # slice order = location order; the prepared image of each row is its NIfTI slice (k = position)
    assert np.allclose(index["location"], index["position"] / (n - 1))
    mrnet = tmp_path / "mrnet"
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for plane in ("sagittal", "coronal", "axial"):
            (mrnet / split / plane).mkdir(parents=True)
            np.save(mrnet / split / plane / "0000.npy", rng.integers(0, 255, (5, 40, 40), dtype=np.uint8))
    assert main(["prepare", "--data", f"auto:{mrnet}", "--out", str(tmp_path / "cm"), "--json", *PREPARE]) == 0
    report = _json(capsys)
    assert report["data_format"] == "mrnet" and report["subjects"] == 2
    index = open_cache(tmp_path / "cm").index
    assert {VIEW_CODES[v] for v in ("SAG", "COR", "AX")} == set(index["view"].tolist())
    _, valid, _ = line_targets(index, np.arange(len(index)), "knee")
    assert not valid.any() and np.allclose(np.sort(np.unique(index["location"])), np.linspace(0, 1, 5))


def test_mnms2_broken_volumes_named_and_the_rest_read(trees, tmp_path, capsys):
    root = shutil.copytree(trees["mnms2"], tmp_path / "mnms2")
    (root / "001" / "001_LA_CINE.nii.gz").write_bytes(b"\x1f\x8b broken")  # falls back on LA ED/ES
    for name in ("002_SA_CINE.nii.gz", "002_SA_ED.nii.gz", "002_SA_ES.nii.gz"):  # subject 002 keeps only its LA
        (root / "002" / name).write_bytes(b"")
    assert main(["prepare", "--data", f"mnms2:{root}", "--out", str(tmp_path / "c"), "--json", *PREPARE]) == 0
    report = _json(capsys)
    named = sorted(Path(e["path"]).name for e in report["scan_errors"])
    assert named == ["001_LA_CINE.nii.gz", "002_SA_CINE.nii.gz", "002_SA_ED.nii.gz", "002_SA_ES.nii.gz"], named
    index = open_cache(tmp_path / "c").index
    la = index[(index["subject"] == 0) & (index["view"] == VIEW_CODES["4CH"])]
    assert len(la) == 2  # ED and ES
    assert report["subjects"] == 2 and report["views"] == {"heart 4CH": 4, "heart SAX": int(report["slices"]) - 4}


@pytest.mark.parametrize("fmt", ["ukbb", "mnms2"])
def test_caches_from_layouts_are_byte_reproducible(fmt, trees, tmp_path):
    digests = []
    for name in ("a", "b"):
        assert main(["prepare", "--data", f"{fmt}:{trees[fmt]}", "--out", str(tmp_path / name), *PREPARE]) == 0
        cache = open_cache(tmp_path / name)
        digests.append([(cache.path / f).read_bytes() for f in ("images.npy", "index.npy")] + [cache.key])
    assert digests[0] == digests[1]
