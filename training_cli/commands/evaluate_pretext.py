"""``planessl evaluate-pretext --run RUN``: pretext errors of a pretrained network on held-out subjects.

Reads the run's resolved ``config.yaml`` and exported weights (``RUN/model``), rebuilds the
same held-out split from the cache, fits a line to every predicted heatmap and reports the
angle error (°) and distance error (mm) per view pair, the location MAE and mirror-confusion rate
(overall and per view; ``training.pretext_eval``), beside the same
architecture untrained (the baseline a pretrained network must beat). Writes
``RUN/pretext_eval/{report.json, report.md, overlays/*.png}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import CLIError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate-pretext",
        help="line angle/distance errors and location MAE of a pretrained network on held-out subjects",
        description=__doc__.split("\n\n", 1)[1].replace("``", "'"),
    )
    p.add_argument("--run", type=Path, required=True, metavar="RUN", help="output folder of 'planessl pretrain'")
    p.add_argument("--weights", type=Path, default=None, metavar="W", help="weights folder/zip (default RUN/model)")
    p.add_argument("--split", choices=("val", "train"), default="val",
                   help="which subjects to evaluate (default: the run's held-out subjects)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="report folder (default RUN/pretext_eval)")
    p.add_argument("--overlays", type=int, default=4, metavar="N", help="overlay images to write (default 4)")
    p.add_argument("--no-baseline", action="store_true", help="skip the untrained-network baseline")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from PlaneSSLLib.atomic import atomic_write_text
    from PlaneSSLLib.inference.weights import load_exported
    from PlaneSSLLib.training.config import load_config
    from PlaneSSLLib.training.data_hooks import build_datasets
    from PlaneSSLLib.training.pretext_eval import evaluate_pretext, untrained_like

    config_path = args.run / "config.yaml"
    if not config_path.is_file():
        raise CLIError(f"{args.run}: not a pretraining run (no config.yaml)")
    config = load_config(config_path)
    if config.data.source != "cache":
        raise CLIError(f"{config_path}: evaluation needs a run on a prepared cache (data.source: cache)")
    train_ds, val_ds, _, _ = build_datasets(config)
    model, manifest = load_exported(args.weights or args.run / "model", device=args.device)
    dataset = val_ds if args.split == "val" else train_ds
    if dataset is None:
        raise CLIError(f"{config_path}: the run held out no subjects (data.val_fraction is 0); use --split train")
    out = args.out or args.run / "pretext_eval"
    out.mkdir(parents=True, exist_ok=True)
    reports = {}
    for name, net in [("pretrained", model)] + ([] if args.no_baseline else [("untrained", untrained_like(model))]):
        overlays = out / "overlays" if name == "pretrained" else None
        reports[name] = evaluate_pretext(net, dataset, device=args.device, overlay_dir=overlays,
                                         n_overlays=args.overlays)
    result = {
        "run": str(args.run),
        "split": args.split,
        "anatomy": config.data.anatomy,
        "task": manifest.get("task"),
        "budget": {"epochs": config.optim.epochs, "batch_size": config.optim.batch_size,
                   "slices_per_subject": config.optim.slices_per_subject, "image_size": config.data.image_size},
        **{name: r.as_dict() for name, r in reports.items()},
    }
    atomic_write_text(out / "report.json", json.dumps(result, indent=2, allow_nan=False))
    md = "".join(r.markdown(f"{config.data.anatomy}: {name} network ({args.split} subjects)") + "\n"
                 for name, r in reports.items())
    atomic_write_text(out / "report.md", md)
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return 0
    print(md.rstrip())
    pre = reports["pretrained"]
    print(f"\n{config.data.anatomy}: median line angle error {pre.overall_median_angle_deg:.1f} deg, "
          f"location MAE {pre.location_mae:.3f}, mirror confusion {pre.mirror_confusion:.1%}", end="")
    if "untrained" in reports:
        base = reports["untrained"]
        print(f"  (untrained: {base.overall_median_angle_deg:.1f} deg, {base.location_mae:.3f}, "
              f"{base.mirror_confusion:.1%})", end="")
    print(f"\nreport: {out / 'report.md'}")
    return 0

