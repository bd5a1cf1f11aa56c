"""``planessl predict acl EXAM_DIR --weights W [--json]``: ACL-tear probability of one knee exam.

Registered under ``planessl predict`` by ``training_cli.commands.predict`` through
:func:`register_acl`. Prints ``{"probability", "prediction", "threshold", "inputs": {view:
{"series", "slices"}}, "model"}`` with ``--json`` (hashed series keys only: no identifier), a
short line otherwise. Exit status 0 done, 2 unusable weights or exam folder.

The exam may be named as a data set (``FORMAT:PATH``): ``dicom:``/``phantom:`` a folder of one
exam's DICOM series; ``mrnet:MRNet-v1.0 --exam valid/0003`` one MRNet exam (its three ``.npy``
stacks, prepared as ``finetune acl`` prepares MRNet).
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
    p.add_argument("exam_dir", metavar="EXAM_DIR", help="folder holding one exam's DICOM series, or mrnet:ROOT "
                   "with --exam")
    p.add_argument("--exam", default=None, metavar="SPLIT/NNNN", help="the MRNet exam (e.g. valid/0003)")
    p.add_argument("--weights", type=Path, required=True, metavar="W", help="weights directory or .zip")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the model's)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_acl)
    return p


def run_acl(args: argparse.Namespace) -> int:
    from PlaneSSLLib.data.sources import parse_data_spec, resolve_data_spec
    from PlaneSSLLib.inference.classify import predict_exam

    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise CLIError(f"--threshold must lie in (0, 1), got {args.threshold}")
    spec = parse_data_spec(args.exam_dir)
    if spec.format == "auto" and spec.root.is_dir() and args.exam:
        spec = resolve_data_spec(spec)
    if spec.format == "mrnet":
        result = _predict_mrnet(spec.root, args)
    elif spec.format in ("auto", "dicom", "phantom"):
        if args.exam:
            raise CLIError("--exam names an MRNet exam (with mrnet:ROOT)")
        result = predict_exam(spec.root, args.weights, args.threshold, args.device)
    else:
        raise CLIError(f"{args.exam_dir}: predict acl reads knee DICOM exams and MRNet, not {spec.format}")
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        slices = ", ".join(f"{v} {i['slices']}" for v, i in result["inputs"].items())
        print(f"ACL {result['prediction']}: probability {result['probability']:.3f} (threshold "
              f"{result['threshold']:g}; slices {slices}; model {result['model']})")
    return 0


def _predict_mrnet(root: Path, args: argparse.Namespace) -> dict:
    from PlaneSSLLib.data.adapters.mrnet import MRNET_PLANES, MrnetExam
    from PlaneSSLLib.data.exams import exams_from_mrnet
    from PlaneSSLLib.inference.classify import classify_exam, load_classifier, prepare_config_from_manifest

    split, _, exam_id = (args.exam or "").partition("/")
    if split not in ("train", "valid") or not exam_id.isdigit():
        raise CLIError(f"mrnet:{root}: --exam SPLIT/NNNN is needed (SPLIT train or valid), got {args.exam!r}")
    exam_id = f"{int(exam_id):04d}"
    paths = {view: root / split / plane / f"{exam_id}.npy" for plane, view in MRNET_PLANES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise CLIError(f"MRNet exam {split}/{exam_id}: missing {', '.join(missing)}")
    model, manifest = load_classifier(args.weights, args.device)
    exam = exams_from_mrnet([MrnetExam(split, exam_id, None, paths)], prepare_config_from_manifest(manifest))[0]
    return classify_exam(model, manifest, exam, args.threshold, args.device)
