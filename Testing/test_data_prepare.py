"""``planessl prepare`` and the slice cache: layout, keys, errors, privacy, geometry, locations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from PlaneSSLLib.data.cache import CacheError, open_cache
from PlaneSSLLib.data.prepare import PrepareError, prepare_cache
from PlaneSSLLib.dicom.pixels import read_frame_pixels
from PlaneSSLLib.dicom.report import apply_views
from PlaneSSLLib.dicom.scan import scan_tree
from PlaneSSLLib.geometry import ImagePlane
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from PlaneSSLLib.preprocess.codes import VIEW_CODES
from PlaneSSLLib.preprocess.config import ConfigError, PrepareConfig, load_prepare_config
from PlaneSSLLib.preprocess.resample import normalise_intensity, prepare_image, prepared_plane, resample_to_plane
from training_cli.main import main

CONFIG = PrepareConfig(spacing_mm=2.5, size_px=96)


@pytest.fixture(scope="module")
def cohorts(heart_cohort, knee_cohort) -> dict[str, Path]:
    return {"heart": heart_cohort, "knee": knee_cohort}


@pytest.fixture(scope="module")
def caches(cohorts, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("caches")
    out = {}
    for anatomy, data in cohorts.items():
        report = prepare_cache(data, root / anatomy, CONFIG, jobs=1)
        assert not report.reused and not report.skipped and report.n_slices > 0
        out[anatomy] = report.cache_dir
    return out


def test_cache_layout_and_reuse(cohorts, caches, tmp_path):
    cache = open_cache(caches["heart"].parent)  # via current.json
    assert cache.path == caches["heart"]
    assert cache.images.shape == (len(cache), 96, 96) and cache.images.dtype == np.float16
    assert isinstance(cache.images, np.memmap)
    assert cache.meta["normalisation"]["method"] == "minmax"
    assert cache.config == CONFIG
    views = set(cache.index["view"].tolist())
    assert views == {VIEW_CODES[v] for v in ("SAX", "2CH", "3CH", "4CH")}
    assert cache.n_subjects == 2 and set(cache.index["subject"].tolist()) == {0, 1}
    img = cache.image(0)
    assert img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0.5
    # the same data and config: reused, not rewritten
    again = prepare_cache(cohorts["heart"], caches["heart"].parent, CONFIG)
    assert again.reused and again.cache_dir == caches["heart"]


def test_cache_key_changes_with_config_and_data(cohorts, caches, tmp_path):
    root = caches["heart"].parent
    other = prepare_cache(cohorts["heart"], root, PrepareConfig(spacing_mm=3.0, size_px=96))
    assert other.cache_dir != caches["heart"] and not other.reused
    assert open_cache(root).path == other.cache_dir  # current.json follows the last prepare
    # the old cache is refused when the caller expects the new key
    with pytest.raises(CacheError, match="stale"):
        open_cache(caches["heart"], expect_key=other.key)
    # changed data: a new key
    data = tmp_path / "heart"
    shutil.copytree(cohorts["heart"], data)
    first = prepare_cache(data, tmp_path / "c", CONFIG)
    victim = next(data.rglob("sax_6/*.dcm"))
    victim.unlink()
    second = prepare_cache(data, tmp_path / "c", CONFIG)
    assert second.key != first.key and second.n_slices == first.n_slices - 1


def test_incomplete_wrong_version_and_missing_cache_refused(caches, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(caches["knee"], folder)
    assert len(open_cache(folder)) > 0
    meta = json.loads((folder / "meta.json").read_text())
    meta["version"] = 999
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="version 999"):
        open_cache(folder)
    (folder / "meta.json").unlink()
    with pytest.raises(CacheError, match="incomplete cache"):
        open_cache(folder)
    shutil.copytree(caches["knee"], tmp_path / "short")
    (tmp_path / "short" / "index.npy").unlink()
    with pytest.raises(CacheError, match=r"incomplete cache \(index.npy missing\)"):
        open_cache(tmp_path / "short")
    with pytest.raises(CacheError, match="no such cache"):
        open_cache(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match="no cache here"):
        open_cache(tmp_path / "empty")


def test_cli_errors_are_clear(tmp_path, capsys, cohorts):
    assert main(["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "no such file or directory" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    assert main(["prepare", str(empty), "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "no usable image of a labelled view" in err and "Traceback" not in err
    assert main(["prepare", str(cohorts["knee"]), "--out", str(tmp_path / "c"), "--size", "2"]) == 2
    assert "size_px" in capsys.readouterr().err
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("prepare:\n  spacing_mm: 3.0\n  size_px: 64\n  bogus: 1\n")
    assert main(["prepare", str(cohorts["knee"]), "--out", str(tmp_path / "c"), "--config", str(cfg)]) == 2
    assert "bogus" in capsys.readouterr().err


def test_cli_prepare_with_config_file(tmp_path, capsys, cohorts):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("prepare:\n  spacing_mm: 3.0\n  size_px: 64\n  normalisation: zscore\n")
    assert load_prepare_config(cfg).size_px == 64
    out = tmp_path / "c"
    assert main(["prepare", str(cohorts["knee"]), "--out", str(out), "--config", str(cfg), "--size", "48",
                 "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["size_px"] == 48 and report["config"]["spacing_mm"] == 3.0
    cache = open_cache(out)
    assert cache.image_shape == (48, 48) and cache.meta["normalisation"]["method"] == "zscore"
    assert set(report["views"]) == {"knee SAG", "knee COR", "knee AX"}
    with pytest.raises(ConfigError, match="normalisation"):
        PrepareConfig(normalisation="max")


def _identifiers(data: Path) -> set[str]:
    found: set[str] = set()
    for path in list(data.rglob("*.dcm"))[::7]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            found.add(str(ds.get(kw)))
        found.add(str(ds.PatientName))
        found.update(str(ds.PatientName).split("^"))
    return {f for f in found if len(f) >= 6}


@pytest.mark.parametrize("anatomy", ["heart", "knee"])
def test_cache_holds_no_identifiers(cohorts, caches, anatomy):
    blobs = [p.read_bytes() for p in caches[anatomy].iterdir()]
    blobs.append((caches[anatomy].parent / "current.json").read_bytes())
    for ident in _identifiers(cohorts[anatomy]):
        for enc in ("utf-8", "utf-32-le", "utf-16-le"):
            needle = ident.encode(enc)
            assert not any(needle in b for b in blobs), f"{ident!r} found in the cache ({enc})"
    assert str(cohorts[anatomy]) not in "".join(b.decode("latin-1") for b in blobs)


def test_resampling_keeps_geometry_with_non_square_pixels():
    src = ImagePlane.from_dicom([10, -20, 30], [0.8, 0.6, 0, -0.6, 0.8, 0], [1.7, 0.9], 70, 130)
    grad = np.array([0.3, -0.2, 0.7])
    values = (src.pixel_grid_lps() @ grad).astype(np.float32)  # a linear function of LPS
    dst = prepared_plane(src, 2.0, 64)
    assert np.allclose(dst.centre_lps, src.centre_lps) and dst.spacing_mm == (2.0, 2.0)
    out = resample_to_plane(values, src, dst, antialias=True, cval=np.nan)
    expect = dst.pixel_grid_lps() @ grad
    inside = np.isfinite(out)
    inner = np.zeros_like(inside)
    inner[12:-12, 4:-4] = True  # away from the field-of-view border (smoothing and padding)
    assert inside.sum() > 0.5 * inside.size
    np.testing.assert_allclose(out[inner & inside], expect[inner & inside], atol=2e-3)
    # a point: prepared pixel -> LPS -> source pixel -> same LPS
    lps = dst.pixel_to_lps(np.array([17.0, 40.0]))
    xy, offset = src.lps_to_pixel(lps)
    assert abs(offset) < 1e-9 and np.allclose(src.pixel_to_lps(xy), lps)


def test_cached_images_match_direct_preparation(cohorts, caches):
    result = scan_tree(cohorts["heart"])
    apply_views(result)
    cache = open_cache(caches["heart"])
    by_plane = {}
    for study in result.studies:
        for s in study.series:
            if s.view == "4CH":  # non-square pixels in the phantom's 4CH series
                frame = s.positions[0].frames[0]
                by_plane[tuple(np.round(frame.plane.centre_lps, 4))] = frame
    assert by_plane
    checked = 0
    for i in np.flatnonzero(cache.index["view"] == VIEW_CODES["4CH"]):
        if cache.index["phase"][i] != 0:
            continue
        plane = cache.plane(i)
        frame = by_plane[tuple(np.round(plane.centre_lps, 4))]
        img, dst = prepare_image(read_frame_pixels(frame), frame.plane, 2.5, 96)
        assert np.allclose(dst.origin_lps, plane.origin_lps) and np.allclose(dst.x_dir_lps, plane.x_dir_lps)
        np.testing.assert_allclose(cache.image(i), img, atol=2e-3)  # float16 storage
        checked += 1
    assert checked == 2


def test_normalisation_choices():
    rng = np.random.default_rng(0)
    img = rng.gamma(2.0, 100.0, size=(50, 60)).astype(np.float32)
    mm, bg = normalise_intensity(img, "minmax")
    assert bg == 0.0 and mm.min() == 0.0 and mm.max() == 1.0
    z, bg = normalise_intensity(img, "zscore")
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-4
    assert bg == pytest.approx(float(z.min()), abs=1e-5)
    flat, _ = normalise_intensity(np.full((4, 4), 7.0), "minmax")
    assert not flat.any()


def test_heart_location_base_to_apex(cohorts, caches):
    cache = open_cache(caches["heart"])
    ix = cache.index
    result = scan_tree(cohorts["heart"])
    apply_views(result)
    sax = ix["view"] == VIEW_CODES["SAX"]
    for study in result.studies:
        rows = np.flatnonzero(sax & (ix["study_key"] == study.key))
        base_series = next(s for s in study.series if s.folder.name == "sax_5")
        base = rows[ix["series_key"][rows] == base_series.key]
        assert len(base) and np.all(ix["location"][base] == 0.0) and np.all(ix["position"][base] == 0)
        # sax_5, sax_6, ... run base -> apex: location increases with the folder number
        numbers = {s.key: int(s.folder.name.split("_")[1]) for s in study.series if s.folder.name.startswith("sax_")}
        order = np.argsort([numbers[k] for k in ix["series_key"][rows]], kind="stable")
        loc = ix["location"][rows][order]
        assert np.all(np.diff(loc) >= 0) and loc[-1] == pytest.approx(1.0)
        n = int(ix["n_positions"][rows[0]])
        assert n == len(numbers) and sorted(set(ix["position"][rows].tolist())) == list(range(n))
    lax = ~sax
    assert np.all(np.isnan(ix["location"][lax])) and np.all(ix["n_positions"][lax] == 1)


def test_knee_location_along_fixed_axes(caches):
    """COR along +P, AX along +S; SAG runs medial -> lateral (sign by laterality: test_data_knee_location)."""
    cache = open_cache(caches["knee"])
    ix = cache.index
    for view, axis in (("SAG", 0), ("COR", 1), ("AX", 2)):
        for stack in np.unique(ix["stack"][ix["view"] == VIEW_CODES[view]]):
            rows = np.flatnonzero(ix["stack"] == stack)
            coord = np.array([cache.plane(i).centre_lps[axis] for i in rows])
            loc = ix["location"][rows]
            order = np.argsort(coord)
            if view == "SAG" and loc[order][0] != 0.0:
                order = order[::-1]
            assert np.all(np.diff(loc[order]) > 0), view
            assert loc[order][0] == 0.0 and loc[order][-1] == pytest.approx(1.0)


def _break_transfer_syntax(path: Path) -> None:
    """Declare RLE Lossless (same UID length) over native pixel data: the header reads, decoding fails."""
    data = path.read_bytes()
    assert data.count(b"1.2.840.10008.1.2.1\x00") == 1
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.5\x00"))


def test_undecodable_file_is_skipped_and_named(cohorts, tmp_path, capsys):
    data = tmp_path / "heart"
    shutil.copytree(cohorts["heart"], data)
    bad = sorted(data.rglob("sax_7/*.dcm"))[0]
    _break_transfer_syntax(bad)
    full = open_cache(prepare_cache(cohorts["heart"], tmp_path / "ref", CONFIG).cache_dir)
    assert main(["prepare", str(data), "--out", str(tmp_path / "c"), "--spacing", "2.5", "--size", "96"]) == 0
    out = capsys.readouterr().out
    assert "skipped (pixel data unreadable): 1" in out and bad.name in out
    cache = open_cache(tmp_path / "c")
    assert len(cache) == len(full) - 1 and cache.meta["skipped_frames"] == 1
    assert np.isfinite(cache.images[:].astype(np.float32)).all()


def test_prepare_error_without_data(tmp_path):
    with pytest.raises(PrepareError, match="no such file"):
        prepare_cache(tmp_path / "missing", tmp_path / "c")


def test_parallel_preparation_gives_the_same_cache(cohorts, tmp_path, monkeypatch):
    import PlaneSSLLib.data.prepare as prep

    monkeypatch.setattr(prep, "_MIN_SLICES_PER_WORKER", 1)  # use the process pool even on a tiny cohort
    serial = open_cache(prepare_cache(cohorts["heart"], tmp_path / "one", CONFIG, jobs=1).cache_dir)
    parallel = open_cache(prepare_cache(cohorts["heart"], tmp_path / "two", CONFIG, jobs=2, force=True).cache_dir)
    assert np.array_equal(serial.images[:], parallel.images[:])
    assert serial.index.tobytes() == parallel.index.tobytes()


def test_ukbb_layout_location_starts_at_the_base(tmp_path):
    from PlaneSSLLib.phantoms import sample_heart

    write_cohort(tmp_path / "d", CohortOptions("heart", subjects=1, seed=2, layout="ukbb", phases=2, matrix=64),
                 workers=1)
    report = prepare_cache(tmp_path / "d", tmp_path / "c", PrepareConfig(spacing_mm=3.0, size_px=64))
    cache = open_cache(report.cache_dir)
    anatomy = sample_heart(np.random.default_rng([2, 0, 0]))  # the phantom's subject 0 (cohort docstring)
    rows = np.flatnonzero(cache.index["view"] == VIEW_CODES["SAX"])
    depth = np.array([(cache.plane(i).centre_lps - anatomy.base_lps) @ anatomy.w for i in rows])  # mm towards apex
    loc = cache.index["location"][rows]
    order = np.argsort(depth)
    assert loc[order][0] == 0.0 and np.all(np.diff(loc[order]) >= 0) and loc[order][-1] == pytest.approx(1.0)


def test_expected_cache_key(cohorts, caches):
    from PlaneSSLLib.data.prepare import expected_cache_key

    key = expected_cache_key(cohorts["knee"], CONFIG)
    assert open_cache(caches["knee"], expect_key=key).key == key
    with pytest.raises(CacheError, match="stale"):
        open_cache(caches["knee"], expect_key=expected_cache_key(cohorts["knee"], PrepareConfig(size_px=64)))
    assert open_cache(caches["knee"]).meta["data_fingerprint"]
