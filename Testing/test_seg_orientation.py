"""Segmentation slices in the standard display orientation (``data.sax_orientation: canonical``).

Sites store SAX images rotated by 90/270 degrees or mirrored (the clinical phantom's sites B, C and D, as
scanners do). The same phantom subject written at three sites (the anatomy is drawn from the seed, the
site apart) must give the same prepared labels in the canonical orientation, and different ones as stored.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from PlaneSSLLib.data.segmentation import prepare_seg_cache, resample_labels_to_plane
from PlaneSSLLib.geometry.planes import ImagePlane
from PlaneSSLLib.inference.segment import SegModel, segment_images
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from PlaneSSLLib.preprocess.config import PrepareConfig
from PlaneSSLLib.preprocess.resample import (
    canonical_sax_plane,
    prepare_image,
    resample_to_plane,
    sax_apex_direction_lps,
)


@pytest.fixture(scope="module")
def one_subject_three_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    folders = {}
    for site in ("A", "B", "C"):  # A as stored upright, B rotated by 90 degrees, C mirrored
        folders[site] = root / site
        write_cohort(folders[site], CohortOptions(anatomy="heart", subjects=1, seed=5, phases=2, matrix=96,
                                                  realism="clinical", sites=f"{site}=1"), workers=1)
    return folders


def _labels(folder, tmp, orientation):
    config = PrepareConfig(spacing_mm=3.0, size_px=64, dtype="float32", anatomy="heart", sax_orientation=orientation)
    cache = prepare_seg_cache(folder, tmp / f"cache_{folder.name}_{orientation}", config)
    assert cache.meta["config"].get("sax_orientation", "stored") == orientation
    return np.asarray(cache.labels)


def _rv_direction_deg(labels: np.ndarray) -> float:
    """Median angle (image rows down, columns right) of the RV centroid (label 1) seen from the LV centroid (3)
    over the slices that hold both: where the anatomy points in the prepared images."""
    angles = []
    for k in range(len(labels)):
        rv, lv = np.argwhere(labels[k] == 1), np.argwhere(labels[k] == 3)
        if len(rv) > 20 and len(lv) > 20:
            d = rv.mean(axis=0) - lv.mean(axis=0)
            angles.append(np.degrees(np.arctan2(d[0], d[1])))
    assert angles, "no slice holds both ventricles"
    return float(np.median(angles))


def _difference_deg(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def test_canonical_orientation_removes_the_sites_storage(one_subject_three_sites, tmp_path):
    """The same subject at three sites: where the RV lies seen from the LV differs by site as stored (90 degrees
    for B's rotation, a reflection for C) and not at all in the canonical orientation, RV on the image's left
    (seen from the apex, the patient's left to the right)."""
    stored = {s: _rv_direction_deg(_labels(f, tmp_path, "stored")) for s, f in one_subject_three_sites.items()}
    canonical = {s: _rv_direction_deg(_labels(f, tmp_path, "canonical")) for s, f in one_subject_three_sites.items()}
    for site in ("B", "C"):
        assert _difference_deg(stored["A"], stored[site]) > 30, stored
        assert _difference_deg(canonical["A"], canonical[site]) < 5, canonical
    assert all(_difference_deg(angle, 180.0) < 60 for angle in canonical.values()), canonical


def test_stored_caches_keep_their_key():
    """The default adds nothing to the cache key: caches prepared before the setting existed are reused."""
    stored = PrepareConfig(spacing_mm=3.0, size_px=64)
    assert "sax_orientation" not in stored.to_dict()
    assert PrepareConfig(spacing_mm=3.0, size_px=64, sax_orientation="canonical").digest() != stored.digest()


def test_rotated_grid_keeps_labels_on_the_image():
    """Image and labels resampled onto a rotated, mirrored grid by the same pixel map."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))  # stored rotated by 30 degrees and mirrored
    source = ImagePlane(np.zeros(3), np.array([c, s, 0.0]), np.array([s, -c, 0.0]), (1.0, 1.0), (40, 50))
    image = np.zeros((40, 50), np.float32)
    image[5:15, 30:45] = 1.0
    labels = (image > 0).astype(np.uint8) * 2
    target = canonical_sax_plane(source, np.array([0, 0, -1.0]), 1.5, 32)
    assert abs(float(target.normal_lps @ source.normal_lps)) > 1 - 1e-9
    assert np.allclose(target.x_dir_lps, [1, 0, 0]) and np.allclose(target.y_dir_lps, [0, 1, 0])  # L, P
    img, grid = prepare_image(image, source, 1.5, 32, target=target)
    lab = resample_labels_to_plane(labels, source, grid)
    inside = img > 0.5
    assert inside.sum() > 10 and np.array_equal(inside, lab == 2)
    # back onto the source: the square returns where it was
    back = resample_to_plane(img, grid, source, antialias=False)
    assert back[8:12, 34:42].min() > 0.5 and back[25:35, 5:20].max() < 1e-6


class _IntensityToLabel(torch.nn.Module):
    """Stands in for a trained network: class c where the prepared image is nearest c/3 (images made of labels)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(50.0))  # (the caller asks a network for its device)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen = x.detach().numpy().copy()
        classes = torch.arange(4, dtype=x.dtype).view(1, 4, 1, 1)
        return {"lines": -((x * 3 - classes) ** 2) * self.scale}


@pytest.mark.parametrize("orientation", ["stored", "canonical"])
def test_prediction_comes_back_onto_the_stored_slices(orientation):
    """segment_images: prepared in the manifest's orientation, labels returned on each stored slice's pixels."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))  # stored rotated by 30 degrees and mirrored
    x_dir, y_dir = np.array([c, s, 0.0]), np.array([s, -c, 0.0])
    normal = np.cross(x_dir, y_dir)
    planes = [ImagePlane(np.array([-30.0, -30.0, 0.0]) + k * 8.0 * normal, x_dir, y_dir, (1.0, 1.0), (60, 60))
              for k in range(3)]
    labels = np.zeros((3, 60, 60), np.uint8)
    labels[:, 10:30, 35:50] = 1
    labels[:, 30:45, 15:35] = 3
    labels[:, 33:42, 18:32] = 2
    net = _IntensityToLabel()
    model = SegModel(net, {}, 48, 1.5, "minmax", (0.0, 100.0), ["background", "RV", "Myo", "LV"],
                     orientation)
    pred = segment_images(model, [lab.astype(np.float32) / 3 for lab in labels], planes, lcc=False)
    assert pred.shape == labels.shape
    apex = sax_apex_direction_lps(planes)
    target = canonical_sax_plane(planes[2], apex, 1.5, 48) if orientation == "canonical" else None
    expected, _ = prepare_image(labels[2].astype(np.float32) / 3, planes[2], 1.5, 48, "minmax", (0.0, 100.0),
                                target=target)
    assert np.allclose(net.seen[2, 0], expected, atol=1e-5)  # the network saw the slice in that orientation
    for cls in (1, 2, 3):
        dice = 2 * np.sum((pred == cls) & (labels == cls)) / (np.sum(pred == cls) + np.sum(labels == cls))
        assert dice > 0.85, (cls, dice)
