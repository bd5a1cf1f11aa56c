"""PretextDataset line/location targets, partner choice, SubjectEpochSampler, subject split."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PlaneSSLLib.data.cache import open_cache  # noqa: E402
from PlaneSSLLib.data.datasets import NoPartnerWarning, PretextDataset  # noqa: E402
from PlaneSSLLib.data.pairs import PairConfig, representative_rows  # noqa: E402
from PlaneSSLLib.data.prepare import prepare_cache  # noqa: E402
from PlaneSSLLib.data.sampler import SubjectEpochSampler  # noqa: E402
from PlaneSSLLib.data.splits import split_subjects  # noqa: E402
from PlaneSSLLib.data.targets import line_heatmaps  # noqa: E402
from PlaneSSLLib.dicom.nifti import read_label_nifti  # noqa: E402
from PlaneSSLLib.geometry import image_line  # noqa: E402
from PlaneSSLLib.geometry.frames import ras_to_lps  # noqa: E402
from PlaneSSLLib.phantoms import CohortOptions, acl_torn, plan_knee_stacks, sample_knee, write_cohort  # noqa: E402
from PlaneSSLLib.preprocess.codes import VIEW_CODES, VIEW_NAMES  # noqa: E402
from PlaneSSLLib.preprocess.config import PrepareConfig  # noqa: E402

CONFIG = PrepareConfig(spacing_mm=2.5, size_px=96)


@pytest.fixture(scope="module")
def heart(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("heart")
    write_cohort(root / "data", CohortOptions("heart", subjects=3, seed=5, phases=2, matrix=96), workers=1)
    report = prepare_cache(root / "data", root / "cache", CONFIG)
    return root / "data", report.cache_dir


@pytest.fixture(scope="module")
def knee(knee_cohort, tmp_path_factory) -> Path:
    return prepare_cache(knee_cohort, tmp_path_factory.mktemp("knee_cache"), CONFIG).cache_dir


def test_items_shapes_and_types(heart):
    ds = PretextDataset(open_cache(heart[1]))
    assert ds.channels == ("2CH", "3CH", "4CH", "SAX") and ds.n_channels == 4
    item = ds[0]
    assert item["image"].shape == (1, 96, 96) and item["image"].dtype == torch.float32
    assert item["lines"].shape == (4, 3) and item["lines"].dtype == torch.float32
    assert item["line_valid"].shape == (4,) and item["line_valid"].dtype == torch.bool
    assert item["location"].shape == () and item["location_valid"].dtype == torch.bool
    assert item["subject"].dtype == torch.int64 and item["view"].dtype == torch.int64
    a, b = ds.lines[..., 0], ds.lines[..., 1]
    assert torch.allclose(a * a + b * b, torch.ones_like(a), atol=1e-5)
    # the self-view channel is always masked; SAX slices get all three long-axis lines
    for k, view in enumerate(ds.channels):
        assert not ds.line_valid[ds.view == VIEW_CODES[view], k].any()
    sax = ds.view == VIEW_CODES["SAX"]
    assert ds.line_valid[sax, :3].all() and ds.location_valid[sax].all()
    assert ds.line_valid[~sax].sum(dim=1).eq(3).all() and not ds.location_valid[~sax].any()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    heat = line_heatmaps(batch["lines"], batch["line_valid"], (96, 96), sigma_px=2.0)
    assert heat.shape == (5, 4, 96, 96)
    assert all(heat[i, k].max() > 0.5 for i in range(5) for k in range(4) if batch["line_valid"][i, k])


def test_lines_equal_image_line_of_prepared_planes(heart):
    cache = open_cache(heart[1])
    ds = PretextDataset(cache)
    reps = representative_rows(cache.index)
    ix = cache.index
    for i in range(len(ds)):
        row = int(ds.rows[i])
        for k, view in enumerate(ds.channels):
            if not ds.line_valid[i, k]:
                continue
            partner = reps[(int(ix["study"][row]), VIEW_CODES[view])]
            if view == "SAX":  # mid-ventricular slice of the stack
                assert ix["position"][partner] == (ix["n_positions"][partner] - 1) // 2
            ref = image_line(cache.plane(row), cache.plane(partner))
            np.testing.assert_allclose(ds.lines[i, k].numpy(), [ref.a, ref.b, ref.d], rtol=1e-5, atol=1e-4)


def test_long_axis_lines_pass_through_the_lv_on_mid_sax_slices(heart):
    data, cache_dir = heart
    cache = open_cache(cache_dir)
    ds = PretextDataset(cache)
    ix = cache.index
    checked = 0
    for subject in range(cache.n_subjects):
        labels, affine_ras = read_label_nifti(data / f"subject_{subject:04d}" / "labels" / "sax_ed.nii.gz")
        rows = np.flatnonzero((ds.subject.numpy() == subject) & (ds.view.numpy() == VIEW_CODES["SAX"])
                              & (ix["phase"][ds.rows] == 0))
        n = int(ix["n_positions"][ds.rows[rows[0]]])
        for i in rows:
            pos = int(ix["position"][ds.rows[i]])
            if not n // 4 <= pos <= n // 2:  # mid-ventricular slices
                continue
            cols, rws = np.nonzero(labels[:, :, pos] == 3)  # ACDC LV cavity, (col, row, slice) voxels
            assert len(cols) > 5
            centre_ras = affine_ras @ np.array([cols.mean(), rws.mean(), pos, 1.0])
            xy, _ = cache.plane(int(ds.rows[i])).lps_to_pixel(ras_to_lps(centre_ras[:3]))
            for view in ("2CH", "4CH"):
                a, b, d = ds.lines[i, ds.channels.index(view)].tolist()
                assert abs(a * xy[0] + b * xy[1] + d) * CONFIG.spacing_mm < 2.0, (subject, pos, view)
            checked += 1
    assert checked >= 3


def test_view_without_partners_is_masked_and_warned(heart, tmp_path):
    data = tmp_path / "sax_only"
    shutil.copytree(heart[0] / "subject_0000", data / "subject_0000")
    for folder in ("2ch_2", "3ch_3", "4ch_4"):
        shutil.rmtree(data / "subject_0000" / "study" / folder)
    report = prepare_cache(data, tmp_path / "cache", PrepareConfig(spacing_mm=2.5, size_px=96, anatomy="heart"))
    assert any("no valid partner line" in w and "SAX" in w for w in report.warnings)
    with pytest.warns(NoPartnerWarning, match="SAX slices have no valid partner line"):
        ds = PretextDataset(open_cache(report.cache_dir))
    assert len(ds) > 0 and not ds.line_valid.any()
    assert ds.location_valid.all()  # the location task still trains


def test_knee_channels(knee):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoPartnerWarning)
        ds = PretextDataset(open_cache(knee))
    assert ds.channels == ("SAG", "COR", "AX")
    for k, view in enumerate(ds.channels):
        own = ds.view == VIEW_CODES[view]
        assert not ds.line_valid[own, k].any()
        assert ds.line_valid[own].sum(dim=1).eq(2).all()
    assert ds.location_valid.all()


def _knee_angle_to_deg(lines: torch.Tensor, direction_xy: tuple[float, float]) -> np.ndarray:
    """Angle (deg) between each line (a, b, d) and the pixel direction ``direction_xy``."""
    a, b = lines[:, 0].numpy(), lines[:, 1].numpy()
    along = np.abs(-b * direction_xy[0] + a * direction_xy[1])  # |line direction (-b, a) . direction|
    return np.degrees(np.arccos(np.clip(along, 0.0, 1.0)))


def test_knee_partner_lines_are_fixed_anatomical_planes(knee):
    """Every axial slice's COR and SAG lines run through the joint centre (the middle coronal slice lies 2 mm behind
    it, the middle sagittal slice through it: the simple knee's coverage), so both are identifiable from the image.
    The COR channel is the one whose direction depends on the input view (vertical in SAG images, horizontal in AX
    images; SAG lines are vertical and AX lines horizontal in every view that has them): a network must tell an
    axial from a sagittal image to draw it, which is why AX <- COR is the last knee pair it learns."""
    cache = open_cache(knee)
    ds = PretextDataset(cache)
    ix = cache.index
    anatomies = [sample_knee(np.random.default_rng([1, i, 0]), acl_torn(1, i)) for i in range(5)]
    sag_normals = [plan_knee_stacks(k, np.random.default_rng([1, i, 1]), 64)["SAG"].planes[0].normal_lps
                   for i, k in enumerate(anatomies)]
    ax = ds.view.numpy() == VIEW_CODES["AX"]
    checked = 0
    for subject in range(cache.n_subjects):
        rows = np.flatnonzero(ax & (ds.subject.numpy() == subject))
        sag_row = int(np.flatnonzero((ix["subject"] == subject) & (ix["view"] == VIEW_CODES["SAG"]))[0])
        normal = cache.plane(sag_row).normal_lps
        knee = anatomies[int(np.argmax([abs(float(normal @ n)) for n in sag_normals]))]
        for i in rows:
            # the joint centre projected along the axial normal
            xy, _ = cache.plane(int(ds.rows[i])).lps_to_pixel(knee.origin_lps)
            for view, expected_mm in (("COR", 2.0), ("SAG", 0.0)):
                a, b, d = ds.lines[i, ds.channels.index(view)].tolist()
                assert abs(abs(a * xy[0] + b * xy[1] + d) * CONFIG.spacing_mm - expected_mm) < 4.0, (subject, view)
            checked += 1
    assert checked >= 5 * 20
    view = ds.view.numpy()
    k = {name: ds.channels.index(name) for name in ds.channels}
    vertical, horizontal = (0.0, 1.0), (1.0, 0.0)
    for image_view, channel, direction in (("SAG", "COR", vertical), ("AX", "COR", horizontal),
                                           ("COR", "SAG", vertical), ("AX", "SAG", vertical),
                                           ("SAG", "AX", horizontal), ("COR", "AX", horizontal)):
        sel = torch.from_numpy(view == VIEW_CODES[image_view])
        angles = _knee_angle_to_deg(ds.lines[sel, k[channel]], direction)
        assert np.median(angles) < 15.0 and angles.max() < 30.0, (image_view, channel, np.median(angles))


def test_pair_config_variants(heart):
    cache = open_cache(heart[1])
    ds = PretextDataset(cache, pairs=PairConfig().without_sax_for_long_axis())
    lax = ds.view != VIEW_CODES["SAX"]
    assert not ds.line_valid[lax, 3].any() and ds.line_valid[lax].sum(dim=1).eq(2).all()
    basal = PretextDataset(cache, pairs=PairConfig(sax_partner="basal"))
    reps = representative_rows(cache.index, "basal")
    assert all(cache.index["position"][r] == 0 for (s, v), r in reps.items() if VIEW_NAMES[v] == "SAX")
    assert not torch.allclose(basal.lines[lax, 3], PretextDataset(cache).lines[lax, 3])
    with pytest.raises(ValueError, match="unknown views"):
        PairConfig(partners={"knee": {"SAG": ("SAX",)}})


def test_subjects_filter_and_pickling(heart):
    cache = open_cache(heart[1])
    ds = PretextDataset(cache, subjects=[1])
    assert set(ds.subject.tolist()) == {1}
    assert len(pickle.dumps(cache)) < cache.images.nbytes / 4  # the memory map is not copied
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    n = sum(len(b["image"]) for b in loader)
    assert n == len(ds)


def test_sampler_deterministic_and_sharded(heart):
    ds = PretextDataset(open_cache(heart[1]))
    s = SubjectEpochSampler(ds, seed=7)
    s.set_epoch(3)
    first = list(s)
    s.set_epoch(3)
    assert list(s) == first
    assert len(first) == 3 and sorted(ds.subject[first].tolist()) == [0, 1, 2]
    epochs = set()
    for e in range(6):
        s.set_epoch(e)
        epochs.add(tuple(s))
    assert len(epochs) > 1
    shards = []
    for rank in range(2):
        r = SubjectEpochSampler(ds, seed=7, rank=rank, world_size=2, slices_per_subject=1)
        r.set_epoch(3)
        shards.append(list(r))
    assert len(shards[0]) == len(shards[1]) == 2
    assert set(ds.subject[shards[0] + shards[1]].tolist()) == {0, 1, 2}
    k2 = SubjectEpochSampler(ds, seed=7, slices_per_subject=2, balance="view")
    got = list(k2)
    assert len(got) == 6 and np.bincount(ds.subject[got].numpy()).tolist() == [2, 2, 2]


def test_split_subjects():
    keys = [f"k{i}" for i in range(10)]
    train, held = split_subjects(keys, 0.2, seed=1)
    assert len(held) == 2 and sorted(train + held) == list(range(10))
    assert split_subjects(keys, 0.2, seed=1) == (train, held)
    assert split_subjects(keys, 0.2, seed=2) != (train, held)
    assert split_subjects(keys[:2], 0.1, seed=0)[1] != []
