"""``planessl prepare (DATA | --data FORMAT:PATH) --out CACHE [--config FILE | --spacing MM --size PX ...]``.

Scans DATA (headers), labels views, and writes every usable slice of a labelled view —
resampled to the target spacing, cropped/padded to the target size around the image centre and
intensity-normalised — into one memory-mapped array plus a geometry index under
``CACHE/<key>`` (``PlaneSSLLib.data.cache``). The key hashes the settings and the data's
fingerprint; an up-to-date cache is reused. Exit status 0 on success (files that could not be
read are named and skipped), 1 when DATA holds no usable labelled image, 2 for bad arguments,
a missing DATA or an unwritable CACHE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from PlaneSSLLib.data.prepare import PrepareError, PrepareReport, prepare_cache
from PlaneSSLLib.preprocess.config import PrepareConfig, load_prepare_config

from ..data_args import add_data_argument, data_spec_from_args

_MAX_LISTED = 20


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    d = PrepareConfig()
    p = sub.add_parser(
        "prepare",
        help="resample the labelled views of a data set into a training cache",
        description=(
            "Scan DATA (a DICOM folder, or --data FORMAT:PATH for the public data-set layouts) for images, "
            "label views (heart SAX/2CH/3CH/4CH, knee SAG/COR/AX), and write every "
            "usable slice resampled to a square pixel spacing, cropped/padded around the image centre and "
            "intensity-normalised per image into CACHE/<key>/ (images.npy memory map, index.npy geometry, "
            "meta.json). No patient identifier is stored. Settings on the command line override --config."
        ),
    )
    p.add_argument("folder", type=Path, metavar="DATA", nargs="?",
                   help="folder of DICOM studies (any nesting); the same as --data dicom:DATA")
    add_data_argument(p)
    p.add_argument("--out", type=Path, required=True, metavar="CACHE", help="cache root folder")
    p.add_argument("--config", type=Path, metavar="FILE", help="YAML/JSON settings (top level or a 'prepare:' section)")
    p.add_argument("--spacing", type=float, metavar="MM", help=f"target pixel spacing in mm (default {d.spacing_mm})")
    p.add_argument("--size", type=int, metavar="PX", help=f"target image size in pixels (default {d.size_px})")
    p.add_argument(
        "--normalise", choices=("minmax", "zscore"), help=f"intensity normalisation (default {d.normalisation})"
    )
    p.add_argument("--dtype", choices=("float16", "float32"), help=f"storage type (default {d.dtype})")
    p.add_argument("--anatomy", choices=("auto", "heart", "knee"), help="anatomy of the studies (default auto)")
    p.add_argument("--overrides", type=Path, metavar="FILE", help="view overrides, as for 'planessl inspect'")
    p.add_argument("--jobs", type=int, default=0, metavar="N", help="worker processes (default: min(2, CPUs))")
    p.add_argument("--force", action="store_true", help="prepare again even when an up-to-date cache exists")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """The preparation settings: the --config file (or defaults), then command-line overrides."""
    config = load_prepare_config(args.config) if args.config else PrepareConfig()
    changes: dict = {}
    for name, attr in (("spacing", "spacing_mm"), ("size", "size_px"), ("normalise", "normalisation"),
                       ("dtype", "dtype"), ("anatomy", "anatomy")):
        value = getattr(args, name)
        if value is not None:
            changes[attr] = value
    if args.overrides:
        from .inspect_cmd import load_overrides

        changes["overrides"] = load_overrides(args.overrides)
    return replace(config, **changes) if changes else config


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    spec = data_spec_from_args(args, args.folder, "prepare")
    jobs = args.jobs if args.jobs > 0 else max(1, min(2, os.cpu_count() or 1))
    progress = None if args.quiet or not sys.stderr.isatty() else _Progress()
    try:
        report = prepare_cache(spec, args.out, config, jobs=jobs, force=args.force, progress=progress)
    except PrepareError as exc:
        if "no usable image" in str(exc) or "no files found" in str(exc):
            exc.exit_code = 1  # DATA holds nothing to prepare (see the module docstring)
        raise
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        print(json.dumps(report_dict(report, config), indent=2))
    else:
        print(format_report(report, config), end="")
    return 0


def report_dict(report: PrepareReport, config: PrepareConfig) -> dict:
    return {
        "cache": str(report.cache_dir),
        "key": report.key,
        "reused": report.reused,
        "config": config.to_dict(),
        "slices": report.n_slices,
        "subjects": report.n_subjects,
        "studies": report.n_studies,
        "views": report.views,
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
        "scan_errors": [{"path": p, "reason": r} for p, r in report.scan_errors],
        "series_left_out": [{"folder": p, "reason": r} for p, r in report.left_out],
        "ignored": [{"path": p, "reason": r} for p, r in report.ignored],
        "warnings": report.warnings,
        "data_format": report.format or None,
        "layout_notes": report.notes,
        "line_targets": report.partners,
        "seconds": round(report.seconds, 3),
    }


def format_report(report: PrepareReport, config: PrepareConfig) -> str:
    lines = [
        f"{'reused up-to-date' if report.reused else 'wrote'} cache {report.cache_dir} "
        f"({report.n_slices} slices, {report.n_subjects} subjects, {report.n_studies} studies; "
        f"{config.spacing_mm:g} mm, {config.size_px}x{config.size_px} px, {config.normalisation}, {config.dtype}) "
        f"in {report.seconds:.1f} s",
        "slices per view: " + ", ".join(f"{k} {v}" for k, v in report.views.items()),
    ]
    lines += [f"  {s}" for s in report.partners]
    for title, items in (("skipped (pixel data unreadable)", report.skipped),
                         ("unreadable files and folders", report.scan_errors),
                         ("series left out (unusable)", report.left_out),
                         ("ignored (not images: empty, not DICOM, hidden)", report.ignored)):
        if items:
            lines.append(f"{title}: {len(items)}")
            lines += [f"  {p}: {r}" if r and not r.startswith(p) else f"  {r or p}" for p, r in items[:_MAX_LISTED]]
            if len(items) > _MAX_LISTED:
                lines.append(f"  ... and {len(items) - _MAX_LISTED} more")
    if report.notes:
        lines.append(f"{report.format} layout quirks (handled): {len(report.notes)}")
        lines += [f"  {n}" for n in report.notes[:_MAX_LISTED]]
        if len(report.notes) > _MAX_LISTED:
            lines.append(f"  ... and {len(report.notes) - _MAX_LISTED} more")
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


class _Progress:
    """A one-line counter on stderr, refreshed at most ten times a second."""

    def __init__(self) -> None:
        self._last = 0.0
        self._shown = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last, self._shown = now, True
        sys.stderr.write(f"\r{stage}: {done}/{total} slices")
        sys.stderr.flush()

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()
