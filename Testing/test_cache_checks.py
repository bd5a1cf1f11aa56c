"""The one slice cache: every damage is a CacheError naming the file at open time, and a clear exit 2."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from PlaneSSLLib.data.cache import (
    CACHE_VERSION,
    INDEX_DTYPE,
    SEG_INDEX_DTYPE,
    CacheError,
    base_meta,
    open_cache,
    write_cache,
    write_meta,
)
from PlaneSSLLib.data.exams import exams_from_cache
from PlaneSSLLib.data.prepare import prepare_cache
from PlaneSSLLib.data.segmentation import prepare_seg_cache
from PlaneSSLLib.errors import PlaneSSLError
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from PlaneSSLLib.preprocess.config import PrepareConfig
from PlaneSSLLib.preprocess.exams import KNEE_VIEWS
from training_cli.main import main

REPO = Path(__file__).resolve().parents[1]
KNEE = PrepareConfig(spacing_mm=4.5, size_px=32, dtype="float32", anatomy="knee")
HEART = PrepareConfig(spacing_mm=6.0, size_px=32, dtype="float32", anatomy="heart")


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    """Intact caches of both contents: ``slices`` (knee, pretraining layout) and ``seg`` (heart, with labels)."""
    root = tmp_path_factory.mktemp("caches")
    write_cohort(root / "knee", CohortOptions("knee", subjects=2, seed=1, phases=2, matrix=64), workers=1)
    write_cohort(root / "heart", CohortOptions("heart", subjects=2, seed=1, phases=2, matrix=64), workers=1)
    return {
        "slices": prepare_cache(root / "knee", root / "knee_cache", KNEE).cache_dir,
        "seg": prepare_seg_cache(root / "heart", root / "seg_cache", HEART).path,
    }


def _copy(caches: dict[str, Path], content: str, tmp_path: Path) -> Path:
    folder = tmp_path / content / caches[content].name
    shutil.copytree(caches[content], folder)
    return folder


def _edit_meta(folder: Path, change: Callable[[dict], object]) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _save_short_index(folder: Path) -> None:
    np.save(folder / "index.npy", np.load(folder / "index.npy")[:-1])


def _save_other_index(folder: Path) -> None:
    other = SEG_INDEX_DTYPE if np.load(folder / "index.npy").dtype == INDEX_DTYPE else INDEX_DTYPE
    np.save(folder / "index.npy", np.zeros(len(np.load(folder / "index.npy")), other))


def _save_short_images(folder: Path) -> None:
    np.save(folder / "images.npy", np.load(folder / "images.npy")[:-1])


DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "images truncated": (lambda f: _truncate(f / "images.npy"), r"images\.npy: damaged or truncated"),
    "images missing": (lambda f: (f / "images.npy").unlink(), r"incomplete cache \(images\.npy missing\)"),
    "images of another length": (_save_short_images, r"images\.npy: holds \(\d+, 32, 32\) float32, but meta"),
    "index truncated": (lambda f: _truncate(f / "index.npy"), r"index\.npy: damaged or truncated"),
    "index missing": (lambda f: (f / "index.npy").unlink(), r"incomplete cache \(index\.npy missing\)"),
    "index of another length": (_save_short_index, r"index\.npy: \d+ rows, but images\.npy holds \d+ slices"),
    "index of other fields": (_save_other_index, r"index\.npy: unexpected index fields"),
    "meta not JSON": (lambda f: (f / "meta.json").write_text('{"format": "planessl-sl'), r"meta\.json: unreadable"),
    "meta not an object": (lambda f: (f / "meta.json").write_text("[1, 2]"), r"meta\.json: not a PlaneSSL slice"),
    "meta missing": (lambda f: (f / "meta.json").unlink(), r"incomplete cache \(meta\.json missing"),
    "meta lacks keys": (lambda f: _edit_meta(f, lambda m: [m.pop("n_slices"), m.pop("subjects")]),
                        r"meta\.json: lacks n_slices, subjects"),
    "meta bad shape": (lambda f: _edit_meta(f, lambda m: m.update(image_shape="32x32")),
                       r"meta\.json: bad image_shape '32x32'"),
    "meta unknown content": (lambda f: _edit_meta(f, lambda m: m.update(content="mystery")),
                             r"meta\.json: unknown content 'mystery'"),
    "old version": (lambda f: _edit_meta(f, lambda m: m.update(version=2)),
                    rf"version 2, this PlaneSSL reads version {CACHE_VERSION}; re-run 'planessl "),
}


@pytest.mark.parametrize("content", ["slices", "seg"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_damage_is_a_clear_cache_error_at_open_time(caches, tmp_path, content, damage):
    folder = _copy(caches, content, tmp_path)
    assert len(open_cache(folder, content=content)) > 0
    harm, message = DAMAGE[damage]
    harm(folder)
    with pytest.raises(CacheError, match=message) as info:
        open_cache(folder, content=content)
    assert str(folder) in str(info.value)  # the message names the folder or the file in it
    assert isinstance(info.value, PlaneSSLError)


@pytest.mark.parametrize("harm", ["truncated", "missing", "not uint8"])
def test_the_label_plane_is_checked_like_the_images(caches, tmp_path, harm):
    folder = _copy(caches, "seg", tmp_path)
    labels = folder / "labels.npy"
    if harm == "truncated":
        _truncate(labels)
    elif harm == "missing":
        labels.unlink()
    else:
        np.save(labels, np.load(labels).astype(np.int16))
    message = {"truncated": r"labels\.npy: damaged or truncated", "missing": r"\(labels\.npy missing\)",
               "not uint8": r"labels\.npy: holds .* int16"}[harm]
    with pytest.raises(CacheError, match=message):
        open_cache(folder, content="seg")


def test_old_formats_and_the_other_content_say_what_to_run(caches, tmp_path):
    seg = _copy(caches, "seg", tmp_path)
    _edit_meta(seg, lambda m: m.update(format="planessl-seg-cache", version=1))
    with pytest.raises(CacheError, match=r"older PlaneSSL \(format planessl-seg-cache.*'planessl finetune seg'"):
        open_cache(seg, content="seg")
    with pytest.raises(CacheError, match=r"content 'seg'\), but this needs .* made by 'planessl prepare'"):
        open_cache(caches["seg"])  # the default: pretraining slices
    with pytest.raises(CacheError, match=r"made by 'planessl finetune seg' with data.root set"):
        open_cache(caches["slices"], content="seg")
    with pytest.raises(CacheError, match="without labels"):
        _ = open_cache(caches["slices"]).labels
    assert open_cache(caches["seg"], content=None).has_labels


def test_one_surface_for_both_contents(caches):
    seg = open_cache(caches["seg"].parent, content="seg")  # via current.json, like the slices cache
    assert seg.content == "seg" and seg.labels.dtype == np.uint8 and seg.labels.shape == seg.images.shape
    assert seg.image_shape == (32, 32) and seg.spacing_mm == 6.0 and len(seg.subject_keys) == 2
    volumes = seg.volumes()
    assert sorted(volumes) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(seg.volume_spacing_mm(volumes[(0, 0)])) == 3
    knee = open_cache(caches["slices"])
    assert knee.content == "slices" and knee.anatomies() == ["knee"] and knee.spacing_mm == 4.5
    exams = exams_from_cache(knee)
    assert len(exams) == 2 and all(set(e.stacks) == set(KNEE_VIEWS) for e in exams)
    assert {e.key for e in exams} == set(knee.subject_keys)


def test_the_writer_checks_before_installing_and_cleans_up(tmp_path):
    config = PrepareConfig(size_px=8)

    def fill(folder: Path, n_index: int) -> str:
        np.save(folder / "images.npy", np.zeros((3, 8, 8), np.float16))
        np.save(folder / "index.npy", np.zeros(n_index, INDEX_DTYPE))
        write_meta(folder, base_meta("k", "slices", config, 3, "fp", [{"key": "s"}]))
        return "done"

    with pytest.raises(CacheError, match=r"index\.npy: 2 rows, but images\.npy holds 3"):
        write_cache(tmp_path / "root", "k", lambda folder: fill(folder, 2))
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == []  # nothing installed, no temporary left
    assert write_cache(tmp_path / "root", "k", lambda folder: fill(folder, 3)) == "done"
    assert open_cache(tmp_path / "root").key == "k"
    (tmp_path / "file").write_text("")
    with pytest.raises(CacheError, match="cannot write the cache"):
        write_cache(tmp_path / "file" / "root", "k", lambda folder: fill(folder, 3))


def test_pretrain_on_a_damaged_cache_exits_2_without_traceback(caches, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    folder = _copy(caches, "slices", tmp_path)
    _truncate(folder / "images.npy")
    argv = ["pretrain", "--config", "Resources/Configs/pretrain_demo.yaml", "--out", str(tmp_path / "run"),
            "--set", f"data.cache={folder}", "optim.epochs=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'images.npy'}: damaged or truncated" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["labels missing", "old seg format", "slices cache"])
def test_finetune_seg_on_a_bad_cache_exits_2_without_traceback(caches, tmp_path, capsys, damage):
    if damage == "slices cache":
        folder, message = caches["slices"], "content 'slices'), but this needs SAX slices"
    else:
        folder = _copy(caches, "seg", tmp_path)
        if damage == "labels missing":
            (folder / "labels.npy").unlink()
            message = "incomplete cache (labels.npy missing)"
        else:
            _edit_meta(folder, lambda m: m.update(format="planessl-seg-cache", version=1))
            message = "a segmentation cache of an older PlaneSSL"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"data": {"cache": str(folder), "spacing_mm": 6.0, "image_size": 32},
                               "model": {"base_filters": 4, "levels": 3}, "optim": {"epochs": 1},
                               "runtime": {"progress": "none", "plot": False}}))
    assert main(["finetune", "seg", "--config", str(cfg), "--init", "scratch", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(folder) in err and "Traceback" not in err
