"""The model registry (``Resources/Models.json``), weights downloaded on demand, and local folders.

No Qt and no MRML: the Slicer module calls this with the per-user cache (``default_cache_dir``);
the tests call it with a temporary folder. Only the standard library (and ``PlaneSSLLib.errors``) is
imported at module level (validating a weights folder imports ``inference.manifest``, i.e. torch,
when it is called).

Registry (JSON object): ``format`` = ``"planessl-model-registry"``, ``format_version`` = 1, and
``models``, a list of entries with ``id``, ``title``, ``task`` (``segment_heart``,
``classify_knee`` or ``lines``), ``anatomy``, ``version``, ``status``, ``url``, ``sha256``,
``size_bytes``, ``input`` (``spacing_mm`` [row, column], ``size_hw`` [rows, columns],
``views``), ``labels`` (``[{"value", "name"}]`` or null), ``channels`` (partner views of the line
heatmaps), ``description``. An entry whose ``url`` or ``sha256`` is null is *not yet published*:
it is listed, and choosing it says so, but nothing is downloaded. A *bundled* entry ships with the
extension: ``bundled`` names its weights folder relative to the registry file's folder, ``url`` is
null and ``sha256`` is that of its ``model.safetensors`` (checked before use); the sample weights
(trained on synthetic data, ``scripts/train_sample_weights.sh``) are bundled this way.

Download (``download_file``): the file is fetched into ``<name>.part`` beside its target; an
interrupted HTTP download resumes from the bytes already there (``Range``), a server that
ignores the range starts over; the SHA-256 of the whole file is checked before the part file is
renamed onto the target (atomic), and a mismatch deletes the part file and raises
``ChecksumError``, so a bad or partial file is never taken for the weights. A part file that
cannot be written (a full disk) is deleted at once; a cancel takes effect within ``_POLL_S``
seconds however slow the server (the network reads run in a daemon thread). An archive is then
unpacked (``model.safetensors`` + ``manifest.json`` only, no paths) into a temporary folder that
is validated and renamed to ``<cache>/models/<id>/<version>``.

An entry's ``id`` and ``version`` are plain names (letters, digits, ``.``, ``_``, ``+``, ``-``,
starting with a letter or digit: no separator, no ``..``, never absolute), checked when the registry
is read and again before any cache path is built from them; every cache path is resolved inside the
cache, so nothing is written or deleted outside it.

Cache: ``default_cache_dir()`` = ``$PLANESSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/planessl``,
else ``~/.cache/planessl``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PlaneSSLError

__all__ = [
    "REGISTRY_FORMAT",
    "entry_available",
    "REGISTRY_FORMAT_VERSION",
    "TASKS",
    "MANIFEST_TASKS",
    "RegistryError",
    "DownloadError",
    "ChecksumError",
    "ModelFolderError",
    "ModelEntry",
    "LocalModel",
    "default_registry_path",
    "default_cache_dir",
    "load_registry",
    "find_entry",
    "sha256_file",
    "download_file",
    "install_model",
    "validate_model_folder",
    "resolve_model",
]

REGISTRY_FORMAT = "planessl-model-registry"
REGISTRY_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
#: Tasks a model can serve, with what the GUI calls them.
TASKS = {"segment_heart": "Cardiac segmentation", "classify_knee": "Knee ACL tear", "lines": "Plane lines"}
#: Manifest ``task`` values accepted for each task: ``planessl finetune seg`` exports ``seg``,
#: ``planessl finetune acl`` ``acl`` (a ``PlaneSSLExamClassifier``), pretraining ``lines``/``both``
#: (what each must hold is the task table ``inference.manifest.TASKS``).
MANIFEST_TASKS = {"segment_heart": ("seg",), "classify_knee": ("acl",), "lines": ("lines", "both")}
_REQUIRED = ("id", "title", "task", "anatomy", "version", "url", "sha256", "input")
_CHUNK = 1 << 20
#: Seconds between two checks of a download's cancel flag (a cancel takes effect within this).
_POLL_S = 0.2
#: What an ``id`` or ``version`` may be: a name that is one path part, never a path.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")

ProgressCallback = Callable[[int, Any], None]  # (bytes done, total bytes or None)


class RegistryError(PlaneSSLError, ValueError):
    """The registry file is unreadable or an entry is malformed; the message names which."""


class DownloadError(PlaneSSLError, RuntimeError):
    """Weights could not be fetched (network, missing file, unpublished model)."""


class ChecksumError(DownloadError):
    """The downloaded file's SHA-256 is not the registry's; the file was deleted."""


class ModelFolderError(PlaneSSLError, ValueError):
    """A local weights folder that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class ModelEntry:
    """One model of the registry (see the module docstring for the fields)."""

    id: str
    title: str
    task: str
    anatomy: str
    version: str
    url: str | None
    sha256: str | None
    input_spacing_mm: tuple[float, float]
    input_size_hw: tuple[int, int]
    views: tuple[str, ...] = ()
    labels: tuple[tuple[int, str], ...] = ()
    channels: tuple[str, ...] = ()
    size_bytes: int | None = None
    status: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    bundled: Path | None = None  # the shipped weights folder (absolute), for a bundled entry

    @property
    def published(self) -> bool:
        """True when the weights can be downloaded (a URL and a checksum are known)."""
        return bool(self.url) and bool(self.sha256)

    @property
    def archive_name(self) -> str:
        suffix = Path(urllib.parse.urlparse(self.url or "").path).suffix
        suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ".zip"
        return f"{self.id}-{self.version}{suffix}"

    def describe(self) -> str:
        """One line for the GUI: title, version, and whether it can be used now."""
        if self.bundled is not None:
            state = f" — {self.status or 'bundled'}"
        else:
            state = "" if self.published else f" — {self.status or 'not yet published'}"
        return f"{self.title} (v{self.version}){state}"


