"""``planessl plan STUDY --weights W [--json] [--out DIR]``: the 2CH, 3CH and 4CH planes proposed from
the study's SAX stack by a pretrained line network (``PlaneSSLLib.inference.plan_views``).

Prints, per view, the proposed plane (point and normal, LPS mm), an ImageOrientationPatient /
ImagePositionPatient, pixel spacing and field of view a scanner could use, the per-slice
residuals, and, when the study holds the view, the angle (°) between the proposed and acquired
normals and the distance (mm) from the acquired image's centre to the proposed plane. ``--out
DIR`` writes ``DIR/plan.json`` (the ``--json`` object) and the SAX stack reformatted on each
proposed plane (``DIR/<VIEW>_proposed.nii.gz``; with ``--dicom`` also a derived MR image
``DIR/<VIEW>_proposed.dcm`` in the study).

The network runs in numpy (``--backend auto``, the default, on this CPU-only command): the process
imports no torch, which alone took longer than the rest of a one-study plan (``bench/bench_plan.py``);
``--backend torch`` runs the torch network, with the same plan.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import CLIError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "plan", help="propose the 2CH/3CH/4CH planes from a study's SAX stack (line network)",
        description="Cardiac view planning: predicted intersection lines on every SAX slice, one robust plane "
                    "per long-axis view across the slices, compared with the acquired views when the study "
                    "holds them.")
    p.add_argument("study", metavar="STUDY", help="a DICOM study folder (optionally dicom:PATH or phantom:PATH)")
    p.add_argument("--weights", type=Path, required=True, metavar="W",
                   help="pretrained heart line weights (dir or .zip), e.g. Resources/Sample/heart-plane-lines")
    p.add_argument("--phase", type=int, default=0, help="cine phase of the SAX stack, 0-based (default 0)")
    p.add_argument("--orientation", choices=("canonical", "stored"), default="canonical",
                   help="show the network each SAX slice in the standard display orientation from its geometry "
                        "(canonical, default) or as stored")
    p.add_argument("--fit", choices=("sax-normal", "long-axis", "free"), default="sax-normal",
                   help="sax-normal (default): the views hold an LV long axis perpendicular to the SAX stack; "
                        "long-axis: its direction fitted from the slices' LV centres; free: each view its own plane")
    p.add_argument("--backend", choices=("auto", "numpy", "torch"), default="auto",
                   help="run the network in numpy (auto, default: no torch import) or in torch; the same plan")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write DIR/plan.json and the SAX stack reformatted on each proposed plane (NIfTI)")
    p.add_argument("--dicom", action="store_true",
                   help="with --out: also write each reformatted view as a derived DICOM MR image "
                        "(<VIEW>_proposed.dcm)")
    p.set_defaults(func=run)
    return p


def study_path(text: str) -> Path:
    """The folder of ``FORMAT:PATH`` (or a plain path) for the formats that hold DICOM studies."""
    from PlaneSSLLib.data.sources import parse_data_spec

    spec = parse_data_spec(text)
    if spec.format not in ("auto", "dicom", "phantom", "kaggle-dsb"):
        raise CLIError(f"{text}: plan reads a DICOM study folder, not {spec.format} data")
    if not spec.root.exists():
        raise CLIError(f"{spec.root}: no such file or directory")
    return spec.root


def format_text(plan: dict) -> str:
    lines = [f"study {plan.get('study')}  model {plan.get('model_id')}  phase {plan.get('phase')}  "
             f"SAX slices {plan['sax']['slices']}"]
    lines.append("  view  normal (LPS)                 centre (LPS mm)           used  acquired: angle  distance")
    for view, entry in plan["views"].items():
        if entry is None:
            lines.append(f"  {view:4}  no plane: {plan['missing'].get(view, '')}")
            continue
        n = "[" + ", ".join(f"{v:+.3f}" for v in entry["normal_lps"]) + "]"
        c = "[" + ", ".join(f"{v:.1f}" for v in entry["point_lps"]) + "]"
        used = f"{entry['slices_used']}/{len(entry['slices'])}"
        acq = entry["acquired"]
        tail = "-" if acq is None else f"{acq['angle_deg']:6.2f} deg  {acq['distance_mm']:6.2f} mm"
        lines.append(f"  {view:4}  {n:27}  {c:24}  {used:>5}  {tail}")
    sax = plan["sax"]
    if sax["angle_deg"] is not None and plan.get("fit") != "sax-normal":  # sax-normal keeps it: 0 by construction
        lines.append(f"  SAX from 2CH x 4CH: {sax['angle_deg']:.2f} deg from the acquired SAX normal")
    lines += [f"  note: {note}" for note in plan["notes"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..threads import one_blas_thread

    one_blas_thread()  # before numpy loads: the numpy network multiplies small matrices
    from PlaneSSLLib.atomic import atomic_write_text
    from PlaneSSLLib.inference.plan_views import load_planning_model, plan_stack
    from PlaneSSLLib.inference.segment import find_study_sax_stack

    if args.dicom and args.out is None:
        raise CLIError("--dicom writes files: give --out DIR")
    path = study_path(args.study)
    model = load_planning_model(args.weights, backend=args.backend)
    stack = find_study_sax_stack(path)
    plan = plan_stack(stack, model, args.phase, args.orientation, args.fit)
    result = plan.as_dict()
    if args.out is not None:
        from PlaneSSLLib.inference.reformat import write_reformatted_views

        args.out.mkdir(parents=True, exist_ok=True)
        result["reformatted"] = write_reformatted_views(stack, plan, args.phase, args.out, args.dicom)
        atomic_write_text(args.out / "plan.json", json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(format_text(result))
    return 0
