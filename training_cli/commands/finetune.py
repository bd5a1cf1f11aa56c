"""``planessl finetune seg ...``: fine-tune a segmentation network (cardiac, ACDC labels).

``finetune`` has one sub-command per task: ``seg`` here; ``acl`` (knee ACL-tear classification)
comes from ``training_cli/commands/finetune_acl.py`` when that module is present (its
``register_acl(subparsers)`` adds it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..arguments import add_overrides_argument, add_task_group
from ..errors import CLIError
from .finetune_acl import register_acl

SEG_EPILOG = """\
examples:
  planessl finetune seg --config Resources/Configs/finetune_seg_demo.yaml --out runs/seg_scratch
  planessl finetune seg --config cfg.yaml --init runs/demo/pretrain/heart/model --labeled-subjects 4 --seed 1 \\
      --out runs/seg_pre_4_1
  planessl finetune seg --config cfg.yaml --init W --transfer encoder --set optim.epochs=50 --out runs/seg_enc

outputs: OUT/config.yaml, OUT/checkpoints/{best,last}.safetensors, OUT/metrics.csv, OUT/progress.png,
OUT/test_metrics.csv (Dice, HD95, ASSD per subject, phase and structure), OUT/result.json and
OUT/model/ (model.safetensors + manifest.json, task "seg").
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p, tasks = add_task_group(sub, "finetune", help="fine-tune on a labelled task (seg: cardiac; acl: knee)",
                              description="Fine-tune a PlaneSSL network, from scratch or from pretrained weights.",
                              dest="finetune_task")
    register_seg(tasks)
    register_acl(tasks)
    return p


def register_seg(tasks: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = tasks.add_parser(
        "seg", help="cardiac segmentation (RV, Myo, LV) of SAX stacks at ED and ES",
        description="Fine-tune a U-Net for ACDC-style cardiac segmentation with Dice + cross-entropy, "
                    "selecting the best validation Dice, then report Dice/HD95/ASSD on the test subjects.",
        epilog=SEG_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="YAML configuration")
    add_overrides_argument(p, "optim.epochs=3 model.base_filters=8")
    p.add_argument("--init", default=None, metavar="scratch|WEIGHTS",
                   help="'scratch' or a pretrained weights directory/.zip (overrides init.init)")
    p.add_argument("--transfer", choices=("encoder+decoder", "encoder"), default=None,
                   help="what to transfer from pretrained weights (default encoder+decoder: all but the last layer)")
    p.add_argument("--labeled-subjects", type=int, default=None, metavar="N",
                   help="labelled training subjects, chosen deterministically by --seed (default: all)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="seed (labelled subset, init, order)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=run_seg)
    return p


def run_seg(args: argparse.Namespace) -> int:
    from PlaneSSLLib.data.segmentation import SegDataError
    from PlaneSSLLib.training.config import ConfigError, parse_overrides
    from PlaneSSLLib.training.finetune_seg import finetune_seg, load_finetune_config
    from PlaneSSLLib.training.transfer import TransferError

    try:
        overrides = parse_overrides(args.overrides)
        overrides["output"] = str(args.out)
        if args.init is not None:
            overrides["init.init"] = args.init
        if args.transfer is not None:
            overrides["init.transfer"] = args.transfer
        if args.labeled_subjects is not None:
            overrides["data.labeled_subjects"] = args.labeled_subjects
        if args.seed is not None:
            overrides["runtime.seed"] = args.seed
        config = load_finetune_config(args.config, overrides)
        print(f"planessl finetune seg: writing {args.out} (init {config.init.init})", file=sys.stderr, flush=True)
        result = finetune_seg(config)
    except (ConfigError, SegDataError, TransferError) as exc:
        raise CLIError(str(exc)) from exc
    mean = result.summary.get("mean", {})
    print(json.dumps({"output": str(result.output), "weights": str(result.weights), "best_epoch": result.best_epoch,
                      "best_val_dice": result.best_val_dice, "evaluated_on": result.evaluated_on,
                      "mean_dice": mean.get("dice"), "n_empty_pred": mean.get("n_empty_pred")}))
    return 0
