"""Does a clinical knee cohort's ACL tear survive into what the exam classifier sees? An oracle check, no training.

For every exam of a clinical phantom knee cohort (``planessl phantom knee --realism clinical``) the script
rebuilds the knee's anatomy from the cohort's seed (``phantoms.cohort.clinical_knee_subject``: the same draws
that wrote it), so it knows where the ACL lies. It reads the exam's sagittal stack from the DICOM files and
measures the signal in two regions that only the phantom's ground truth can place:

- ``core``: within the ACL's radius of its axis, over the part a tear can take (axis parameter 0.3-0.8);
- ``halo``: 1-6 mm outside the ACL's radius, over 0.15-0.85 of its length (where a tear's oedema lies);

each as the mean of the normalised image over the pixels in the region, on every sagittal slice that cuts it.
It does so twice: on the prepared images the classifier is given (``--spacing-mm``/``--size-px``, default the
ACL study's 2 mm and 96 px, normalised as ``planessl prepare`` does) and on the stored images at their own
resolution (normalised the same way, not resampled). For each feature it prints the AUC of torn against intact
(the feature taken as "higher means torn"; below 0.5 means lower in torn knees), overall, by grade (partial,
complete against intact) and by sequence, with how many exams each figure rests on.

What it answers: whether the tear is there to be found at the classifier's input (an AUC near 1 with an
oracle region), or whether the rendering, the resampling or the per-slice normalisation already removed it
(an AUC near 0.5 even here). It says nothing about whether a network can find the region by itself.

    .venv/bin/python scripts/acl_signal_probe.py COHORT [--subjects N] [--spacing-mm 2.0] [--size-px 96]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from PlaneSSLLib.dicom.pixels import read_file_frames
from PlaneSSLLib.geometry.planes import ImagePlane
from PlaneSSLLib.phantoms.cohort import (
    CohortError,
    CohortOptions,
    clinical_knee_subject,
    read_cohort_options,
    subject_name,
)
from PlaneSSLLib.phantoms.shapes import segment_distance2, to_frame
from PlaneSSLLib.preprocess.codes import VIEW_CODES
from PlaneSSLLib.preprocess.config import PrepareConfig
from PlaneSSLLib.preprocess.index import scan_slices
from PlaneSSLLib.preprocess.resample import normalise_intensity, prepare_image
from PlaneSSLLib.training.cls_metrics import roc_auc

CORE_T = (0.3, 0.8)
HALO_T = (0.15, 0.85)
HALO_MM = (1.0, 6.0)
FEATURES = ("core", "halo", "core_minus_halo")


def cohort_options(cohort: Path) -> CohortOptions:
    """The options a clinical knee cohort was written with; exits naming the file otherwise."""
    try:
        options = read_cohort_options(cohort)
    except CohortError as exc:
        sys.exit(str(exc))
    if options.anatomy != "knee" or options.realism != "clinical":
        sys.exit(f"{cohort / 'cohort.json'}: not a clinical knee cohort "
                 f"(anatomy {options.anatomy}, realism {options.realism})")
    return options


def region_sums(image: np.ndarray, plane: ImagePlane, anatomy, acl_radius_mm: float
                ) -> tuple[float, float, tuple[int, int], np.ndarray]:
    """Sums of one normalised image over the core and the halo pixels, their counts, and the summed (column,
    row) pixel coordinates of the core (for where the ACL lies in the image)."""
    q = to_frame(plane.pixel_grid_lps().reshape(-1, 3), anatomy.origin_lps, anatomy.axes_lps)
    d2, t = segment_distance2(q, anatomy.acl_femoral_k, anatomy.acl_tibial_k)
    d = np.sqrt(d2).reshape(image.shape)
    t = t.reshape(image.shape)
    core = (d <= acl_radius_mm) & (t >= CORE_T[0]) & (t <= CORE_T[1])
    halo = (d > acl_radius_mm + HALO_MM[0]) & (d <= acl_radius_mm + HALO_MM[1]) & (t >= HALO_T[0]) & (t <= HALO_T[1])
    rows, cols = np.nonzero(core)
    return (float(image[core].sum()), float(image[halo].sum()), (int(core.sum()), int(halo.sum())),
            np.array([cols.sum(), rows.sum()], float))


def exam_features(subject_dir: Path, anatomy, config: PrepareConfig) -> dict[str, dict[str, float]]:
    """Per input ("prepared", "stored"): the core, halo and core - halo means over the sagittal stack."""
    table, errors = scan_slices(subject_dir, config)
    if errors:
        raise SystemExit(f"{errors[0][0]}: {errors[0][1]}")
    sag = [s for s in table.slices if s.view == VIEW_CODES["SAG"] and s.phase == 0]
    if not sag:
        raise SystemExit(f"{subject_dir}: no sagittal stack found")
    sums = {k: np.zeros(4) for k in ("prepared", "stored")}
    centre = np.zeros(2)
    for s in sag:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = read_file_frames(s.frame.path, [s.frame.frame_index])[0]
        prepared, plane = prepare_image(pixels, s.frame.plane, config.spacing_mm, config.size_px,
                                        config.normalisation, config.clip_percentiles, config.antialias)
        stored, _ = normalise_intensity(pixels, config.normalisation, config.clip_percentiles)
        for key, (img, pl) in {"prepared": (prepared, plane), "stored": (stored, s.frame.plane)}.items():
            c, h, (nc, nh), xy = region_sums(img, pl, anatomy, anatomy.acl_radius_mm)
            sums[key] += (c, h, nc, nh)
            if key == "prepared":
                centre += xy
    out = {}
    for key, (c, h, nc, nh) in sums.items():
        core = c / nc if nc else float("nan")
        halo = h / nh if nh else float("nan")
        out[key] = {"core": core, "halo": halo, "core_minus_halo": core - halo, "core_px": int(nc)}
    n_core = sums["prepared"][2]
    out["prepared"]["core_centre_px"] = [float(v) for v in (centre / n_core if n_core else centre * np.nan)]
    return out


def auc(positive: list[float], negative: list[float]) -> float:
    """AUC of ``positive`` against ``negative`` scores (``training.cls_metrics.roc_auc``; NaN when one is empty)."""
    return roc_auc([1] * len(positive) + [0] * len(negative), [*positive, *negative])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--subjects", type=int, default=0, help="the first N subjects only (0: all)")
    ap.add_argument("--spacing-mm", type=float, default=2.0)
    ap.add_argument("--size-px", type=int, default=96)
    ap.add_argument("--json", type=Path, default=None, help="write every exam's features here")
    args = ap.parse_args(argv)
    options = cohort_options(args.cohort)
    config = PrepareConfig(anatomy="knee", spacing_mm=args.spacing_mm, size_px=args.size_px, dtype="float32")
    n = options.subjects if args.subjects <= 0 else min(args.subjects, options.subjects)
    rows = []
    for index in range(n):
        folder = args.cohort / subject_name(index)
        if not folder.is_dir():
            sys.exit(f"{folder}: missing (the cohort is incomplete)")
        _site, sequence, grade, anatomy = clinical_knee_subject(options, index)
        rows.append({"index": index, "grade": grade, "sequence": sequence.name,
                     "features": exam_features(folder, anatomy, config)})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")

    print(f"cohort {args.cohort} (seed {options.seed}): {n} exams, "
          f"prepared input {args.size_px} px at {args.spacing_mm} mm; AUC torn vs intact (higher = torn)")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["sequence"]].append(r)
    for key in ("prepared", "stored"):
        for feat in FEATURES:
            def value(r: dict, feat: str = feat, key: str = key) -> float:
                return r["features"][key][feat]
            intact = [value(r) for r in rows if r["grade"] == "intact"]
            parts = [f"all {auc([value(r) for r in rows if r['grade'] != 'intact'], intact):.3f}"]
            for grade in ("partial", "complete"):
                parts.append(f"{grade} {auc([value(r) for r in rows if r['grade'] == grade], intact):.3f}")
            for seq, members in sorted(groups.items()):
                torn = [value(r) for r in members if r["grade"] != "intact"]
                ok = [value(r) for r in members if r["grade"] == "intact"]
                parts.append(f"{seq} {auc(torn, ok):.3f} ({len(torn)}/{len(ok)})")
            print(f"{key:>8} {feat:<16} " + "  ".join(parts))
    counts = {g: sum(r["grade"] == g for r in rows) for g in ("intact", "partial", "complete")}
    px = [r["features"]["prepared"]["core_px"] for r in rows]
    print(f"exams by grade {counts}; ACL core pixels per prepared stack: median {int(np.median(px))}, "
          f"min {min(px)}")
    xy = np.array([r["features"]["prepared"]["core_centre_px"] for r in rows]) - (args.size_px - 1) / 2
    print(f"where the ACL core lies in the prepared image, from the image centre (px, column / row): "
          f"{xy[:, 0].min():+.1f} to {xy[:, 0].max():+.1f} / {xy[:, 1].min():+.1f} to {xy[:, 1].max():+.1f}; "
          f"largest distance {np.hypot(xy[:, 0], xy[:, 1]).max():.1f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
