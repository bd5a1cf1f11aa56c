"""Patient keys cannot be reversed by trying every short patient ID (issue 15, finding 7).

Keys are HMAC-SHA256 under a per-installation secret (``dicom.id_secret``): made on first use in
the user's configuration folder (owner-only, race-free), or given by ``PLANESSL_ID_SECRET`` (the
test suite's conftest sets one, so caches stay byte-reproducible). Public data-set names and the
phantom generator's synthetic IDs keep one public salt, so their splits are alike everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from PlaneSSLLib.dicom import id_secret
from PlaneSSLLib.dicom.records import hash_identifier, hash_public_name, patient_key


@pytest.fixture
def fresh_install(tmp_path, monkeypatch) -> Path:
    """No secret in the environment and an empty configuration folder."""
    monkeypatch.delenv(id_secret.ENV_SECRET, raising=False)
    monkeypatch.setenv("PLANESSL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setattr(id_secret, "_cache", {})
    return tmp_path / "config" / "planessl" / "id_secret"


def test_the_secret_is_made_on_first_use_owner_only_and_kept(fresh_install):
    key = patient_key("1234567")
    assert fresh_install.is_file() and stat.S_IMODE(fresh_install.stat().st_mode) == 0o600
    assert len(fresh_install.read_text().strip()) == 64
    id_secret._cache.clear()
    assert patient_key("1234567") == key  # read back, not made again


def test_a_short_patient_id_is_not_found_by_trying_the_public_salt(fresh_install, monkeypatch):
    key = patient_key("1234567")
    old_scheme = hashlib.sha256(b"planessl-v1:1234567").hexdigest()[:12]
    assert key != old_scheme and len(key) == 12
    other_install = fresh_install.parent.parent.parent / "other"
    monkeypatch.setenv("PLANESSL_CONFIG_DIR", str(other_install))
    id_secret._cache.clear()
    assert patient_key("1234567") != key  # another installation, another secret


def test_the_environment_overrides_the_file(fresh_install, monkeypatch):
    monkeypatch.setenv(id_secret.ENV_SECRET, "shared-site-secret")
    a = hash_identifier("1.2.3")
    assert not fresh_install.exists() and a == hash_identifier("1.2.3") and a != hash_public_name("1.2.3")
    assert a == hmac.new(b"shared-site-secret", b"1.2.3", hashlib.sha256).hexdigest()[:12]  # plain HMAC-SHA256


def test_processes_starting_together_agree_on_one_secret(fresh_install):
    code = ("from PlaneSSLLib.dicom.records import hash_identifier; print(hash_identifier('42'))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(keys) == 1 and all(p.returncode == 0 for p in procs)


def test_an_unwritable_config_folder_is_a_clear_error(fresh_install, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("PLANESSL_CONFIG_DIR", str(blocker))
    with pytest.raises(id_secret.IdentifierSecretError, match="PLANESSL_ID_SECRET"):
        hash_identifier("x")


def test_phantom_and_public_names_are_alike_on_every_installation(fresh_install):
    assert patient_key("planessl-heart-0003") == hash_public_name("planessl-heart-0003")
    assert patient_key("planessl-heart-0003") == hashlib.sha256(b"planessl-v1:planessl-heart-0003").hexdigest()[:12]
    assert patient_key("planessl-heart-0003x") != hash_public_name("planessl-heart-0003x")
