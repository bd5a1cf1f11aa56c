"""``planessl finetune acl``: exam-level ACL-tear classification from the SAG/COR/AX stacks.

Registered under ``planessl finetune`` by ``training_cli.commands.finetune`` through
:func:`register_acl`. Validates the whole configuration before training, trains, and prints the
best epoch's validation AUC with its bootstrap interval. Exit status 0 done, 2 bad
configuration, data or weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..arguments import add_overrides_argument
from ..errors import CLIError

EPILOG = """\
examples:
  planessl finetune acl --config Resources/Configs/finetune_acl_demo.yaml --out runs/acl
  planessl finetune acl --config cfg.yaml --init runs/demo/pretrain/knee/model --labeled-subjects 8 --seed 1 \\
      --out runs/acl8
  planessl finetune acl --config cfg.yaml --set data.root=data/knee model.pooling=attention --out runs/att

outputs: OUT/config.yaml, OUT/checkpoints/{best,last}.safetensors, OUT/metrics.csv, OUT/metrics.json
(validation AUC, accuracy, sensitivity, specificity with bootstrap CIs) and OUT/model/
(model.safetensors + manifest.json, task "acl", labels intact/torn).
"""


def register_acl(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``acl`` to the sub-commands of ``planessl finetune``."""
    p = subparsers.add_parser(
        "acl",
        help="exam-level ACL-tear classification (knee SAG/COR/AX stacks)",
        description=("Fine-tune the PlaneSSL encoder (or train from scratch) to classify knee exams as ACL torn or "
                     "intact: a shared encoder over every slice, pooling over slices, fusion of the planes."),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="YAML configuration")
    add_overrides_argument(p, "optim.epochs=3 data.max_slices=8")
    p.add_argument("--init", default="scratch", metavar="scratch|WEIGHTS",
                   help="'scratch' or exported pretraining weights (directory or .zip) whose encoder is transferred")
    p.add_argument("--labeled-subjects", type=int, default=None, metavar="N",
                   help="train on N labelled exams of the training pool (default: all)")
    p.add_argument("--seed", type=int, default=None, help="seed of the labelled subset and training "
                   "(default runtime.seed)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output directory (overrides 'output')")
    p.set_defaults(func=run_acl)
    return p


def run_acl(args: argparse.Namespace) -> int:
    from PlaneSSLLib.data.exams import ExamError
    from PlaneSSLLib.inference.weights import WeightsError
    from PlaneSSLLib.training.config import ConfigError, parse_overrides
    from PlaneSSLLib.training.finetune_acl import finetune_acl, load_acl_config

    try:
        overrides = parse_overrides(args.overrides)
        if args.out is not None:
            overrides["output"] = str(args.out)
        config = load_acl_config(args.config, overrides)
        print(f"planessl finetune acl: writing {config.output} (init {args.init})", file=sys.stderr, flush=True)
        result = finetune_acl(config, args.init, args.labeled_subjects, args.seed)
    except (ConfigError, ExamError, WeightsError) as exc:
        raise CLIError(str(exc)) from exc
    auc = result.metrics["auc"]
    text = "undefined" if auc["value"] is None else f"{auc['value']:.3f}"
    if auc["value"] is not None and auc["ci_low"] is not None:
        text += f" ({auc['confidence']:.0%} CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})"
    split = "test" if result.n_test else "validation"
    print(f"planessl finetune acl: done; {result.n_train} training / {result.n_val} validation / {result.n_test} test "
          f"exams; best epoch {result.best_epoch}, {split} AUC {text}; weights {result.weights}", file=sys.stderr,
          flush=True)
    return 0
