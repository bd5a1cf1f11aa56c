"""Model registry, download with SHA-256 check into a cache (file:// and a local HTTP server), resume,
checksum mismatch, archive unpacking, and local weights folders (``slicer_logic.models_registry``).

No MRML and no Qt needed; torch only for the tests that export and validate real weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from PlaneSSLLib.slicer_logic import dependencies
from PlaneSSLLib.slicer_logic import models_registry as mr

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- a bounded local server
class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves one folder; honours ``Range: bytes=N-``; ``/cut/<name>`` stops halfway."""

    protocol_version = "HTTP/1.1"
    requests: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        name = self.path.rsplit("/", 1)[-1]
        path = Path(self.server.folder) / name
        type(self).requests.append({"path": self.path, "range": self.headers.get("Range")})
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not self.server.ignore_range:
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.startswith("/cut/"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serve(folder: Path, ignore_range: bool = False):
    """An HTTP server on 127.0.0.1 (ephemeral port) for the block only; always shut down."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.folder = str(folder)
    server.ignore_range = ignore_range
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _Handler.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def _payload(tmp_path: Path, size: int = 300_000) -> tuple[Path, str]:
    src = tmp_path / "srv" / "blob.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    data = bytes((i * 7919) % 251 for i in range(size))
    src.write_bytes(data)
    return src, hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- the registry
def test_shipped_registry_is_valid_and_honest():
    entries = mr.load_registry(ROOT / "Resources" / "Models.json")
    assert entries and mr.default_registry_path() == ROOT / "Resources" / "Models.json"
    assert {e.task for e in entries} == set(mr.TASKS)
    for e in entries:
        assert not e.published and e.url is None  # no weights published yet
        if e.bundled is not None:  # the sample weights shipped with the module (test_slicer_module_defects.py)
            assert "not for clinical use" in e.describe()
            continue
        assert e.sha256 is None
        assert "not yet published" in e.describe()
        assert e.input_spacing_mm[0] > 0 and e.input_size_hw[0] > 0
        if e.task == "lines":
            assert e.channels
        with pytest.raises(mr.DownloadError, match="not yet published"):
            mr.install_model(e, "/nonexistent-cache")
    seg = mr.find_entry(entries, "heart-acdc-segmentation")
    assert seg.labels == ((1, "Right ventricle"), (2, "Myocardium"), (3, "Left ventricle"))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(format="other"), "format must be"),
    (lambda d: d.update(format_version=99), "format_version"),
    (lambda d: d["models"][0].pop("sha256"), "missing key"),
    (lambda d: d["models"][0].update(task="dance"), "task must be"),
    (lambda d: d["models"][0].update(url="https://x/y.zip"), "together"),
    (lambda d: d["models"][0].update(url="ftp://x/y.zip", sha256="0" * 64), "url must be"),
    (lambda d: d["models"][0].update(url="https://x/y.zip", sha256="xyz"), "64 hexadecimal"),
    (lambda d: d["models"][0]["input"].update(spacing_mm=[1.0]), "spacing_mm"),
    (lambda d: d["models"].append(dict(d["models"][0])), "duplicate"),
])
def test_registry_errors_name_the_problem(tmp_path, change, message):
    data = json.loads((ROOT / "Resources" / "Models.json").read_text())
    change(data)
    path = tmp_path / "Models.json"
    path.write_text(json.dumps(data))
    with pytest.raises(mr.RegistryError, match=message):
        mr.load_registry(path)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANESSL_CACHE_DIR", str(tmp_path / "c"))
    assert mr.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PLANESSL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert mr.default_cache_dir() == tmp_path / "x" / "planessl"


# ----------------------------------------------------------------------------- downloads
def test_download_file_url_checked_atomic_and_cached(tmp_path):
    src, sha = _payload(tmp_path)
    dest = tmp_path / "cache" / "blob.bin"
    seen = []
    assert mr.download_file(src.as_uri(), dest, sha, progress=lambda d, t: seen.append(d)) == dest
    assert dest.read_bytes() == src.read_bytes() and seen[-1] == src.stat().st_size
    assert not dest.with_name("blob.bin.part").exists()
    src.write_bytes(b"changed")  # cached: a good file is not fetched again
    assert mr.download_file(src.as_uri(), dest, sha) == dest and mr.sha256_file(dest) == sha


def test_checksum_mismatch_deletes_and_never_installs(tmp_path):
    src, sha = _payload(tmp_path)
    dest = tmp_path / "cache" / "blob.bin"
    with pytest.raises(mr.ChecksumError, match="SHA-256 mismatch"):
        mr.download_file(src.as_uri(), dest, "0" * 64)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()
    with serve(src.parent) as base, pytest.raises(mr.ChecksumError):
        mr.download_file(f"{base}/blob.bin", dest, hashlib.sha256(b"other").hexdigest())
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()
    # a corrupted cached file is replaced by a good download
    dest.write_bytes(b"corrupt")
    assert mr.sha256_file(mr.download_file(src.as_uri(), dest, sha)) == sha


def test_http_download_interrupted_then_resumed(tmp_path):
    src, sha = _payload(tmp_path)
    dest = tmp_path / "cache" / "blob.bin"
    part = dest.with_name("blob.bin.part")
    with serve(src.parent) as base:
        with pytest.raises(mr.DownloadError, match="resume"):
            mr.download_file(f"{base}/cut/blob.bin", dest, sha, timeout=10)
        assert not dest.exists() and 0 < part.stat().st_size < src.stat().st_size
        kept = part.stat().st_size
        assert mr.download_file(f"{base}/blob.bin", dest, sha, timeout=10) == dest
        assert _Handler.requests[-1]["range"] == f"bytes={kept}-"  # resumed, not restarted
    assert dest.read_bytes() == src.read_bytes() and not part.exists()


def test_http_server_ignoring_range_restarts_cleanly(tmp_path):
    src, sha = _payload(tmp_path)
    dest = tmp_path / "cache" / "blob.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name("blob.bin.part").write_bytes(b"garbage from an old attempt")
    with serve(src.parent, ignore_range=True) as base:
        mr.download_file(f"{base}/blob.bin", dest, sha, timeout=10)
    assert dest.read_bytes() == src.read_bytes()


def test_http_errors_and_cancel(tmp_path):
    src, sha = _payload(tmp_path)
    dest = tmp_path / "cache" / "blob.bin"
    with serve(src.parent) as base:
        with pytest.raises(mr.DownloadError, match="HTTP 404"):
            mr.download_file(f"{base}/missing.bin", dest, sha, timeout=10)
        with pytest.raises(mr.DownloadError, match="cancelled"):
            mr.download_file(f"{base}/blob.bin", dest, sha, timeout=10, cancelled=lambda: True)
    assert not dest.exists()
    with pytest.raises(mr.DownloadError, match="only https"):
        mr.download_file("ftp://example.org/x", dest, sha)


# ----------------------------------------------------------------------------- weights folders
@pytest.fixture(scope="module")
def seg_weights(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("slicer")  # logic.py is the MRML facade; export_random_weights lives there
    from PlaneSSLLib.slicer_logic.logic import export_random_weights

    return export_random_weights(tmp_path_factory.mktemp("w") / "seg", "segment_heart")


def _published(tmp_path: Path, archive: Path, url: str) -> mr.ModelEntry:
    raw = json.loads((ROOT / "Resources" / "Models.json").read_text())
    entry = raw["models"][0]
    entry.update(url=url, sha256=hashlib.sha256(archive.read_bytes()).hexdigest(), status="published")
    path = tmp_path / "Models.json"
    path.write_text(json.dumps(raw))
    return mr.load_registry(path)[0]


def test_install_published_model_over_http_and_file(tmp_path, seg_weights):
    from PlaneSSLLib.inference.weights import zip_weights

    archive = zip_weights(seg_weights.path, tmp_path / "srv" / "seg.zip")
    with serve(archive.parent) as base:
        entry = _published(tmp_path, archive, f"{base}/seg.zip")
        local = mr.install_model(entry, tmp_path / "cache")
        assert local.path == tmp_path / "cache" / "models" / entry.id / entry.version
        assert local.task == "segment_heart" and local.source == entry.id
        assert sorted(p.name for p in local.path.iterdir()) == ["manifest.json", "model.safetensors"]
        n = len(_Handler.requests)
        assert mr.install_model(entry, tmp_path / "cache").path == local.path  # cached: no new request
        assert len(_Handler.requests) == n
    assert not list((tmp_path / "cache" / "downloads").glob("*"))  # archive removed after unpacking
    entry = _published(tmp_path, archive, archive.as_uri())
    assert mr.resolve_model(entry.id, "segment_heart", [entry], tmp_path / "cache2").path.is_dir()
    with pytest.raises(mr.ModelFolderError, match="is for Cardiac segmentation"):
        mr.resolve_model(entry.id, "lines", [entry], tmp_path / "cache2")


def test_bad_archive_is_rejected_and_not_cached(tmp_path, seg_weights):
    import zipfile

    archive = tmp_path / "srv" / "bad.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(seg_weights.path / "manifest.json", "manifest.json")
    entry = _published(tmp_path, archive, archive.as_uri())
    with pytest.raises(mr.DownloadError, match="no model.safetensors"):
        mr.install_model(entry, tmp_path / "cache")
    assert not (tmp_path / "cache" / "models" / entry.id / entry.version).exists()
    assert not [p for p in (tmp_path / "cache" / "models" / entry.id).iterdir()]  # no temp folder left


def test_local_folder_validation_messages(tmp_path, seg_weights):
    assert mr.validate_model_folder(seg_weights.path, "segment_heart").config["line_channels"] == 4
    with pytest.raises(mr.ModelFolderError, match="not a folder"):
        mr.validate_model_folder(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(mr.ModelFolderError, match="missing model.safetensors and manifest.json"):
        mr.validate_model_folder(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"x")
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(mr.ModelFolderError, match="not valid JSON"):
        mr.validate_model_folder(bad)
    (bad / "manifest.json").write_text(json.dumps({"format": "planessl-weights", "format_version": 1}))
    with pytest.raises(mr.ModelFolderError, match="missing key"):
        mr.validate_model_folder(bad)
    with pytest.raises(mr.ModelFolderError, match=r"trained for task 'seg' \(cardiac segmentation.*expected "
                                                  r"manifest task 'lines' or 'both'"):
        mr.validate_model_folder(seg_weights.path, "lines")
    with pytest.raises(mr.ModelFolderError, match="no model chosen"):
        mr.resolve_model("", "lines", [])
    with pytest.raises(mr.RegistryError, match="no model 'nope'"):
        mr.resolve_model("nope", "lines", [])


def test_slicer_tasks_accept_the_trainers_manifest_tasks(tmp_path, seg_weights):
    """segment_heart ← 'seg', classify_knee ← 'acl' (an exam classifier), lines ← 'lines'/'both'."""
    from PlaneSSLLib.slicer_logic.logic import export_random_weights

    assert mr.MANIFEST_TASKS == {"segment_heart": ("seg",), "classify_knee": ("acl",), "lines": ("lines", "both")}
    assert seg_weights.manifest["task"] == "seg"
    assert seg_weights.manifest["label_names"] == ["background", "RV", "Myo", "LV"]
    knee = export_random_weights(tmp_path / "acl", "classify_knee")
    assert knee.manifest["task"] == "acl" and knee.manifest["architecture"]["name"] == "PlaneSSLExamClassifier"
    assert "threshold" in knee.manifest["decision"]
    line = export_random_weights(tmp_path / "lines", "lines", channels=("SAG", "COR"))
    assert line.manifest["task"] == "lines" and line.channels == ("SAG", "COR")
    with pytest.raises(mr.ModelFolderError, match=r"trained for task 'acl' \(ACL-tear.*not for Cardiac segmentation"):
        mr.validate_model_folder(knee.path, "segment_heart")
    with pytest.raises(mr.ModelFolderError, match="trained for task 'lines'"):
        mr.validate_model_folder(line.path, "classify_knee")
    # a pretraining export of task "both" serves the lines task, not segmentation
    manifest = json.loads((line.path / "manifest.json").read_text())
    manifest["task"] = "both"
    (line.path / "manifest.json").write_text(json.dumps(manifest))
    assert mr.validate_model_folder(line.path, "lines").manifest["task"] == "both"
    with pytest.raises(mr.ModelFolderError, match="trained for task 'both'"):
        mr.validate_model_folder(line.path, "segment_heart")


# ----------------------------------------------------------------------------- dependencies
def test_dependency_checks_read_metadata_only():
    name, spec = dependencies.parse_requirement("pylibjpeg-openjpeg >= 2.0 ; python_version > '3'")
    assert (name, spec) == ("pylibjpeg-openjpeg", ">=2.0")
    assert dependencies.satisfies("2.13.0+cpu", ">=2.2")
    assert not dependencies.satisfies("1.13.1", ">=2.2")
    assert dependencies.satisfies("3.0.2", ">=3.0,<4")
    status = dependencies.check(["numpy>=1.0", "surely-not-installed-pkg>=1"])
    assert status[0].satisfied and status[0].installed
    assert not status[1].satisfied and status[1].installed is None
    assert dependencies.missing(["surely-not-installed-pkg>=1"]) == ["surely-not-installed-pkg>=1"]
    rows = dict(dependencies.versions_report())
    assert rows["PlaneSSL"] and "torch" in rows and "Python" in rows
    assert dependencies.torch_status().name == "torch"
    assert not any(r.startswith(("torch", "monai", "tensorboard")) for r in dependencies.PIP_REQUIREMENTS)
