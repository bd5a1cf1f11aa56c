"""The prepared-slice cache: one memory-mapped image array + a geometry index + JSON metadata.

Layout (``ROOT`` = the ``--out`` folder of ``planessl prepare``)::

    ROOT/current.json          {"key": KEY}: the cache the last ``prepare`` wrote or reused
    ROOT/KEY/images.npy        (N, H, W) float16 or float32, opened with ``np.load(mmap_mode="r")``
    ROOT/KEY/index.npy         (N,) structured array ``INDEX_DTYPE`` (one row per slice)
    ROOT/KEY/meta.json         format, version, key, config, normalisation, data_fingerprint, subjects,
                               studies, counts, skipped_frames, warnings

``KEY`` = ``cache_key(config, data_fingerprint)``: a hash of the cache format version, every
preparation setting and the fingerprint of the scanned files (paths relative to DATA, sizes,
modification times), so a changed config or changed data never reads a stale cache. A cache is
written into ``ROOT/.tmp-KEY-<pid>`` and renamed into place; ``meta.json`` is written last, so a
folder without it is incomplete. Nothing identifying is stored: studies and series by hashed
UID (``dicom.records.hash_identifier``), subjects by hashed PatientID, no file paths.

Index fields (one row per prepared slice; planes are those of the *prepared* image, so line
coefficients come straight from them):

    subject int32           subject index (``meta["subjects"][i]["key"]`` = hashed PatientID)
    study int32             study index (``meta["studies"]``)
    study_key U16           hashed StudyInstanceUID
    series_key U24          hashed SeriesInstanceUID (``-n`` when a series was split)
    anatomy int8            ``codes.ANATOMIES`` index (0 heart, 1 knee)
    view int8               ``codes.VIEW_CODES`` (2CH 0, 3CH 1, 4CH 2, SAX 3, SAG 4, COR 5, AX 6)
    stack int32             stack id (parallel planes of one view in one study; ``data.index``)
    position int16          rank along the anatomically oriented stack normal (0 = base / +L... end)
    n_positions int16       positions in the stack
    phase int16             cine phase (time order), n_phases int16 phases at this position
    location float32        relative location in [0, 1], NaN for stacks of < 2 positions
    location_mm float64     n · o along the oriented stack normal
    origin_lps (3,) f8      prepared plane: centre of pixel (0, 0)
    x_dir_lps (3,) f8, y_dir_lps (3,) f8   directions of increasing column and row
    spacing_mm (2,) f8      (row, column) spacing of the prepared image
    shape_px (2,) i4        (rows, columns) of the prepared image
    source_spacing_mm (2,) f8, source_shape_px (2,) i4   of the DICOM image it came from
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PlaneSSLError
from ..geometry.planes import ImagePlane
from .codes import ANATOMIES, VIEW_CODES, VIEW_NAMES
from .config import PrepareConfig

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "INDEX_DTYPE",
    "Cache",
    "CacheError",
    "cache_key",
    "data_fingerprint",
    "open_cache",
    "resolve_cache_dir",
]

CACHE_FORMAT = "planessl-slice-cache"
#: Bumped whenever the layout or the meaning of a field changes.
CACHE_VERSION = 2  # 2: knee SAG location runs medial -> lateral (laterality)

INDEX_DTYPE = np.dtype(
    [
        ("subject", "<i4"),
        ("study", "<i4"),
        ("study_key", "<U16"),
        ("series_key", "<U24"),
        ("anatomy", "i1"),
        ("view", "i1"),
        ("stack", "<i4"),
        ("position", "<i2"),
        ("n_positions", "<i2"),
        ("phase", "<i2"),
        ("n_phases", "<i2"),
        ("location", "<f4"),
        ("location_mm", "<f8"),
        ("origin_lps", "<f8", (3,)),
        ("x_dir_lps", "<f8", (3,)),
        ("y_dir_lps", "<f8", (3,)),
        ("spacing_mm", "<f8", (2,)),
        ("shape_px", "<i4", (2,)),
        ("source_spacing_mm", "<f8", (2,)),
        ("source_shape_px", "<i4", (2,)),
    ]
)

_IMAGES, _INDEX, _META, _CURRENT = "images.npy", "index.npy", "meta.json", "current.json"


class CacheError(PlaneSSLError, RuntimeError):
    """A cache cannot be used (missing, incomplete, wrong version, stale); the message names the path."""


def data_fingerprint(files: list[Path], root: Path) -> str:
    """sha256 over (path relative to ``root``, size, mtime in ns) of every file, sorted."""
    h = hashlib.sha256()
    root = Path(root)
    for path in sorted(files):
        st = path.stat()
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = path.name
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(config: PrepareConfig, fingerprint: str) -> str:
    """Directory name of the cache for ``config`` on data with ``fingerprint``."""
    text = f"{CACHE_FORMAT}:{CACHE_VERSION}:{config.digest()}:{fingerprint}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Cache:
    """An opened cache. ``images`` is memory-mapped lazily (and re-opened in each DataLoader worker)."""

    path: Path
    meta: dict[str, Any]
    index: np.ndarray

    def __post_init__(self) -> None:
        self._images: np.ndarray | None = None

    # -- pickling for DataLoader workers: never copy the mapped array
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "meta": self.meta, "index": self.index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.meta, self.index = state["path"], state["meta"], state["index"]
        self._images = None

    @property
    def images(self) -> np.ndarray:
        """``(N, H, W)`` read-only memory map of the prepared images."""
        if self._images is None:
            self._images = np.load(self.path / _IMAGES, mmap_mode="r")
        return self._images

    def __len__(self) -> int:
        return len(self.index)

    @property
    def key(self) -> str:
        return str(self.meta["key"])

    @property
    def config(self) -> PrepareConfig:
        cfg = dict(self.meta["config"])
        cfg["clip_percentiles"] = tuple(cfg["clip_percentiles"])
        return PrepareConfig(**cfg)

    @property
    def image_shape(self) -> tuple[int, int]:
        h, w = self.meta["image_shape"]
        return int(h), int(w)

    @property
    def n_subjects(self) -> int:
        return len(self.meta["subjects"])

    @property
    def subject_keys(self) -> list[str]:
        """Hashed PatientID of each subject index."""
        return [s["key"] for s in self.meta["subjects"]]

    def anatomies(self) -> list[str]:
        """Anatomies present, in code order."""
        return [ANATOMIES[a] for a in np.unique(self.index["anatomy"]).tolist()]

    def image(self, i: int) -> np.ndarray:
        """Prepared image ``i`` as float32 ``(H, W)``."""
        return np.asarray(self.images[i], dtype=np.float32)

    def plane(self, i: int) -> ImagePlane:
        """The prepared image's plane (patient LPS, mm)."""
        r = self.index[i]
        return ImagePlane(r["origin_lps"], r["x_dir_lps"], r["y_dir_lps"], tuple(r["spacing_mm"]), tuple(r["shape_px"]))

    def view_name(self, i: int) -> str:
        return VIEW_NAMES[int(self.index["view"][i])]


