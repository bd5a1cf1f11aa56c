"""``prepare_cache``: scan a data set (any layout of ``data.sources``), label views, resample every usable slice.

Steps: list the files under DATA and fingerprint them (relative path, size, mtime); the cache
key follows from that and the config, and an existing complete cache of that key is reused.
Otherwise: ``data.layout_scan.scan_dataset`` (``dicom.scan.scan_tree`` or the layout's NIfTI/NumPy
reader, views labelled via ``dicom.report.apply_views``), then ``preprocess.index.enumerate_slices``
(stacks, anatomical slice order, relative locations), then each frame is decoded (``dicom.pixels.read_file_frames``),
normalised and resampled (``preprocess.resample.prepare_image``) — in ``jobs`` processes for large
trees — into a memory-mapped array in a temporary folder, renamed into place when complete.
A frame that cannot be decoded is skipped and named in the report; the scan's own problems
(unreadable files and folders) are reported too, and so is every series left out as unusable
(with the scan's reason: one frame without geometry leaves out its series).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import allocated_memmap
from ..dicom.pixels import PixelReadError, read_file_frames
from ..dicom.scan import list_files
from ..errors import PlaneSSLError
from ..geometry.planes import ImagePlane
from ..preprocess.codes import ANATOMIES, VIEW_CODES, VIEW_NAMES
from ..preprocess.config import PrepareConfig
from ..preprocess.index import SliceSource, SliceTable, enumerate_slices
from ..preprocess.resample import prepare_image
from .cache import (
    IMAGES,
    INDEX,
    INDEX_DTYPE,
    CacheError,
    SliceCache,
    base_meta,
    cache_key,
    data_fingerprint,
    reuse_cache,
    write_cache,
    write_meta,
)
from .layout_scan import scan_dataset
from .pairs import PairConfig, line_targets, partner_summary
from .sources import DataSpec

__all__ = ["PrepareError", "PrepareReport", "expected_cache_key", "prepare_cache"]

#: ``progress(stage, done, total)``; stage is "scan" or "resample".
Progress = Callable[[str, int, int], None]

#: Below this many slices per worker the process pool costs more than it saves.
_MIN_SLICES_PER_WORKER = 64


class PrepareError(PlaneSSLError, RuntimeError):
    """Preparation cannot proceed (no data, nothing usable, unwritable output); the message says why."""


@dataclass
class PrepareReport:
    """What ``prepare_cache`` did."""

    cache_dir: Path
    key: str
    reused: bool
    n_slices: int = 0
    n_subjects: int = 0
    n_studies: int = 0
    views: dict[str, int] = field(default_factory=dict)  # slices per "anatomy VIEW"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): frames not decoded
    scan_errors: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) from the scan
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): not images (empty, not DICOM)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (series folder, reason): unusable series
    warnings: list[str] = field(default_factory=list)
    partners: list[str] = field(default_factory=list)  # line-target coverage summary (default pairs)
    notes: list[str] = field(default_factory=list)  # layout quirks met and handled (naming folders; not cached)
    format: str = ""  # the data-set layout read ("" for a reused cache)
    seconds: float = 0.0


def prepare_cache(
    data_dir: Path | DataSpec,
    out_root: Path,
    config: PrepareConfig | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: Progress | None = None,
) -> PrepareReport:
    """Prepare (or reuse) the cache of a data set under ``out_root/<key>``; returns a report.

    ``data_dir``: a :class:`data.sources.DataSpec` (any layout, format resolved) or a folder
    (read as DICOM, today's reader). Raises PrepareError when the data do not exist, hold no
    usable image of a labelled view, or ``out_root`` cannot be written.
    """
    start = time.perf_counter()
    config = config or PrepareConfig()
    spec = data_dir if isinstance(data_dir, DataSpec) else DataSpec("dicom", Path(data_dir))
    data_dir, out_root = Path(spec.root), Path(out_root)
    if not data_dir.exists():
        raise PrepareError(f"{data_dir}: no such file or directory")
    files = _data_files(data_dir, out_root)
    if not files:
        resolved = out_root.resolve()
        if resolved == data_dir.resolve() or resolved in data_dir.resolve().parents:
            raise PrepareError(f"{out_root}: the cache folder holds the data ({data_dir}), whose files are "
                               "then left out as cache files; choose another --out")
        raise PrepareError(f"{data_dir}: no files found")
    fingerprint = _fingerprint(spec, files)
    key = cache_key(config, fingerprint)
    cache = None if force else reuse_cache(out_root, key, "slices")
    if cache is not None:
        return _report_from_cache(cache, start)

    scan = scan_dataset(spec, workers=max(1, jobs), anatomy=None if config.anatomy == "auto" else config.anatomy,
                        overrides=config.overrides or None)
    table = enumerate_slices(scan.result)
    scan_errors = [(str(p.path), p.message) for p in scan.result.problems if p.kind == "error"]
    if not table.slices:
        raise PrepareError(
            f"{data_dir}: no usable image of a labelled view found ({spec.format} layout, {len(files)} files; "
            f"{table.unusable_series} unusable and {table.unlabelled_series} unlabelled series; "
            f"{len(scan_errors)} unreadable files) — see 'planessl inspect --data {spec}'"
        )
    try:
        report = write_cache(out_root, key, lambda tmp: _write(tmp, table, config, key, fingerprint, jobs, progress))
    except CacheError as exc:  # out_root cannot be written
        raise PrepareError(str(exc)) from None
    report.scan_errors = scan_errors
    report.ignored = [(str(p.path), p.message) for p in scan.result.problems if p.kind == "ignored"]
    report.left_out = table.left_out
    report.notes = scan.notes
    report.format = spec.format
    report.cache_dir = out_root / key
    report.seconds = time.perf_counter() - start
    return report


def _fingerprint(spec: DataSpec, files: list[Path]) -> str:
    """The data fingerprint; layouts other than a plain DICOM folder add their format (read differently)."""
    root = spec.root if Path(spec.root).is_dir() else Path(spec.root).parent
    fingerprint = data_fingerprint(files, root)
    if spec.format in ("dicom", "phantom"):
        return fingerprint
    return hashlib.sha256(f"{spec.format}\0{fingerprint}".encode()).hexdigest()


def _data_files(data_dir: Path, out_root: Path | None) -> list[Path]:
    """Files under ``data_dir`` (as the scan lists them), less any under a cache root ``out_root``."""
    files, _ = list_files(data_dir)
    if out_root is not None:
        root = Path(out_root).resolve()
        files = [f for f in files if root not in f.resolve().parents]
    return files


def expected_cache_key(data_dir: Path | DataSpec, config: PrepareConfig, out_root: Path | None = None) -> str:
    """The key ``prepare_cache(data_dir, ..., config)`` would use now (files listed, not read).

    Pass it as ``open_cache(root, expect_key=...)`` to refuse a cache made from other data or settings.
    """
    spec = data_dir if isinstance(data_dir, DataSpec) else DataSpec("dicom", Path(data_dir))
    if not Path(spec.root).exists():
        raise PrepareError(f"{spec.root}: no such file or directory")
    files = _data_files(Path(spec.root), out_root)
    return cache_key(config, _fingerprint(spec, files))


# ----------------------------------------------------------------------------- workers
def _prepare_group(
    path: Path, frame_indices: Sequence[int], planes: Sequence[ImagePlane], config: PrepareConfig
) -> tuple[list[np.ndarray] | None, str]:
    """Decode the frames of one file and prepare each; ``(None, reason)`` when decoding fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's advice on odd files; failures raise below
            pixels = read_file_frames(path, list(frame_indices))
        out = []
        for px, plane in zip(pixels, planes, strict=True):
            if px.shape != plane.shape_px:
                raise PixelReadError(f"{path}: pixel array {px.shape} differs from the header's {plane.shape_px}")
            img, _ = prepare_image(
                px, plane, config.spacing_mm, config.size_px, config.normalisation, config.clip_percentiles,
                config.antialias,
            )
            out.append(img.astype(config.dtype))
        return out, ""
    except PixelReadError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a bad file must not end the preparation
        return None, f"{path}: cannot prepare ({type(exc).__name__}: {exc})"


def _run_chunk(
    tasks: list[tuple[Path, list[int], list[ImagePlane]]], config: PrepareConfig
) -> list[tuple[list[np.ndarray] | None, str]]:
    return [_prepare_group(p, f, pl, config) for p, f, pl in tasks]


def _write(tmp: Path, table: SliceTable, config: PrepareConfig, key: str, fingerprint: str, jobs: int,
           progress: Progress | None) -> PrepareReport:
    slices = table.slices
    # Group frames by file (a multi-frame file is opened once).
    by_file: dict[Path, list[int]] = {}
    for i, s in enumerate(slices):
        by_file.setdefault(s.frame.path, []).append(i)
    groups = list(by_file.items())
    tasks = [
        (path, [slices[i].frame.frame_index for i in idx], [slices[i].frame.plane for i in idx]) for path, idx in groups
    ]
    n, size = len(slices), config.size_px
    images = allocated_memmap(tmp / IMAGES, config.dtype, (n, size, size))
    ok = np.ones(n, dtype=bool)
    skipped: list[tuple[str, str]] = []
    workers = max(1, min(int(jobs), n // _MIN_SLICES_PER_WORKER))
    chunk = max(1, min(64, len(tasks) // (workers * 4) or 1))
    chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
    done = 0
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        if pool is not None:
            stream = pool.map(_run_chunk, chunks, [config] * len(chunks))
        else:
            stream = (_run_chunk(c, config) for c in chunks)
        for k, results in enumerate(stream):
            first = k * chunk
            for (path, idx), (arrays, reason) in zip(groups[first : first + len(results)], results, strict=True):
                if arrays is None:
                    ok[idx] = False
                    skipped.append((str(path), reason))
                else:
                    images[idx] = np.stack(arrays)
                done += len(idx)
            if progress is not None:
                progress("resample", done, n)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    images.flush()
    del images
    index = _index_rows(slices, config)
    if not ok.all():
        keep = np.flatnonzero(ok)
        index = index[keep]
        src = np.load(tmp / IMAGES, mmap_mode="r")
        compact = allocated_memmap(tmp / "images.part.npy", config.dtype, (len(keep), size, size))
        for j in range(0, len(keep), 256):
            compact[j : j + 256] = src[keep[j : j + 256]]
        compact.flush()
        del compact, src
        (tmp / "images.part.npy").replace(tmp / IMAGES)
    if len(index) == 0:
        raise PrepareError(f"no slice could be decoded ({len(skipped)} files failed; first: {skipped[0][1]})")
    np.save(tmp / INDEX, index, allow_pickle=False)
    meta = _meta(table, index, config, key, fingerprint, skipped)
    report = PrepareReport(cache_dir=tmp, key=key, reused=False, skipped=skipped)
    _fill_report(report, index, meta)
    meta["warnings"] = report.warnings
    write_meta(tmp, meta)
    return report


def _index_rows(slices: list[SliceSource], config: PrepareConfig) -> np.ndarray:
    from ..preprocess.resample import prepared_plane

    index = np.zeros(len(slices), dtype=INDEX_DTYPE)
    for i, s in enumerate(slices):
        src = s.frame.plane
        dst = prepared_plane(src, config.spacing_mm, config.size_px)
        index[i] = (
            s.subject, s.study, s.study_key, s.series_key, s.anatomy, s.view, s.stack, s.position, s.n_positions,
            s.phase, s.n_phases, s.location, s.location_mm, dst.origin_lps, dst.x_dir_lps, dst.y_dir_lps,
            dst.spacing_mm, dst.shape_px, src.spacing_mm, src.shape_px,
        )
    return index


def _meta(table: SliceTable, index: np.ndarray, config: PrepareConfig, key: str, fingerprint: str,
          skipped: list) -> dict:
    counts = Counter(
        f"{ANATOMIES[a]} {VIEW_NAMES[v]}"
        for a, v in zip(index["anatomy"].tolist(), index["view"].tolist(), strict=True)
    )
    subjects = [
        {"key": k, "anatomy": next((st["anatomy"] for st in table.studies if st["subject"] == i), None)}
        for i, k in enumerate(table.subject_keys)
    ]
    return base_meta(key, "slices", config, len(index), fingerprint, subjects) | {
        "view_codes": dict(VIEW_CODES),
        "anatomies": list(ANATOMIES),
        "studies": table.studies,
        "counts": dict(sorted(counts.items())),
        "n_stacks": int(len(np.unique(index["stack"]))),
        "skipped_frames": int(sum(1 for _ in skipped)),
        "location_rule": "heart SAX: base->apex by the LV long-axis prior; knee: SAG medial->lateral, COR +P, AX +S",
        "partner_config": PairConfig().to_dict(),
        "scan_warnings": table.warnings,
    }


def _fill_report(report: PrepareReport, index: np.ndarray, meta: dict) -> None:
    report.n_slices = int(meta["n_slices"])
    report.n_subjects = len(meta["subjects"])
    report.n_studies = len(meta["studies"])
    report.views = dict(meta["counts"])
    report.warnings = list(meta.get("scan_warnings", []))
    for anatomy in ANATOMIES:
        rows = np.flatnonzero(index["anatomy"] == ANATOMIES.index(anatomy))
        if len(rows) == 0:
            continue
        _, valid, reason = line_targets(index, rows, anatomy)
        summary, warnings = partner_summary(index, rows, anatomy, valid, reason)
        report.partners.extend(summary)
        report.warnings.extend(warnings)


def _report_from_cache(cache: SliceCache, start: float) -> PrepareReport:
    report = PrepareReport(cache_dir=cache.path, key=cache.key, reused=True)
    _fill_report(report, cache.index, cache.meta)
    report.seconds = time.perf_counter() - start
    return report
