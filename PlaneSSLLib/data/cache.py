"""The slice cache: memory-mapped prepared images, an optional label plane, a geometry index, JSON metadata.

One layout, one opener (:func:`open_cache`), one writer (:func:`write_cache`) for both kinds of
content: ``"slices"`` (``planessl prepare``, ``data.prepare.prepare_cache``: every usable slice of
every labelled view, for pretraining and the knee exams) and ``"seg"``
(``data.segmentation.prepare_seg_cache``: the SAX slices at ED and ES with their ACDC labels).
``ROOT`` is the ``--out`` folder of ``planessl prepare`` (or the seg cache root)::

    ROOT/current.json          {"key": KEY}: the cache the last preparation wrote or reused
    ROOT/KEY/images.npy        (N, H, W) float16 or float32, opened with ``np.load(mmap_mode="r")``
    ROOT/KEY/labels.npy        (N, H, W) uint8 label maps on the same grid (content "seg" only)
    ROOT/KEY/index.npy         (N,) structured array, one row per slice: ``INDEX_DTYPE`` ("slices")
                               or ``SEG_INDEX_DTYPE`` ("seg")
    ROOT/KEY/meta.json         format, version, key, content, config, normalisation, n_slices,
                               image_shape, dtype, spacing_mm, data_fingerprint, subjects, and what
                               each preparation adds (studies, counts, warnings; label names, notes)

``KEY`` = ``cache_key(config, data_fingerprint, content)``: a hash of the cache format version,
the content, every preparation setting and the fingerprint of the scanned files (paths relative
to DATA, sizes, modification times), so a changed config or changed data never reads a stale
cache. A cache is written into ``ROOT/.tmp-KEY-<pid>``, checked, and renamed into place;
``meta.json`` is written last, so a folder without it is incomplete. Nothing identifying is
stored: studies and series by hashed UID (``dicom.records.hash_identifier``), subjects by hashed
PatientID, no file paths.

:func:`open_cache` checks everything at open time, so a damaged cache is a :class:`CacheError`
naming the file and the problem, never a later traceback: a missing or truncated array file, a
``meta.json`` that does not parse or lacks keys, an index whose fields or length disagree with the
arrays, another format version (an older cache: "re-run 'planessl prepare'").

Index fields of content "slices" (planes are those of the *prepared* image, so line
coefficients come straight from them):

    subject int32           subject index (``meta["subjects"][i]["key"]`` = hashed PatientID)
    study int32             study index (``meta["studies"]``)
    study_key U16           hashed StudyInstanceUID
    series_key U24          hashed SeriesInstanceUID (``-n`` when a series was split)
    anatomy int8            ``codes.ANATOMIES`` index (0 heart, 1 knee)
    view int8               ``codes.VIEW_CODES`` (2CH 0, 3CH 1, 4CH 2, SAX 3, SAG 4, COR 5, AX 6)
    stack int32             stack id (parallel planes of one view in one study; ``preprocess.index``)
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

Index fields of content "seg": subject (index and hashed PatientID ``subject_key``), study_key,
phase kind (0 = ED, 1 = ES), cine phase, slice ``k`` of ``n_k`` (along the DICOM normal, as in
the NIfTI label volume), ``location_mm`` (n̂ · o along that normal), and the same plane fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import __version__
from ..errors import PlaneSSLError
from ..geometry.planes import ImagePlane
from ..preprocess.codes import ANATOMIES, VIEW_NAMES
from ..preprocess.config import PrepareConfig

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "CONTENTS",
    "IMAGES",
    "INDEX",
    "INDEX_DTYPE",
    "LABELS",
    "META",
    "REQUIRED_META",
    "SEG_INDEX_DTYPE",
    "CacheError",
    "Content",
    "SliceCache",
    "base_meta",
    "cache_key",
    "data_fingerprint",
    "open_cache",
    "resolve_cache_dir",
    "reuse_cache",
    "write_cache",
    "write_meta",
]

CACHE_FORMAT = "planessl-slice-cache"
#: Bumped whenever the layout or the meaning of a field changes.
#: 2: knee SAG location runs medial -> lateral (laterality)
#: 3: one layout for pretraining and segmentation caches (meta "content", optional labels.npy)
CACHE_VERSION = 3
#: The format name of the separate segmentation caches before version 3.
_OLD_SEG_FORMAT = "planessl-seg-cache"

#: The prepared image's plane (patient LPS, mm) and its source grid: the last fields of every index row.
_GEOMETRY_FIELDS = [
    ("origin_lps", "<f8", (3,)),
    ("x_dir_lps", "<f8", (3,)),
    ("y_dir_lps", "<f8", (3,)),
    ("spacing_mm", "<f8", (2,)),
    ("shape_px", "<i4", (2,)),
    ("source_spacing_mm", "<f8", (2,)),
    ("source_shape_px", "<i4", (2,)),
]

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
        *_GEOMETRY_FIELDS,
    ]
)

SEG_INDEX_DTYPE = np.dtype([
    ("subject", "<i4"),
    ("subject_key", "<U16"),
    ("study_key", "<U16"),
    ("phase_kind", "i1"),  # 0 ED, 1 ES
    ("phase", "<i2"),  # cine phase index (time order)
    ("k", "<i2"),  # slice along the DICOM normal (NIfTI k)
    ("n_k", "<i2"),
    ("location_mm", "<f8"),  # n̂ · o along the stack's DICOM normal
    *_GEOMETRY_FIELDS,
])


@dataclass(frozen=True)
class Content:
    """What a cache holds: its index fields, whether it has a label plane, and which command makes it."""

    name: str
    description: str
    index_dtype: np.dtype
    labels: bool
    made_by: str

    @property
    def rebuild(self) -> str:
        return f"re-run {self.made_by} to rebuild it"


CONTENTS: dict[str, Content] = {
    "slices": Content("slices", "prepared slices of every labelled view", INDEX_DTYPE, False, "'planessl prepare'"),
    "seg": Content("seg", "SAX slices at ED/ES with ACDC labels", SEG_INDEX_DTYPE, True,
                   "'planessl finetune seg' with data.root set"),
}

IMAGES, LABELS, INDEX, META, CURRENT = "images.npy", "labels.npy", "index.npy", "meta.json", "current.json"
#: Keys every ``meta.json`` holds (``base_meta``), checked when a cache is opened.
REQUIRED_META = ("format", "version", "key", "content", "created_by", "config", "normalisation", "n_slices",
                 "image_shape", "dtype", "spacing_mm", "data_fingerprint", "subjects")
_ANY_REBUILD = ("re-run 'planessl prepare' (or, for a segmentation cache, 'planessl finetune seg' with data.root set) "
                "to rebuild it")

T = TypeVar("T")


class CacheError(PlaneSSLError):
    """A cache cannot be used (missing, incomplete, damaged, wrong version, stale); the message names the file."""


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


def cache_key(config: PrepareConfig, fingerprint: str, content: str = "slices") -> str:
    """Directory name of the ``content`` cache for ``config`` on data with ``fingerprint``."""
    text = f"{CACHE_FORMAT}:{CACHE_VERSION}:{content}:{config.digest()}:{fingerprint}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class SliceCache:
    """An opened cache. The arrays are memory-mapped lazily (and re-opened in each DataLoader worker).

    Every cache: ``images``, ``index``, ``meta``, ``image_shape``, ``spacing_mm``, ``subject_keys``,
    ``image(i)``, ``plane(i)``. Content "slices": ``anatomies()``, ``view_name(i)``. Content "seg":
    ``labels``, ``volumes(...)``, ``volume_spacing_mm(...)``.
    """

    path: Path
    meta: dict[str, Any]
    index: np.ndarray

    def __post_init__(self) -> None:
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    # -- pickling for DataLoader workers: never copy the mapped arrays
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "meta": self.meta, "index": self.index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.meta, self.index = state["path"], state["meta"], state["index"]
        self._images = self._labels = None

    @property
    def images(self) -> np.ndarray:
        """``(N, H, W)`` read-only memory map of the prepared images."""
        if self._images is None:
            self._images = np.load(self.path / IMAGES, mmap_mode="r")
        return self._images

    @property
    def labels(self) -> np.ndarray:
        """``(N, H, W)`` uint8 label maps on the prepared grid (read-only map); CacheError without labels."""
        if not self.has_labels:
            raise CacheError(f"{self.path}: a cache of {self.description}, without labels")
        if self._labels is None:
            self._labels = np.load(self.path / LABELS, mmap_mode="r")
        return self._labels

    def __len__(self) -> int:
        return len(self.index)

    # -- what meta.json says (checked when the cache was opened)
    key = property(lambda self: str(self.meta["key"]), doc="The cache key (settings + data fingerprint).")
    content = property(lambda self: str(self.meta["content"]), doc='``"slices"`` or ``"seg"`` (``CONTENTS``).')
    description = property(lambda self: CONTENTS[self.content].description)
    has_labels = property(lambda self: CONTENTS[self.content].labels)
    spacing_mm = property(lambda self: float(self.meta["spacing_mm"]),
                          doc="In-plane pixel spacing of the prepared images.")
    n_subjects = property(lambda self: len(self.meta["subjects"]))
    subject_keys = property(lambda self: [s["key"] for s in self.meta["subjects"]],
                            doc="Hashed PatientID of each subject index.")
    subject_groups = property(lambda self: [s.get("group") for s in self.meta["subjects"]],
                              doc="Diagnosis group of each subject index (ACDC Group, M&Ms-2 DISEASE; None: unknown).")

    @property
    def config(self) -> PrepareConfig:
        cfg = dict(self.meta["config"])
        cfg["clip_percentiles"] = tuple(cfg["clip_percentiles"])
        return PrepareConfig(**cfg)

    @property
    def image_shape(self) -> tuple[int, int]:
        h, w = self.meta["image_shape"]
        return int(h), int(w)

    def image(self, i: int) -> np.ndarray:
        """Prepared image ``i`` as float32 ``(H, W)``."""
        return np.asarray(self.images[i], dtype=np.float32)

    def plane(self, i: int) -> ImagePlane:
        """The prepared image's plane (patient LPS, mm)."""
        r = self.index[i]
        return ImagePlane(r["origin_lps"], r["x_dir_lps"], r["y_dir_lps"], tuple(r["spacing_mm"]), tuple(r["shape_px"]))

    # -- content "slices"
    def anatomies(self) -> list[str]:
        """Anatomies present, in code order."""
        return [ANATOMIES[a] for a in np.unique(self.index["anatomy"]).tolist()]

    def view_name(self, i: int) -> str:
        return VIEW_NAMES[int(self.index["view"][i])]

    # -- content "seg"
    def volumes(self, subjects: Sequence[int] | None = None) -> dict[tuple[int, int], np.ndarray]:
        """Rows of each (subject, phase kind) volume, ordered by ``k``: ``{(subject, kind): rows}``."""
        idx = self.index
        keep = np.ones(len(idx), bool) if subjects is None else np.isin(idx["subject"], np.asarray(list(subjects)))
        out: dict[tuple[int, int], list[int]] = {}
        for row in np.flatnonzero(keep).tolist():
            out.setdefault((int(idx["subject"][row]), int(idx["phase_kind"][row])), []).append(row)
        return {key: np.array(sorted(rows, key=lambda r: int(idx["k"][r])), dtype=np.int64)
                for key, rows in sorted(out.items())}

    def volume_spacing_mm(self, rows: np.ndarray) -> tuple[float, float, float]:
        """``(slice gap, row, column)`` spacing in mm of a volume's rows (gap: median location step)."""
        loc = np.sort(self.index["location_mm"][rows])
        gap = float(np.median(np.diff(loc))) if len(loc) > 1 else 1.0
        dr, dc = (float(v) for v in self.index["spacing_mm"][rows[0]])
        return (gap, dr, dc)


