"""``planessl predict acl EXAM_DIR --weights W [--json]``: ACL-tear probability of one knee exam.

Registered under ``planessl predict`` by ``training_cli.commands.predict`` through
:func:`register_acl`. Prints ``{"probability", "prediction", "threshold", "inputs": {view:
{"series", "slices"}}, "model"}`` with ``--json`` (hashed series keys only: no identifier), a
short line otherwise. Exit status 0 done, 2 unusable weights or exam folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import CLIError


def register_acl(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``acl`` to the sub-commands of ``planessl predict``."""
    p = subparsers.add_parser(
        "acl",
        help="ACL-tear probability of one knee exam (SAG/COR/AX DICOM)",
        description="Classify one knee exam folder with exported 'planessl finetune acl' weights.",
    )
    p.add_argument("exam_dir", type=Path, metavar="EXAM_DIR", help="folder holding one exam's DICOM series")
    p.add_argument("--weights", type=Path, required=True, metavar="W", help="weights directory or .zip")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the model's)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_acl)
    return p


def run_acl(args: argparse.Namespace) -> int:
    from PlaneSSLLib.inference.classify import predict_exam

    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise CLIError(f"--threshold must lie in (0, 1), got {args.threshold}")
    result = predict_exam(args.exam_dir, args.weights, args.threshold, args.device)
    if args.json:
        print(json.dumps(result))
    else:
        slices = ", ".join(f"{v} {i['slices']}" for v, i in result["inputs"].items())
        print(f"ACL {result['prediction']}: probability {result['probability']:.3f} (threshold "
              f"{result['threshold']:g}; slices {slices}; model {result['model']})")
    return 0