@dataclass(frozen=True)
class LocalModel:
    """A usable weights folder: where it is, its manifest, and what it was checked for."""

    path: Path
    manifest: dict[str, Any]
    task: str
    source: str  # registry id, or "local folder"

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest["architecture"]["config"])

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("channels") or ())


# ----------------------------------------------------------------------------- registry
def default_registry_path() -> Path:
    """``Resources/Models.json`` of this source tree (or of the installed module)."""
    here = Path(__file__).resolve()
    for base in (here.parents[2], here.parents[1]):
        candidate = base / "Resources" / "Models.json"
        if candidate.is_file():
            return candidate
    return here.parents[2] / "Resources" / "Models.json"


def default_cache_dir() -> Path:
    """Per-user cache: ``$PLANESSL_CACHE_DIR``, ``$XDG_CACHE_HOME/planessl`` or ``~/.cache/planessl``."""
    if os.environ.get("PLANESSL_CACHE_DIR"):
        return Path(os.environ["PLANESSL_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "planessl"


def _pair(value: Any, kind: type, where: str) -> tuple:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise RegistryError(f"{where}: expected a list of two numbers, got {value!r}")
    try:
        out = tuple(kind(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{where}: expected numbers, got {value!r}") from exc
    if any(v <= 0 for v in out):
        raise RegistryError(f"{where}: values must be positive, got {value!r}")
    return out


def _check_name(value: Any, key: str, where: str) -> str:
    """``value`` when it is a plain name (:data:`_NAME`), else RegistryError naming ``key``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise RegistryError(f"{where}: {key} must be a plain name (letters, digits, '.', '_', '+', '-'; "
                            f"no path separator, no '..'), got {value!r}")
    return value


def _cache_path(cache: Path, *parts: str) -> Path:
    """``cache/part/...``, refused (RegistryError) unless it resolves inside ``cache``."""
    path = cache.joinpath(*parts)
    if not path.resolve().is_relative_to(cache.resolve()):
        raise RegistryError(f"{path}: outside the model cache {cache}; refused")
    return path


def _model_paths(entry: ModelEntry, cache: Path) -> tuple[Path, Path]:
    """(installed folder, downloaded archive) of ``entry`` in ``cache``, both checked to lie inside it."""
    where = f"model {entry.id!r}"
    _check_name(entry.id, "id", where)
    _check_name(entry.version, "version", where)
    return (_cache_path(cache, "models", entry.id, entry.version),
            _cache_path(cache, "downloads", entry.archive_name))


def _entry(raw: Any, where: str, registry_dir: Path | None = None) -> ModelEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: expected an object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise RegistryError(f"{where}: missing key(s): {', '.join(missing)}")
    where = f"{where} ({raw['id']!r})"
    _check_name(raw["id"], "id", where)
    _check_name(raw["version"], "version", where)
    if raw["task"] not in TASKS:
        raise RegistryError(f"{where}: task must be one of {', '.join(TASKS)}, got {raw['task']!r}")
    if raw["anatomy"] not in ("heart", "knee"):
        raise RegistryError(f"{where}: anatomy must be heart or knee, got {raw['anatomy']!r}")
    sha = raw["sha256"]
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64
                                and all(c in "0123456789abcdef" for c in sha.lower())):
        raise RegistryError(f"{where}: sha256 must be 64 hexadecimal digits or null")
    url = raw["url"]
    if url is not None:
        scheme = urllib.parse.urlparse(str(url)).scheme
        if scheme not in ("https", "http", "file"):
            raise RegistryError(f"{where}: url must be https://, http:// or file://, got {url!r}")
    bundled = raw.get("bundled")
    if bundled is not None:
        if url is not None or sha is None or not isinstance(bundled, str) or Path(bundled).is_absolute() \
                or ".." in Path(bundled).parts:
            raise RegistryError(f"{where}: a bundled entry has url null, the sha256 of its model.safetensors "
                                "and 'bundled' = a folder relative to the registry file")
    elif (url is None) != (sha is None):
        raise RegistryError(f"{where}: url and sha256 are given together or not at all")
    size = raw.get("size_bytes")
    if size is not None and not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        raise RegistryError(f"{where}: size_bytes must be a positive integer or null, got {size!r}")
    inp = raw["input"]
    if not isinstance(inp, dict):
        raise RegistryError(f"{where}: input must be an object")
    labels = raw.get("labels") or []
    try:
        label_pairs = tuple((int(item["value"]), str(item["name"])) for item in labels)
    except (TypeError, KeyError, ValueError) as exc:
        raise RegistryError(f"{where}: labels must be a list of {{value, name}}") from exc
    known = set(_REQUIRED) | {"labels", "channels", "size_bytes", "status", "description", "bundled"}
    return ModelEntry(
        id=str(raw["id"]), title=str(raw["title"]), task=raw["task"], anatomy=raw["anatomy"],
        version=str(raw["version"]), url=url, sha256=sha.lower() if sha else None,
        input_spacing_mm=_pair(inp.get("spacing_mm"), float, f"{where}: input.spacing_mm"),
        input_size_hw=_pair(inp.get("size_hw"), int, f"{where}: input.size_hw"),
        views=tuple(inp.get("views") or ()), labels=label_pairs, channels=tuple(raw.get("channels") or ()),
        size_bytes=raw.get("size_bytes"), status=str(raw.get("status") or ""),
        description=str(raw.get("description") or ""),
        extra={k: v for k, v in raw.items() if k not in known},
        bundled=(registry_dir / bundled) if bundled is not None and registry_dir is not None else
        (Path(bundled) if bundled is not None else None),
    )


def load_registry(path: str | os.PathLike | None = None) -> list[ModelEntry]:
    """Every entry of the registry file (default ``default_registry_path()``), validated."""
    path = Path(path) if path is not None else default_registry_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RegistryError(f"{path}: no model registry") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise RegistryError(f"{path}: format must be {REGISTRY_FORMAT!r}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > REGISTRY_FORMAT_VERSION:
        raise RegistryError(f"{path}: format_version {version!r} is not one this PlaneSSL reads "
                            f"(<= {REGISTRY_FORMAT_VERSION}); update the extension")
    models = data.get("models")
    if not isinstance(models, list):
        raise RegistryError(f"{path}: 'models' must be a list")
    entries = [_entry(raw, f"{path}: models[{i}]", path.parent) for i, raw in enumerate(models)]
    ids = [e.id for e in entries]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise RegistryError(f"{path}: duplicate model id(s): {', '.join(dupes)}")
    return entries


def find_entry(entries: Sequence[ModelEntry], model_id: str) -> ModelEntry:
    for entry in entries:
        if entry.id == model_id:
            return entry
    raise RegistryError(f"no model {model_id!r} in the registry (known: {', '.join(e.id for e in entries) or 'none'})")


# ----------------------------------------------------------------------------- download
def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "PlaneSSL"})
    if offset and urllib.parse.urlparse(url).scheme in ("http", "https"):
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked by the caller


class _Fetch:
    """The network side of one download in a daemon thread: opens ``url`` and reads it chunk by chunk
    into a small queue, so that the caller waits at most ``_POLL_S`` between checks of its cancel
    flag, however slow the server (a blocking socket read cannot be interrupted, only abandoned).

    Queue items: ``("response", response)`` once, then ``("chunk", bytes)`` (``b""`` at the end),
    or ``("error", exception)``. ``stop()`` abandons the transfer (the thread ends after its
    current read, at the latest after the socket timeout).
    """

    def __init__(self, url: str, offset: int, timeout: float) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, offset, timeout), daemon=True,
                                        name="planessl-download")
        self._thread.start()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, url: str, offset: int, timeout: float) -> None:
        try:
            response = _open(url, offset, timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._put(("error", exc))
            return
        with response:
            if not self._put(("response", response)):
                return
            read = getattr(response, "read1", None) or response.read  # read1: what has arrived, up to _CHUNK
            try:
                while not self._stopped.is_set():
                    chunk = read(_CHUNK)
                    if not self._put(("chunk", chunk)) or not chunk:
                        return
            except BaseException as exc:  # noqa: BLE001
                self._put(("error", exc))

    def get(self, cancelled: Callable[[], bool] | None) -> tuple[str, Any]:
        """The next item; ``("cancelled", None)`` as soon as ``cancelled()`` is true (checked every ``_POLL_S``)."""
        while True:
            if cancelled is not None and cancelled():
                self.stop()
                return "cancelled", None
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    def stop(self) -> None:
        self._stopped.set()


def download_file(url: str, dest: str | os.PathLike, sha256: str, progress: ProgressCallback | None = None,
                  timeout: float = 60.0, cancelled: Callable[[], bool] | None = None,
                  max_bytes: int | None = None) -> Path:
    """Fetch ``url`` to ``dest`` with a SHA-256 check (atomic, resumable; see the module docstring).

    An existing ``dest`` with the right checksum is returned as is (cached). ``progress(done,
    total)`` is called per chunk; ``cancelled()`` returning True stops the download within
    ``_POLL_S`` seconds, even while the server sends nothing (the part file is kept for a later
    resume), with ``DownloadError``. ``timeout``: seconds the server may stay silent. ``max_bytes``
    (the registry's ``size_bytes``): a file that announces or delivers more is stopped and deleted
    (``DownloadError``). When the part file cannot be written (a full disk, a quota, a read-only
    cache) it is deleted and ``DownloadError`` says why: nothing partial is left behind that
    could fill the disk again or be taken for the weights.
    """
    dest = Path(dest)
    want = sha256.lower()
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: only https://, http:// and file:// URLs are fetched")
    if dest.is_file():
        if sha256_file(dest) == want:
            return dest
        dest.unlink()  # stale or corrupted cache entry
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    fetch = _Fetch(url, offset, timeout)
    try:
        kind, value = fetch.get(cancelled)
        if kind == "cancelled":
            raise DownloadError(f"{url}: download cancelled ({offset} bytes kept for resuming)")
        response = None
        if kind == "error":
            exc = value
            if isinstance(exc, urllib.error.HTTPError):
                if not (exc.code == 416 and offset):  # 416: the part file is already complete: checked below
                    raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            elif isinstance(exc, urllib.error.URLError | OSError):
                raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
            else:
                raise exc
        else:
            response = value
        if response is not None:
            _receive(fetch, response, url, part, offset, progress, cancelled, max_bytes)
    finally:
        fetch.stop()
    got = sha256_file(part)
    if got != want:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: SHA-256 mismatch (expected {want}, got {got}); the download was deleted")
    os.replace(part, dest)
    return dest


def _receive(fetch: _Fetch, response: Any, url: str, part: Path, offset: int, progress: ProgressCallback | None,
             cancelled: Callable[[], bool] | None, max_bytes: int | None) -> None:
    """Write the response's chunks to ``part`` (appended when the server resumed at ``offset``)."""
    status = getattr(response, "status", None)
    resumed = offset > 0 and status == 206
    done = offset if resumed else 0
    length = response.headers.get("Content-Length")
    total = done + int(length) if length and length.isdigit() else None

    def too_big(n: int) -> DownloadError:
        part.unlink(missing_ok=True)
        return DownloadError(f"{url}: {n} bytes, more than the registry's size_bytes {max_bytes}; "
                             "the download was deleted")

    if max_bytes is not None and total is not None and total > max_bytes:
        raise too_big(total)
    try:
        out = open(part, "ab" if resumed else "wb")  # noqa: SIM115 - closed below, before any unlink
    except OSError as exc:
        raise _unwritable(url, part, exc) from exc
    try:
        while True:
            kind, value = fetch.get(cancelled)
            if kind == "cancelled":
                raise DownloadError(f"{url}: download cancelled ({done} bytes kept for resuming)")
            if kind == "error":
                if isinstance(value, urllib.error.URLError | http.client.HTTPException | OSError):
                    raise DownloadError(f"{url}: interrupted after {done} bytes ({value}); run again to resume")
                raise value
            chunk = value
            if not chunk:
                break
            if max_bytes is not None and done + len(chunk) > max_bytes:
                out.close()
                raise too_big(done + len(chunk))
            try:
                out.write(chunk)
            except OSError as exc:
                out.close()
                raise _unwritable(url, part, exc) from exc
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        try:
            out.flush()
            os.fsync(out.fileno())
            out.close()
        except OSError as exc:
            raise _unwritable(url, part, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            out.close()
    if total is not None and done < total:
        raise DownloadError(f"{url}: interrupted after {done} of {total} bytes; run again to resume")


def _unwritable(url: str, part: Path, exc: OSError) -> DownloadError:
    """The part file could not be written (full disk...): delete it and say so."""
    with contextlib.suppress(OSError):
        part.unlink(missing_ok=True)
    reason = exc.strerror or str(exc)
    return DownloadError(f"{url}: cannot write {part} ({reason}); the partial download was deleted")


def _extract_weights(archive: Path, target: Path) -> None:
    """Unpack ``model.safetensors`` + ``manifest.json`` (flat, nothing else) into ``target``."""
    if not zipfile.is_zipfile(archive):
        raise DownloadError(f"{archive}: not a zip archive")
    with zipfile.ZipFile(archive) as zf:
        for wanted in (WEIGHTS_FILE, MANIFEST_FILE):
            matches = [n for n in zf.namelist() if n == wanted or n.endswith("/" + wanted)]
            if len(matches) != 1:
                raise DownloadError(f"{archive}: {'no' if not matches else 'more than one'} {wanted} in the archive")
            with zf.open(matches[0]) as src, open(target / wanted, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


def install_model(entry: ModelEntry, cache_dir: str | os.PathLike | None = None,
                  progress: ProgressCallback | None = None, timeout: float = 60.0,
                  cancelled: Callable[[], bool] | None = None) -> LocalModel:
    """The registry model's weights folder in the cache, downloaded and checked when missing; a
    bundled entry's shipped folder, its ``model.safetensors`` checked against the entry's SHA-256."""
    if entry.bundled is not None:
        weights = entry.bundled / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelFolderError(f"bundled model {entry.id!r}: {weights} is missing (a broken installation)")
        got = sha256_file(weights)
        if got != entry.sha256:
            raise ChecksumError(f"bundled model {entry.id!r}: {weights} has SHA-256 {got}, the registry says "
                                f"{entry.sha256} (a damaged installation)")
        return validate_model_folder(entry.bundled, entry.task, source=entry.id)
    if not entry.published:
        raise DownloadError(f"model {entry.id!r} ({entry.title}) is {entry.status or 'not yet published'}: "
                            "no weights can be downloaded yet; choose a local weights folder instead")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder, download = _model_paths(entry, cache)
    if (folder / WEIGHTS_FILE).is_file() and (folder / MANIFEST_FILE).is_file():
        return validate_model_folder(folder, entry.task, source=entry.id)
    archive = download_file(entry.url or "", download, entry.sha256 or "", progress, timeout, cancelled,
                            max_bytes=entry.size_bytes)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.version}.", dir=folder.parent))
    try:
        _extract_weights(archive, tmp)
        validate_model_folder(tmp, entry.task, source=entry.id)
        if folder.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):
        archive.unlink()  # the unpacked folder is what is kept
    return validate_model_folder(folder, entry.task, source=entry.id)


# ----------------------------------------------------------------------------- local folders
def validate_model_folder(path: str | os.PathLike, task: str | None = None, source: str = "local folder") -> LocalModel:
    """Check a weights folder (``model.safetensors`` + ``manifest.json``) for ``task``.

    The manifest is checked once by ``inference.manifest.validate_manifest`` (imports torch): the
    format, the architecture and the keys of its own task (a segmentation model names one label
    and one SNOMED CT code per class, an ACL-tear model is a ``PlaneSSLExamClassifier`` with its
    decision, a line model names its channels). Its task must be one of ``MANIFEST_TASKS[task]``
    (``segment_heart`` ← ``seg``, ``classify_knee`` ← ``acl``, ``lines`` ← ``lines``/``both``).
    Raises ``ModelFolderError`` with what to fix.
    """
    path = Path(path)
    if task is not None and task not in MANIFEST_TASKS:
        raise ModelFolderError(f"unknown task {task!r} (known: {', '.join(MANIFEST_TASKS)})")
    if not path.is_dir():
        raise ModelFolderError(f"{path}: not a folder; choose the folder that holds {WEIGHTS_FILE} and {MANIFEST_FILE}")
    missing = [name for name in (WEIGHTS_FILE, MANIFEST_FILE) if not (path / name).is_file()]
    if missing:
        raise ModelFolderError(f"{path}: missing {' and '.join(missing)}; a PlaneSSL weights folder holds "
                               f"{WEIGHTS_FILE} and {MANIFEST_FILE} (as written by 'planessl pretrain')")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path / MANIFEST_FILE}: not valid JSON ({exc})") from exc
    from ..inference.manifest import TASKS as MANIFEST_TASK_SPECS
    from ..inference.manifest import WeightsError, validate_manifest

    try:
        validated = validate_manifest(manifest, str(path / MANIFEST_FILE))
    except WeightsError as exc:
        raise ModelFolderError(str(exc)) from exc
    if task is not None and validated.task not in MANIFEST_TASKS[task]:
        raise ModelFolderError(
            f"{path}: the weights were trained for task {validated.task!r} "
            f"({MANIFEST_TASK_SPECS[validated.task].description}), not for {TASKS[task]} "
            f"(expected manifest task {' or '.join(repr(t) for t in MANIFEST_TASKS[task])})")
    return LocalModel(path, manifest, task or validated.task, source)


def entry_available(entry: ModelEntry, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether ``entry`` can be used without the user providing weights: bundled, published
    (downloadable) or already installed in the cache."""
    if entry.published or entry.bundled is not None:
        return True
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        folder, _ = _model_paths(entry, cache)
    except RegistryError:
        return False
    return (folder / MANIFEST_FILE).is_file()


def resolve_model(model: str, task: str, entries: Sequence[ModelEntry] | None = None,
                  cache_dir: str | os.PathLike | None = None, progress: ProgressCallback | None = None,
                  cancelled: Callable[[], bool] | None = None) -> LocalModel:
    """``model`` is a registry id or a local folder path; returns the usable weights folder."""
    if not model:
        raise ModelFolderError("no model chosen: pick a registry model or a local weights folder")
    candidate = Path(model).expanduser()
    if candidate.is_dir() or os.sep in model or (os.altsep and os.altsep in model):
        return validate_model_folder(candidate, task)
    entry = find_entry(entries if entries is not None else load_registry(), model)
    if entry.task != task:
        raise ModelFolderError(f"registry model {entry.id!r} is for {TASKS[entry.task]}, not {TASKS[task]}")
    return install_model(entry, cache_dir, progress, cancelled=cancelled)
