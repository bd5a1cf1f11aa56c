"""Data set adapters on tiny trees built here in each set's own layout, and their errors."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from PlaneSSLLib.data.adapters._common import AdapterError
from PlaneSSLLib.data.adapters.acdc import acdc_subjects, read_info_cfg
from PlaneSSLLib.data.adapters.kaggle_dsb import kaggle_dsb_subjects
from PlaneSSLLib.data.adapters.mnms2 import MNMS2_TO_ACDC, mnms2_subjects
from PlaneSSLLib.data.adapters.mrnet import load_mrnet_stacks, mrnet_exams, relative_slice_locations

INFO = "ED: 1\nES: 3\nGroup: DCM\nHeight: 184.0\nNbFrame: 4\nWeight: 95.0\n"


def _nifti(path, data, spacing=(1.5, 1.5, 10.0)):
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def _labels(shape, values, rng):
    return rng.choice(np.array(values, dtype=np.uint8), size=shape)


# ----------------------------------------------------------------------------- Kaggle DSB
@pytest.fixture(scope="module")
def dsb(heart_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("dsb")
    for i, sid in enumerate((12, 3)):
        study = root / "train" / str(sid) / "study"
        shutil.copytree(heart_cohort / f"subject_{i:04d}" / "study", study)
        shutil.rmtree(study / "3ch_3")  # the Data Science Bowl has no 3CH
    (root / "train.csv").write_text("Id,Systole,Diastole\n3,40.5,120.0\n12,61.0,150.25\n")
    return root


def test_kaggle_dsb_subjects_and_volumes(dsb):
    subjects = kaggle_dsb_subjects(dsb)
    assert [s.subject_id for s in subjects] == [3, 12]
    s = subjects[0]
    assert (s.systole_ml, s.diastole_ml) == (40.5, 120.0)
    assert set(s.series) == {"sax", "2ch", "4ch"} and s.n_sax >= 8
    nums = [int(p.name.split("_")[1]) for p in s.series["sax"]]
    assert nums == sorted(nums)  # sax_5 ... sax_N in numeric order, not text order
    # the scan path reads the same tree and labels the views from geometry
    from PlaneSSLLib.dicom.report import apply_views
    from PlaneSSLLib.dicom.scan import scan_tree

    result = scan_tree(s.study_dir)
    apply_views(result, anatomy_hint="heart")
    views = {x.view for st in result.studies for x in st.series}
    assert {"SAX", "2CH", "4CH"} <= views


def test_kaggle_dsb_errors(dsb, tmp_path):
    bad = tmp_path / "v.csv"
    bad.write_text("Id,Systole,Diastole\n3,abc,120\n")
    with pytest.raises(AdapterError, match=r"v.csv: line 2"):
        kaggle_dsb_subjects(dsb, volumes_csv=bad)
    bad.write_text("Id,ESV,EDV\n3,1,2\n")
    with pytest.raises(AdapterError, match="expected the header Id,Systole,Diastole"):
        kaggle_dsb_subjects(dsb, volumes_csv=bad)
    bad.write_text("Id,Systole,Diastole\n99,1,2\n")
    with pytest.raises(AdapterError, match="names none of the 2 subjects"):
        kaggle_dsb_subjects(dsb, volumes_csv=bad)
    (dsb / "train" / "77").mkdir()
    try:
        with pytest.raises(AdapterError, match=r"77/study: no such directory"):
            kaggle_dsb_subjects(dsb)
    finally:
        (dsb / "train" / "77").rmdir()


# ----------------------------------------------------------------------------- ACDC
def _acdc_subject(root, name, rng, info=INFO, label_values=(0, 1, 2, 3), label_shape=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text(info)
    shape = (12, 10, 3)
    _nifti(folder / f"{name}_4d.nii.gz", rng.random((*shape, 4)).astype(np.float32))
    for frame in (1, 3):
        _nifti(folder / f"{name}_frame{frame:02d}.nii.gz", rng.random(shape).astype(np.float32))
        _nifti(folder / f"{name}_frame{frame:02d}_gt.nii.gz", _labels(label_shape or shape, label_values, rng))


def test_acdc_subjects(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("patient002", "patient001"):
        _acdc_subject(tmp_path, name, rng)
    (tmp_path / "MANDATORY_CITATION.md").write_text("cite")
    subjects = acdc_subjects(tmp_path)
    assert [s.subject for s in subjects] == ["patient001", "patient002"]
    s = subjects[0]
    assert (s.ed_frame, s.es_frame, s.n_frames, s.group, s.height_cm, s.weight_kg) == (1, 3, 4, "DCM", 184.0, 95.0)
    ed = s.phases["ED"]
    assert ed.image.shape == ed.label.shape == (12, 10, 3) and ed.label.dtype == np.uint8
    assert ed.spacing_mm == (1.5, 1.5, 10.0) and ed.affine[2, 2] == 10.0
    assert set(np.unique(ed.label).tolist()) <= {0, 1, 2, 3}
    assert s.phases["ES"].frame == 3 and s.cine_path is not None


@pytest.mark.parametrize("case, message", [
    ("missing_key", r"Info.cfg: missing key\(s\) Weight"),
    ("bad_es", r"Info.cfg: ES = 9 outside 1..NbFrame"),
    ("bad_label", r"_frame01_gt.nii.gz: label values \[4\] outside the convention"),
    ("shape", r"_frame01_gt.nii.gz: label shape .* differs"),
    ("missing_gt", r"_frame03_gt.nii.gz: missing"),
])
def test_acdc_malformed(tmp_path, case, message):
    rng = np.random.default_rng(1)
    info = INFO
    if case == "missing_key":
        info = INFO.replace("Weight: 95.0\n", "")
    elif case == "bad_es":
        info = INFO.replace("ES: 3", "ES: 9")
    _acdc_subject(tmp_path, "patient001", rng, info=info,
                  label_values=(0, 1, 4) if case == "bad_label" else (0, 1, 2, 3),
                  label_shape=(12, 10, 2) if case == "shape" else None)
    if case == "missing_gt":
        (tmp_path / "patient001" / "patient001_frame03_gt.nii.gz").unlink()
    with pytest.raises(AdapterError, match=message):
        acdc_subjects(tmp_path)
    if case == "missing_gt":
        assert acdc_subjects(tmp_path, with_labels=False)[0].phases["ES"].label is None


def test_acdc_info_cfg_numbers(tmp_path):
    p = tmp_path / "Info.cfg"
    p.write_text(INFO.replace("Height: 184.0", "Height: tall"))
    with pytest.raises(AdapterError, match="Height must be a number"):
        read_info_cfg(p)


# ----------------------------------------------------------------------------- M&Ms-2
def _mnms2_tree(root, rng, bad_label=False):
    (root / "dataset_information.csv").write_text(
        "SUBJECT_CODE,DISEASE,VENDOR,SCANNER,FIELD\n1,NOR,SIEMENS,Avanto,1.5\n2,DLV,GE,Signa,3.0\n")
    for code in ("001", "002"):
        folder = root / code
        folder.mkdir()
        for view, shape in (("SA", (10, 10, 4)), ("LA", (12, 12, 1))):
            for phase in ("ED", "ES"):
                _nifti(folder / f"{code}_{view}_{phase}.nii.gz", rng.random(shape).astype(np.float32))
                lab = _labels(shape, (0, 1, 2, 3), rng)
                if bad_label and code == "002" and view == "LA" and phase == "ES":
                    lab[0, 0, 0] = 7
                _nifti(folder / f"{code}_{view}_{phase}_gt.nii.gz", lab)
        _nifti(folder / f"{code}_SA_CINE.nii.gz", rng.random((10, 10, 4, 3)).astype(np.float32))


def test_mnms2_subjects_map_labels_to_acdc(tmp_path):
    rng = np.random.default_rng(2)
    _mnms2_tree(tmp_path, rng)
    subjects = mnms2_subjects(tmp_path)
    assert [s.subject for s in subjects] == ["001", "002"]
    assert subjects[1].info["DISEASE"] == "DLV" and subjects[0].info["VENDOR"] == "SIEMENS"
    assert set(subjects[0].images) == {("SA", "ED"), ("SA", "ES"), ("LA", "ED"), ("LA", "ES")}
    img = subjects[0].images[("SA", "ED")]
    raw = np.asarray(nib.load(str(tmp_path / "001" / "001_SA_ED_gt.nii.gz")).dataobj)
    assert img.label.shape == raw.shape == img.image.shape
    # M&Ms-2 LV=1, Myo=2, RV=3 -> ACDC RV=1, Myo=2, LV=3
    for src, dst in MNMS2_TO_ACDC.items():
        assert (img.label[raw == src] == dst).all()
    assert (img.label[raw == 1] == 3).all() and (img.label[raw == 3] == 1).all()
    assert subjects[0].images[("LA", "ES")].image.shape == (12, 12, 1)


def test_mnms2_malformed(tmp_path):
    rng = np.random.default_rng(3)
    _mnms2_tree(tmp_path, rng, bad_label=True)
    with pytest.raises(AdapterError, match=r"002_LA_ES_gt.nii.gz: label values \[7\]"):
        mnms2_subjects(tmp_path)
    (tmp_path / "002" / "002_LA_ES_gt.nii.gz").unlink()
    with pytest.raises(AdapterError, match=r"002_LA_ES_gt.nii.gz: missing"):
        mnms2_subjects(tmp_path)
    (tmp_path / "dataset_information.csv").write_text("CODE,DISEASE\n1,NOR\n")
    with pytest.raises(AdapterError, match="no SUBJECT_CODE column"):
        mnms2_subjects(tmp_path)


# ----------------------------------------------------------------------------- MRNet
def _mrnet_tree(root, rng):
    for split, ids, labels in (("train", ("0000", "0001", "0002"), (0, 1, 0)), ("valid", ("1130",), (1,))):
        for plane in ("sagittal", "coronal", "axial"):
            (root / split / plane).mkdir(parents=True)
            for i, exam in enumerate(ids):
                n = {"sagittal": 5, "coronal": 4, "axial": 6}[plane] + i
                np.save(root / split / plane / f"{exam}.npy", rng.integers(0, 256, (n, 256, 256), dtype=np.uint8))
        (root / f"{split}-acl.csv").write_text("".join(f"{e},{lab}\n" for e, lab in zip(ids, labels, strict=True)))
        (root / f"{split}-abnormal.csv").write_text("".join(f"{e},1\n" for e in ids))


def test_mrnet_exams_and_exam_dataset(tmp_path):
    from PlaneSSLLib.data.exams import exams_from_mrnet
    from PlaneSSLLib.preprocess.config import PrepareConfig

    rng = np.random.default_rng(4)
    _mrnet_tree(tmp_path, rng)
    exams = mrnet_exams(tmp_path, "train")
    assert [(e.exam_id, e.label) for e in exams] == [("0000", 0), ("0001", 1), ("0002", 0)]
    stacks = load_mrnet_stacks(exams[1])
    assert {v: a.shape[0] for v, a in stacks.items()} == {"SAG": 6, "COR": 5, "AX": 7}
    assert mrnet_exams(tmp_path, "valid")[0].label == 1
    loc = relative_slice_locations(5)
    assert loc[0] == 0.0 and loc[-1] == 1.0 and np.all(np.diff(loc) > 0)
    assert np.isnan(relative_slice_locations(1)).all()
    prepared = exams_from_mrnet(exams[:2], PrepareConfig(size_px=32, dtype="float32"))
    assert prepared[1].label == 1 and prepared[1].stacks["AX"].shape == (7, 32, 32)
    assert 0.0 <= prepared[1].stacks["SAG"].min() and prepared[1].stacks["SAG"].max() <= 1.0


def test_mrnet_malformed(tmp_path):
    rng = np.random.default_rng(5)
    _mrnet_tree(tmp_path, rng)
    (tmp_path / "train-acl.csv").write_text("case,label\n0000,0\n")
    with pytest.raises(AdapterError, match=r"train-acl.csv: line 1: exam id must be a number"):
        mrnet_exams(tmp_path)
    (tmp_path / "train-acl.csv").write_text("0000,2\n")
    with pytest.raises(AdapterError, match=r"train-acl.csv: line 1: label must be 0 or 1"):
        mrnet_exams(tmp_path)
    (tmp_path / "train-acl.csv").write_text("0000,0\n0007,1\n")
    with pytest.raises(AdapterError, match=r"0007.npy: missing"):
        mrnet_exams(tmp_path)
    (tmp_path / "train-acl.csv").write_text("0000,0\n")
    np.save(tmp_path / "train" / "axial" / "0000.npy", np.zeros((3, 128, 128), dtype=np.uint8))
    with pytest.raises(AdapterError, match=r"axial/0000.npy: expected \(slices, 256, 256\)"):
        load_mrnet_stacks(mrnet_exams(tmp_path)[0])
