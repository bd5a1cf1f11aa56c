"""Registry ids and versions are names, never paths (issue 15, finding 3).

An ``id`` or ``version`` of ``Resources/Models.json`` becomes a folder and a file name in the
model cache; one that is a path (``../``, absolute, a separator) must be refused before any path
is built, and a checksum mismatch may only delete files inside the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from PlaneSSLLib.slicer_logic import models_registry as mr

ROOT = Path(__file__).resolve().parents[1]
NOT_NAMES = ["../evil", "..", ".", "/tmp/evil", "a/b", "a\\b", "", " lead", "x\x00y", "C:evil", "~user"]


def _registry(tmp_path: Path, **change) -> Path:
    data = json.loads((ROOT / "Resources" / "Models.json").read_text())
    data["models"][0].update(change)
    path = tmp_path / "Models.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("key", ["id", "version"])
@pytest.mark.parametrize("value", NOT_NAMES)
def test_ids_and_versions_that_are_not_names_are_refused(tmp_path, key, value):
    with pytest.raises(mr.RegistryError, match=f"{key} must be a plain name"):
        mr.load_registry(_registry(tmp_path, **{key: value}))


@pytest.mark.parametrize("key", ["id", "version"])
def test_a_non_string_id_or_version_is_refused(tmp_path, key):
    with pytest.raises(mr.RegistryError, match=f"{key} must be a plain name"):
        mr.load_registry(_registry(tmp_path, **{key: ["a"]}))


def test_the_shipped_names_are_plain_names():
    assert all(e.id and e.version for e in mr.load_registry())


def _published(tmp_path: Path, **names) -> tuple[mr.ModelEntry, Path]:
    payload = tmp_path / "srv" / "weights.zip"
    payload.parent.mkdir(parents=True)
    payload.write_bytes(b"not the file the registry names")
    entry = mr.load_registry(_registry(tmp_path, url=payload.as_uri(), sha256="0" * 64, status="published"))[0]
    return dataclasses.replace(entry, **names), payload  # an entry built in code skips load_registry


def test_a_checksum_mismatch_never_deletes_outside_the_cache(tmp_path):
    entry, _ = _published(tmp_path, id="../../victim", version="1")  # downloads/<id>-<version>.zip
    outside = tmp_path / "victim-1.zip"
    outside.write_bytes(b"precious")
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)  # as after an earlier download
    with pytest.raises(mr.RegistryError, match="must be a plain name"):
        mr.install_model(entry, cache)
    assert outside.read_bytes() == b"precious"
    assert not mr.entry_available(dataclasses.replace(entry, url=None, sha256=None), cache)


@pytest.mark.parametrize("key", ["id", "version"])
def test_an_absolute_id_or_version_installs_nothing_outside_the_cache(tmp_path, key):
    target = tmp_path / "elsewhere"
    entry, _ = _published(tmp_path, **{key: str(target)})
    with pytest.raises(mr.RegistryError, match="must be a plain name"):
        mr.install_model(entry, tmp_path / "cache")
    assert not target.exists()


def test_a_checksum_mismatch_inside_the_cache_still_deletes_the_bad_file(tmp_path):
    entry, payload = _published(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(mr.ChecksumError, match="SHA-256 mismatch"):
        mr.install_model(entry, cache)
    assert not list((cache / "downloads").glob("*"))
    assert hashlib.sha256(payload.read_bytes()).hexdigest() != "0" * 64


def test_a_download_larger_than_size_bytes_is_stopped_and_deleted(tmp_path):
    payload = tmp_path / "srv" / "weights.zip"
    payload.parent.mkdir(parents=True)
    payload.write_bytes(b"x" * 3_000_000)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    entry = mr.load_registry(_registry(tmp_path, url=payload.as_uri(), sha256=digest, size_bytes=1000))[0]
    cache = tmp_path / "cache"
    with pytest.raises(mr.DownloadError, match="size_bytes"):
        mr.install_model(entry, cache)
    assert not [p for p in (cache / "downloads").iterdir()]  # neither the file nor a part file kept


@pytest.mark.parametrize("value", [-1, 0, "big", 1.5, True])
def test_size_bytes_must_be_a_positive_integer(tmp_path, value):
    with pytest.raises(mr.RegistryError, match="size_bytes"):
        mr.load_registry(_registry(tmp_path, size_bytes=value))
