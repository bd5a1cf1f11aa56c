"""``planessl phantom {heart,knee} --subjects N --seed S --out DIR``: synthetic cohorts as real DICOM."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from PlaneSSLLib.phantoms import DEFAULT_PHASES, REALISMS, CohortOptions, default_workers, write_cohort

from ..errors import CLIError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "phantom",
        help="write a synthetic heart or knee cohort as DICOM (+ labels), deterministic for a seed",
        description=(
            "Write a synthetic cohort: heart (cine SAX stack + 2CH/3CH/4CH, ACDC label maps of the SAX "
            "stack at ED and ES as NIfTI) or knee (sagittal/coronal/axial stacks, ACL intact or torn "
            "in OUT/labels.csv; clinical: the grade intact/partial/complete too). The same seed gives "
            "byte-identical files."
        ),
    )
    p.add_argument("anatomy", choices=("heart", "knee"))
    p.add_argument("--subjects", type=int, default=4, metavar="N", help="number of subjects (default 4)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed, a non-negative integer (default 0)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="cohort directory (new or empty)")
    p.add_argument(
        "--layout", choices=("kaggle", "ukbb"), default=None,
        help="heart only: 'kaggle' = one series per SAX slice (sax_N folders, default); "
        "'ukbb' = one multi-slice SAX series (cine_sax)",
    )
    p.add_argument(
        "--phases", type=int, default=DEFAULT_PHASES, metavar="P",
        help=f"heart only: cine phases per cycle, ED = phase 0 (default {DEFAULT_PHASES})",
    )
    p.add_argument(
        "--matrix", type=int, default=None, metavar="PX",
        help="square image matrix for every series, same field of view (default: varies per series)",
    )
    p.add_argument(
        "--workers", type=int, default=None, metavar="W",
        help=f"subjects written in parallel processes (default min(2, CPUs) = {default_workers()})",
    )
    p.add_argument(
        "--realism", choices=REALISMS, default=None,
        help="'clinical' (default). Heart: ACDC-like pathology mix (subjects.csv column 'pathology'), "
        "atria, outflow tracts and venae cavae entering the basal slices, base descent, patchy fat, liver, "
        "effusion, four sites with 1.5 T/3 T bSSFP (banding) or spoiled gradient echo, coil bias, noise, ghosts, "
        "breath-hold misregistration. Knee: an asymmetric joint (condyles, plateaus, fibular head, patellar "
        "facets, ligaments), sagittal coverage of the bone plus a few mm, ACL intact/partial/complete with "
        "overlapping effusion and bone bruise (labels.csv), the four sites' 1.5 T/3 T PD, PD FS or T2 FS "
        "(subjects.csv), coil bias, noise. The default because a method judged on it is judged on the "
        "difficulties of real MR. 'simple': the original easy look (heart: one bSSFP site, normal hearts; knee: "
        "one PD FS look, nearly symmetric; same files as before for a seed), for quick checks of the geometry",
    )
    p.add_argument(
        "--sites", default=None, metavar="W",
        help="clinical cohorts only: site mix as weights, e.g. 'A=2,B=1,C=0,D=1' (sites A 1.5 T, B 3 T, C 1.5 T, "
        "D 3 T; default all equal); recorded in OUT/cohort.json. A study's separate pretraining cohort can use "
        "a different mix from its target cohort",
    )
    p.add_argument("--force", action="store_true", help="write into a non-empty directory that is not a cohort")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.anatomy == "knee" and args.layout not in (None, "kaggle"):
        raise CLIError("--layout applies to heart cohorts only")
    if args.anatomy == "knee" and args.phases != DEFAULT_PHASES:
        raise CLIError("--phases applies to heart cohorts only")
    realism = args.realism or "clinical"
    options = CohortOptions(
        anatomy=args.anatomy, subjects=args.subjects, seed=args.seed, layout=args.layout or "kaggle",
        phases=args.phases, matrix=args.matrix, realism=realism, sites=args.sites,
    )
    start = time.perf_counter()

    def progress(done: int, total: int, summary: dict) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] {summary['subject']} written", file=sys.stderr, flush=True)

    try:
        meta = write_cohort(args.out, options, workers=args.workers, force=args.force, progress=progress)
    except OSError as exc:
        raise CLIError(f"{args.out}: cannot write the cohort ({exc})") from exc
    elapsed = time.perf_counter() - start
    extra = ""
    if args.anatomy == "heart":
        groups = Counter(s["pathology"] for s in meta["subject_summaries"])
        extra = f" ({realism}: " + ", ".join(f"{n} {g}" for g, n in sorted(groups.items())) + ")"
    if args.anatomy == "knee":
        torn = sum(1 for s in meta["subject_summaries"] if s["acl_tear"])
        extra = f", {torn} with a torn ACL"
        if realism == "clinical":
            grades = Counter(s["acl_grade"] for s in meta["subject_summaries"])
            extra += f" ({realism}: " + ", ".join(f"{grades[g]} {g}" for g in ("intact", "partial", "complete")) + ")"
    print(f"wrote {meta['subjects']} {args.anatomy} subjects{extra} to {args.out} in {elapsed:.1f} s")
    return 0
