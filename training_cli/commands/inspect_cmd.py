"""``planessl inspect (DIR | --data FORMAT:PATH) [--json] [--overrides FILE] [--anatomy auto|heart|knee]``.

Scans a folder tree for DICOM images (headers only) and prints every study with its series
(view, slices, phases, spacing, size, transfer syntaxes, usability) and every problem met,
each naming its file. Exit status 0 when the scan completes, even with problems in single
files; 1 when the tree holds no DICOM image at all (after printing what was found); 2 when DIR
does not exist or the overrides file is unusable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from PlaneSSLLib.data.layout_scan import scan_dataset
from PlaneSSLLib.dicom.records import VIEW_LABELS
from PlaneSSLLib.dicom.report import format_text, scan_to_dict
from PlaneSSLLib.preprocess.config import read_mapping_file

from ..data_args import add_data_argument, data_spec_from_args
from ..errors import CLIError

_KNOWN_VIEWS = {label for labels in VIEW_LABELS.values() for label in labels}


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "inspect",
        help="list the studies, series, views and problems found in a DICOM folder",
        description=(
            "Scan DIR (a folder tree or one file) for DICOM images, reading headers only, and print "
            "every study with its series: view label, description, folder, slice and phase counts, "
            "pixel spacing [row, column] and slice spacing in mm, image size, transfer syntaxes, "
            "whether it is usable, and the problems met. Unreadable files are named; non-DICOM and "
            "non-image files are listed as ignored. Patient identifiers and UIDs are never printed "
            "(studies and series are shown by a short hash)."
        ),
    )
    p.add_argument("dir", type=Path, metavar="DIR", nargs="?",
                   help="folder to scan (or a single DICOM file); the same as --data dicom:DIR")
    add_data_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (schema in PlaneSSLLib.dicom.report)")
    p.add_argument(
        "--overrides",
        type=Path,
        metavar="FILE",
        help="YAML or JSON mapping of series folder name, series description or series key to a view label",
    )
    p.add_argument(
        "--anatomy",
        choices=("auto", "heart", "knee"),
        default="auto",
        help="anatomy of the studies (default: tell from the images)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="processes reading headers (default 0: automatic, parallel only for large trees)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    spec = data_spec_from_args(args, args.dir, "inspect")
    root = spec.root
    overrides = load_overrides(args.overrides) if args.overrides else None
    workers = args.jobs if args.jobs > 0 else min(4, os.cpu_count() or 1)
    progress = _Progress() if sys.stderr.isatty() else None
    anatomy = None if args.anatomy == "auto" else args.anatomy
    try:
        scan = scan_dataset(spec, workers=workers, anatomy=anatomy, overrides=overrides, progress=progress)
    except ValueError as exc:  # e.g. an override naming an unknown view
        raise CLIError(f"{args.overrides or root}: {exc}") from exc
    finally:
        if progress is not None:
            progress.close()
    result = scan.result
    if args.json:
        print(json.dumps(scan_to_dict(result, scan.views_note, root_label=str(root), data_format=spec.format,
                                      layout_notes=scan.notes), indent=2))
    else:
        text = format_text(result, scan.views_note, root_label=str(root))
        if scan.notes:
            text += f"{spec.format} layout quirks (handled):\n" + "".join(f"  {n}\n" for n in scan.notes)
        print(text, end="")
    if not any(s.n_images for st in result.studies for s in st.series):
        what = "DICOM image" if spec.format in ("dicom", "phantom", "kaggle-dsb", "ukbb") else "image"
        raise CLIError(f"{root}: no {what} found ({result.files_seen} files seen)", exit_code=1)
    return 0


def load_overrides(path: Path) -> dict[str, str]:
    """A mapping {series folder name | description | key: view label} from a YAML or JSON file."""
    data = read_mapping_file(path, "overrides (a mapping of series to view label)")
    overrides = {}
    for key, value in data.items():
        if not isinstance(value, str) or not str(key):
            raise CLIError(f"{path}: override {key!r}: the view label must be a text such as SAX or 2CH")
        overrides[str(key)] = value
    unknown = sorted({v for v in overrides.values() if v not in _KNOWN_VIEWS})
    if unknown:
        known = ", ".join(sorted(_KNOWN_VIEWS))
        print(f"planessl inspect: warning: {path}: unknown view labels {unknown} (known: {known})", file=sys.stderr)
    return overrides


class _Progress:
    """A one-line file counter on stderr, refreshed at most ten times a second."""

    def __init__(self) -> None:
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        self._shown = True
        sys.stderr.write(f"\rscanning headers: {done}/{total} files")
        sys.stderr.flush()

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()
