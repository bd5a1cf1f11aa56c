"""``--data FORMAT:PATH``: how a command names its data set (``PlaneSSLLib.data.sources``).

A command keeps its legacy positional folder as an equivalent of ``--data dicom:FOLDER`` (today's
DICOM reader); giving both is an error. ``auto`` detects the layout and says on stderr which it chose.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PlaneSSLLib.data.sources import DATA_FORMATS, LAYOUTS, DataSpec, parse_data_spec, resolve_data_spec

from .errors import CLIError

__all__ = ["DATA_HELP", "add_data_argument", "data_spec_from_args"]

DATA_HELP = ("data set as FORMAT:PATH, FORMAT one of " + ", ".join(DATA_FORMATS)
             + " ('auto' detects the layout and says which it chose)")


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="FORMAT:PATH", help=DATA_HELP)


def data_spec_from_args(args: argparse.Namespace, positional: Path | None, command: str,
                        allowed: tuple[str, ...] | None = None) -> DataSpec:
    """The resolved data set of a command: ``--data`` or the legacy positional folder (= ``dicom:FOLDER``)."""
    if args.data and positional is not None:
        raise CLIError(f"give the data set once, either as {positional} or as --data {args.data}")
    if not args.data and positional is None:
        raise CLIError(f"no data set (--data FORMAT:PATH; formats: {', '.join(DATA_FORMATS)})")
    if positional is not None:
        if not Path(positional).exists():
            raise CLIError(f"{positional}: no such file or directory")
        # today's reader, as before: any folder (or single file); what it lacks is reported by the scan
        return DataSpec("dicom", Path(positional))
    spec = parse_data_spec(args.data)
    resolved = resolve_data_spec(spec, allowed=allowed)
    if spec.format == "auto":
        print(f"planessl {command}: --data auto: {resolved.root} holds the {resolved.format} layout "
              f"({LAYOUTS[resolved.format]})", file=sys.stderr)
    return resolved