def resolve_cache_dir(path: Path) -> Path:
    """The keyed cache folder for ``path``: ``path`` itself, or ``path/<key>`` named by ``current.json``."""
    path = Path(path)
    if not path.exists():
        raise CacheError(f"{path}: no such cache (run 'planessl prepare DATA --out {path}' first)")
    if not path.is_dir():
        raise CacheError(f"{path}: not a cache folder")
    if (path / _META).exists() or (path / _IMAGES).exists() or (path / _INDEX).exists():
        return path
    current = path / _CURRENT
    if current.is_file():
        try:
            key = json.loads(current.read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{current}: unreadable ({exc})") from None
        target = path / str(key)
        if not target.is_dir():
            raise CacheError(f"{current} names cache {key}, but {target} does not exist (run 'planessl prepare' again)")
        return target
    raise CacheError(
        f"{path}: no cache here (neither {_META} nor {_CURRENT}; run 'planessl prepare DATA --out {path}')"
    )


def open_cache(path: Path, expect_key: str | None = None) -> Cache:
    """Open a cache folder (``ROOT/KEY``) or a prepare output root (``ROOT``, via ``current.json``).

    Raises CacheError, naming the path, when it is missing, incomplete (no ``meta.json`` or
    arrays missing/inconsistent), of another format version, or — when ``expect_key`` is
    given (e.g. ``cache_key(config, fingerprint)`` of the data you mean) — stale.
    """
    folder = resolve_cache_dir(path)
    if folder.name.startswith(".tmp-"):
        raise CacheError(f"{folder}: incomplete cache (a temporary folder of an unfinished 'planessl prepare')")
    meta_path = folder / _META
    if not meta_path.is_file():
        raise CacheError(f"{folder}: incomplete cache ({_META} missing: preparation was interrupted); prepare it again")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CacheError(f"{meta_path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise CacheError(f"{meta_path}: not a PlaneSSL slice cache")
    if meta.get("version") != CACHE_VERSION:
        raise CacheError(
            f"{folder}: cache format version {meta.get('version')!r}, this PlaneSSL reads version {CACHE_VERSION}; "
            "prepare it again"
        )
    if expect_key is not None and meta.get("key") != expect_key:
        raise CacheError(
            f"{folder}: stale cache (key {meta.get('key')}, expected {expect_key}: the preparation config or the data "
            "changed); run 'planessl prepare' again"
        )
    for name in (_IMAGES, _INDEX):
        if not (folder / name).is_file():
            raise CacheError(f"{folder}: incomplete cache ({name} missing); prepare it again")
    try:
        index = np.load(folder / _INDEX, allow_pickle=False)
        images = np.load(folder / _IMAGES, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise CacheError(f"{folder}: damaged cache ({exc}); prepare it again") from None
    n, shape = int(meta.get("n_slices", -1)), tuple(meta.get("image_shape", ()))
    if index.dtype != INDEX_DTYPE:
        raise CacheError(f"{folder / _INDEX}: unexpected index fields; prepare it again")
    if len(index) != n or images.shape != (n, *shape):
        raise CacheError(
            f"{folder}: incomplete cache ({len(index)} index rows, images {images.shape}, meta says {n} × {shape})"
        )
    cache = Cache(folder, meta, index)
    cache._images = images
    return cache


# ----------------------------------------------------------------------------- writing
def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """``meta.json`` (written last: its presence marks the cache complete)."""
    tmp = folder / (_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / _META)


def write_current(root: Path, key: str) -> None:
    """Point ``root/current.json`` at cache ``key`` (atomic replace)."""
    tmp = root / f".{_CURRENT}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"key": key}), encoding="utf-8")
    os.replace(tmp, root / _CURRENT)


def install(tmp_folder: Path, final: Path) -> None:
    """Rename a finished temporary cache folder into place, replacing an older one of the same key."""
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp_folder, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp_folder, final)


def view_code_table() -> dict[str, int]:
    return dict(VIEW_CODES)