# ----------------------------------------------------------------------------- opening
def resolve_cache_dir(path: Path) -> Path:
    """The keyed cache folder for ``path``: ``path`` itself, or ``path/<key>`` named by ``current.json``."""
    path = Path(path)
    if not path.exists():
        raise CacheError(f"{path}: no such cache (run 'planessl prepare DATA --out {path}' first)")
    if not path.is_dir():
        raise CacheError(f"{path}: not a cache folder")
    if any((path / name).exists() for name in (META, IMAGES, INDEX)):
        return path
    current = path / CURRENT
    if current.is_file():
        try:
            key = json.loads(current.read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{current}: unreadable ({exc})") from None
        target = path / str(key)
        if not target.is_dir():
            raise CacheError(f"{current} names cache {key}, but {target} does not exist (run 'planessl prepare' again)")
        return target
    raise CacheError(f"{path}: no cache here (neither {META} nor {CURRENT}; run 'planessl prepare DATA --out {path}')")


def open_cache(path: Path, expect_key: str | None = None, content: str | None = "slices") -> SliceCache:
    """Open a cache folder (``ROOT/KEY``) or a preparation's root (``ROOT``, via ``current.json``).

    ``content``: the content the caller needs (``"slices"``, ``"seg"``; None: either).
    ``expect_key``: the key of the data and settings the caller means (e.g.
    ``prepare.expected_cache_key``); another key is a stale cache.
    Raises CacheError, naming the file and the problem, for every check of the module docstring.
    """
    folder = resolve_cache_dir(path)
    if folder.name.startswith(".tmp-"):
        raise CacheError(f"{folder}: incomplete cache (a temporary folder of an unfinished 'planessl prepare')")
    meta = _read_meta(folder)
    spec = CONTENTS[meta["content"]]
    if content is not None and spec.name != content:
        wanted = CONTENTS[content]
        raise CacheError(f"{folder}: a cache of {spec.description} (content {spec.name!r}), but this needs "
                         f"{wanted.description} (content {content!r}), made by {wanted.made_by}")
    if expect_key is not None and meta["key"] != expect_key:
        raise CacheError(
            f"{folder}: stale cache (key {meta['key']}, expected {expect_key}: the preparation config or the data "
            f"changed); {spec.rebuild}"
        )
    return _check_arrays(folder, meta, spec)


def _read_meta(folder: Path) -> dict[str, Any]:
    """``meta.json`` of ``folder``: parsed, of this format and version, with every required key."""
    meta_path = folder / META
    if not meta_path.is_file():
        raise CacheError(f"{folder}: incomplete cache ({META} missing: preparation was interrupted); "
                         f"{_ANY_REBUILD}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CacheError(f"{meta_path}: unreadable ({exc}); {_ANY_REBUILD}") from None
    if not isinstance(meta, dict):
        raise CacheError(f"{meta_path}: not a PlaneSSL slice cache (a JSON {type(meta).__name__}, not an object)")
    if meta.get("format") == _OLD_SEG_FORMAT:
        raise CacheError(f"{folder}: a segmentation cache of an older PlaneSSL (format {_OLD_SEG_FORMAT}, version "
                         f"{meta.get('version')!r}); this PlaneSSL reads slice-cache version {CACHE_VERSION}; "
                         f"{CONTENTS['seg'].rebuild}")
    if meta.get("format") != CACHE_FORMAT:
        raise CacheError(f"{meta_path}: not a PlaneSSL slice cache (format {meta.get('format')!r})")
    spec = CONTENTS.get(str(meta.get("content")))
    rebuild = spec.rebuild if spec is not None else CONTENTS["slices"].rebuild
    if meta.get("version") != CACHE_VERSION:
        raise CacheError(f"{folder}: cache format version {meta.get('version')!r}, this PlaneSSL reads version "
                         f"{CACHE_VERSION}; {rebuild}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CacheError(f"{meta_path}: lacks {', '.join(missing)}; {rebuild}")
    if spec is None:
        raise CacheError(f"{meta_path}: unknown content {meta['content']!r} (known: {', '.join(CONTENTS)})")
    problems = []
    n, shape = meta["n_slices"], meta["image_shape"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        problems.append(f"n_slices {n!r}")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
        problems.append(f"image_shape {shape!r}")
    if meta["dtype"] not in ("float16", "float32"):
        problems.append(f"dtype {meta['dtype']!r}")
    subjects = meta["subjects"]
    if not (isinstance(subjects, list) and all(isinstance(s, dict) and "key" in s for s in subjects)):
        problems.append("subjects (a list of {\"key\": ...} expected)")
    if not isinstance(meta["config"], dict):
        problems.append("config")
    if problems:
        raise CacheError(f"{meta_path}: bad {'; '.join(problems)}; {rebuild}")
    return meta


def _load_array(folder: Path, name: str, spec: Content, mmap: bool) -> np.ndarray:
    path = folder / name
    if not path.is_file():
        raise CacheError(f"{folder}: incomplete cache ({name} missing); {spec.rebuild}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # a truncated file: "mmap length is greater than file size"
        raise CacheError(f"{path}: damaged or truncated ({exc}); {spec.rebuild}") from None


def _check_arrays(folder: Path, meta: dict[str, Any], spec: Content) -> SliceCache:
    """Open the arrays of a cache whose ``meta`` is checked; their shapes, types and lengths must agree."""
    n, (h, w), dtype = meta["n_slices"], meta["image_shape"], np.dtype(meta["dtype"])
    expected = {IMAGES: ((n, h, w), dtype)}
    if spec.labels:
        expected[LABELS] = ((n, h, w), np.dtype(np.uint8))
    arrays = {}
    for name, (shape, dt) in expected.items():
        array = _load_array(folder, name, spec, mmap=True)
        if array.shape != shape or array.dtype != dt:
            raise CacheError(f"{folder / name}: holds {array.shape} {array.dtype}, but {META} says {shape} {dt}; "
                             f"{spec.rebuild}")
        arrays[name] = array
    index = _load_array(folder, INDEX, spec, mmap=False)
    if index.dtype != spec.index_dtype or index.ndim != 1:
        raise CacheError(f"{folder / INDEX}: unexpected index fields for content {spec.name!r}; {spec.rebuild}")
    if len(index) != n:
        raise CacheError(f"{folder / INDEX}: {len(index)} rows, but {IMAGES} holds {n} slices; {spec.rebuild}")
    cache = SliceCache(folder, meta, index)
    cache._images = arrays[IMAGES]
    cache._labels = arrays.get(LABELS)
    return cache


# ----------------------------------------------------------------------------- writing
def base_meta(key: str, content: str, config: PrepareConfig, n_slices: int, fingerprint: str,
              subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``meta.json`` keys every cache holds (``REQUIRED_META``); a preparation adds its own."""
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key": key,
        "content": content,
        "created_by": f"planessl {__version__}",
        "config": config.to_dict(),
        "normalisation": config.normalisation_record(),
        "n_slices": int(n_slices),
        "image_shape": [config.size_px, config.size_px],
        "dtype": config.dtype,
        "spacing_mm": float(config.spacing_mm),
        "data_fingerprint": fingerprint,
        "subjects": subjects,
    }


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """``meta.json`` (written last: its presence marks the cache complete)."""
    tmp = folder / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / META)


def _write_current(root: Path, key: str) -> None:
    """Point ``root/current.json`` at cache ``key`` (atomic replace)."""
    tmp = root / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"key": key}), encoding="utf-8")
    os.replace(tmp, root / CURRENT)


def _install(tmp_folder: Path, final: Path) -> None:
    """Rename a finished temporary cache folder into place, replacing an older one of the same key."""
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp_folder, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp_folder, final)


def reuse_cache(out_root: Path, key: str, content: str) -> SliceCache | None:
    """The complete, intact cache ``out_root/key`` (``current.json`` now points at it), or None."""
    final = Path(out_root) / key
    if not (final / META).is_file():
        return None
    try:
        cache = open_cache(final, expect_key=key, content=content)
    except CacheError:
        return None  # damaged: the caller prepares it again
    _write_current(Path(out_root), key)
    return cache


_STALE = re.compile(r"^\.(tmp|old)-.+-(\d+)$")


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (POSIX); elsewhere assumed alive (its folder is then kept)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_stale_folders(out_root: Path) -> list[Path]:
    """Remove ``.tmp-KEY-PID`` / ``.old-KEY-PID`` folders under ``out_root`` whose writer ``PID`` no longer
    runs (a ``prepare`` killed mid-write leaves them, with image arrays inside); returns them."""
    removed = []
    for folder in out_root.iterdir():
        m = _STALE.match(folder.name)
        if m and folder.is_dir() and not _process_alive(int(m.group(2))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def write_cache(out_root: Path, key: str, fill: Callable[[Path], T]) -> T:
    """Write cache ``key`` under ``out_root`` and return what ``fill`` returns.

    ``fill(tmp)`` writes the arrays into the fresh folder ``out_root/.tmp-KEY-<pid>`` and, last,
    ``meta.json`` (:func:`base_meta`, :func:`write_meta`). The folder must then pass the checks of
    :func:`open_cache`; it is renamed to ``out_root/KEY`` (replacing an older one) and
    ``current.json`` points at it. On any failure the temporary folder is removed; the folders of
    writers killed before they could clean up are removed first (``remove_stale_folders``).
    Raises CacheError when ``out_root`` cannot be written (or the written cache fails a check).
    """
    out_root = Path(out_root)
    tmp = out_root / f".tmp-{key}-{os.getpid()}"
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        remove_stale_folders(out_root)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise CacheError(f"{out_root}: cannot write the cache ({exc.strerror or exc})") from None
    try:
        result = fill(tmp)
        meta = _read_meta(tmp)
        _check_arrays(tmp, meta, CONTENTS[meta["content"]])
        _install(tmp, out_root / key)
        _write_current(out_root, key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
