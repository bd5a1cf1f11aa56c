"""``planessl finetune seg|acl``: fine-tune on a labelled task, from scratch or from pretrained weights.

Both tasks come from the one registry (``PlaneSSLLib/training/tasks.py``), take the same flags,
resume the same way and print the same JSON summary on stdout:
``{"task", "output", "weights", "init", "transfer", "labeled_subjects", "seed", "best_epoch",
"evaluated_on", "metric", "value"}`` (``metric``: the task's headline, ``dice mean`` or ``auc``).
Exit status: 0 done, 2 bad configuration, data or weights, 128 + signal after SIGINT/SIGTERM
(a resumable checkpoint was written; continue with the same command and ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..arguments import add_overrides_argument, add_task_group

EPILOG = """\
examples:
  planessl finetune {task} --config Resources/Configs/finetune_{task}_demo.yaml --out runs/{task}_scratch
  planessl finetune {task} --config cfg.yaml --init runs/demo/pretrain/{anatomy}/model --labeled-subjects 4 \\
      --seed 1 --out runs/{task}_pre_4_1
  planessl finetune {task} --config cfg.yaml --set optim.epochs=50 --out runs/x
  planessl finetune {task} --config cfg.yaml --out runs/x --resume      # after a stop or a crash

outputs: OUT/config.yaml, OUT/checkpoints/{{best,last}}.safetensors, OUT/metrics.csv, OUT/progress.png,
OUT/tensorboard/, {outputs} and OUT/model/ (model.safetensors + manifest.json).
"""

TASKS = {
    "seg": {
        "help": "cardiac segmentation (RV, Myo, LV) of SAX stacks at ED and ES",
        "description": "Fine-tune a U-Net for ACDC-style cardiac segmentation with Dice + cross-entropy, selecting "
                       "the best validation Dice, then report Dice/HD95/ASSD on the test subjects.",
        "anatomy": "heart", "example": "optim.epochs=3 model.base_filters=8",
        "outputs": "OUT/test_metrics.csv (Dice, HD95, ASSD per subject, phase and structure), OUT/result.json",
        "formats": "phantom, dicom (labels in the phantom layout), acdc, mnms2",
    },
    "acl": {
        "help": "exam-level ACL-tear classification (knee SAG/COR/AX stacks)",
        "description": "Fine-tune the PlaneSSL encoder (or train from scratch) to classify knee exams as ACL torn or "
                       "intact: a shared encoder over every slice, pooling over slices, fusion of the planes.",
        "anatomy": "knee", "example": "optim.epochs=3 data.max_slices=8",
        "outputs": "OUT/metrics.json (AUC, accuracy, sensitivity, specificity with bootstrap CIs; by tear grade "
                   "where labels.csv has acl_grade)",
        "formats": "phantom or dicom (knee studies + ROOT/labels.csv), mrnet",
    },
}


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p, tasks = add_task_group(sub, "finetune", help="fine-tune on a labelled task (seg: cardiac; acl: knee)",
                              description="Fine-tune a PlaneSSL network, from scratch or from pretrained weights.",
                              dest="finetune_task")
    for name, text in TASKS.items():
        t = tasks.add_parser(name, help=text["help"], description=text["description"],
                             epilog=EPILOG.format(task=name, anatomy=text["anatomy"], outputs=text["outputs"]),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        t.add_argument("--config", type=Path, required=True, metavar="FILE", help="YAML configuration")
        t.add_argument("--data", default=None, metavar="FORMAT:PATH",
                       help=f"the labelled data set (overrides data.format and data.root): {text['formats']}, "
                            "or auto (the layout is detected and logged)")
        add_overrides_argument(t, text["example"])
        t.add_argument("--init", default=None, metavar="scratch|WEIGHTS",
                       help="'scratch' or a pretrained weights directory/.zip (overrides init.init)")
        t.add_argument("--transfer", choices=("encoder+decoder", "encoder"), default=None,
                       help="what to transfer from pretrained weights (seg default encoder+decoder: all but the "
                            "last layer; acl: encoder)")
        t.add_argument("--labeled-subjects", type=_int_at_least(1), default=None, metavar="N",
                       help="labelled training subjects, chosen deterministically by --seed (default: all)")
        t.add_argument("--seed", type=_int_at_least(0), default=None, metavar="S",
                       help="seed (labelled subset, init, order)")
        t.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
        t.add_argument("--resume", action="store_true", help="continue the run in --out after a stop or a crash")
        t.set_defaults(func=run)
    return p


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low`` (the message names the flag, not the config key it sets)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    # imported here so that `planessl --help` and the other commands do not load torch
    from PlaneSSLLib.training.finetune import run_overrides
    from PlaneSSLLib.training.signals import TrainingInterrupted
    from PlaneSSLLib.training.tasks import FINETUNE_KINDS

    kind = FINETUNE_KINDS[args.finetune_task]
    overrides = run_overrides(args.overrides, init=args.init, transfer=args.transfer,
                              labeled_subjects=args.labeled_subjects, seed=args.seed, output=args.out)
    if args.data:
        from PlaneSSLLib.data.sources import parse_data_spec

        spec = parse_data_spec(args.data)
        overrides |= {"data.format": spec.format, "data.root": str(spec.root)}
        if kind.name == "seg":
            overrides["data.dicom"] = None  # the old name of data.root, when the config file still uses it
    config = kind.load_config(args.config, overrides)
    verb = "resuming" if args.resume else "writing"
    print(f"planessl finetune {kind.name}: {verb} {args.out} (init {config.init.init})", file=sys.stderr, flush=True)
    try:
        result = kind.run(config, resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"planessl finetune {kind.name}: {exc}; continue with the same command and --resume", file=sys.stderr,
              flush=True)
        return exc.exit_code
    if result is None:  # a rank other than 0 under torchrun
        return 0
    summary = result.summary()
    value = "undefined" if summary["value"] is None else f"{summary['value']:.3f}"
    print(f"planessl finetune {kind.name}: done; best epoch {result.best_epoch}, {summary['metric']} on "
          f"{summary['evaluated_on']} {value}; weights {result.weights}", file=sys.stderr, flush=True)
    print(json.dumps(summary))
    return 0
