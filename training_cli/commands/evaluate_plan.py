"""``planessl evaluate-plan --data FORMAT:PATH --weights W``: view planning over a cohort.

Per long-axis view, the median and 90th-percentile angle (°) between proposed and acquired
normals and distance (mm) from the acquired image's centre to the proposed plane, beside the
no-image baseline of ``PlaneSSLLib.inference.plan_eval`` (the cohort's mean orientation relative
to the SAX stack, leave one out), and the same for the SAX orientation from 2CH × 4CH. ``--out DIR``
writes ``results.csv`` (one row per study, view and method; hashed study keys) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from ..errors import CLIError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate-plan", help="view planning over a cohort: errors per view beside a no-image baseline",
        description="Plan the 2CH/3CH/4CH views of every study with a SAX stack and compare with the acquired "
                    "views; the baseline is the cohort's mean view orientation relative to the SAX stack "
                    "(leave one out).")
    p.add_argument("--data", required=True, metavar="FORMAT:PATH",
                   help="heart DICOM studies: dicom:PATH, phantom:PATH, kaggle-dsb:PATH or a folder")
    p.add_argument("--weights", type=Path, required=True, metavar="W", help="pretrained heart line weights")
    p.add_argument("--phase", type=int, default=0, help="cine phase of the SAX stacks (default 0)")
    p.add_argument("--orientation", choices=("canonical", "stored"), default="canonical",
                   help="SAX slices shown to the network in the standard display orientation (default) or as stored")
    p.add_argument("--fit", nargs="+", default=["sax-normal"], metavar="FIT",
                   help="how the planes are fitted: sax-normal (default), long-axis, free (several: each is "
                        "reported, from one prediction; the first is 'planner')")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="write results.csv and summary.json")
    p.set_defaults(func=run)
    return p


def _fmt(stats: dict) -> str:
    if not stats["n"]:
        return "-"
    return f"{stats['median']:.1f} / {stats['p90']:.1f}"


def format_table(summary: dict) -> str:
    lines = ["view  method               n    angle deg (median / p90)   distance mm (median / p90)"]
    for view, entry in summary["views"].items():
        for method, stats in entry.items():
            lines.append(f"{view:4}  {method:20} {stats['angle_deg']['n']:<4} {_fmt(stats['angle_deg']):>24}   "
                         f"{_fmt(stats['distance_mm']):>25}")
    for method, stats in summary["sax"].items():
        lines.append(f"SAX   {method:20} {stats['angle_deg']['n']:<4} {_fmt(stats['angle_deg']):>24}   "
                     "(SAX normal from 2CH x 4CH)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from PlaneSSLLib.atomic import atomic_write_text
    from PlaneSSLLib.data.sources import parse_data_spec
    from PlaneSSLLib.dicom.report import apply_views
    from PlaneSSLLib.dicom.scan import scan_tree
    from PlaneSSLLib.dicom.stacks import find_sax_stack
    from PlaneSSLLib.inference.plan_eval import evaluate_planning
    from PlaneSSLLib.inference.plan_views import FITS, load_planning_model

    bad = [f for f in args.fit if f not in FITS]
    if bad:
        raise CLIError(f"--fit {bad[0]}: choose from {', '.join(FITS)}")
    spec = parse_data_spec(args.data)
    if spec.format not in ("auto", "dicom", "phantom", "kaggle-dsb"):
        raise CLIError(f"{args.data}: evaluate-plan reads DICOM heart studies (dicom, phantom, kaggle-dsb), "
                       f"not {spec.format}")
    if not spec.root.is_dir():
        raise CLIError(f"{spec.root}: no such directory")
    model = load_planning_model(args.weights)
    scan = scan_tree(spec.root)
    apply_views(scan, anatomy_hint="heart")
    stacks = [s for s in (find_sax_stack(st) for st in scan.studies) if s is not None]
    if len(stacks) < 2:
        raise CLIError(f"{spec.root}: {len(stacks)} studies with a SAX stack; evaluate-plan needs at least 2 "
                       f"(the baseline is fitted on the other studies)")
    result = evaluate_planning(stacks, model, args.phase, args.orientation, list(dict.fromkeys(args.fit)))
    summary = result.summary()
    summary.update({"studies": len(stacks), "skipped": result.skipped, "model_id": model.manifest.get("model_id"),
                    "phase": args.phase, "orientation": args.orientation, "fits": list(dict.fromkeys(args.fit))})
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, ["study", "view", "method", "angle_deg", "distance_mm"], lineterminator="\n")
        writer.writeheader()
        for row in result.rows + [dict(r, view="SAX", distance_mm="") for r in result.sax_rows]:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write_text(args.out / "results.csv", buf.getvalue())
        atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    for note in result.skipped:
        print(f"planessl evaluate-plan: skipped {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{len(stacks)} studies, model {summary['model_id']}, phase {args.phase}")
        print(format_table(summary))
    return 0
