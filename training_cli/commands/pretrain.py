"""``planessl pretrain --config FILE [--set KEY=VALUE ...] [--resume] [--out DIR]``.

Validates the whole configuration (and that the cache exists) before any training step, prints
where the outputs go, trains (under ``torchrun`` for several processes or machines) and exports
the best weights. Exit status: 0 done; 2 invalid configuration / output directory / checkpoint;
130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM — both after writing a resumable
``last`` checkpoint (continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..arguments import add_overrides_argument
from ..errors import CLIError

EPILOG = """\
examples:
  planessl pretrain --config Resources/Configs/pretrain_demo.yaml
  planessl pretrain --config cfg.yaml --set model.base_filters=8 optim.epochs=3 --out runs/try
  planessl pretrain --config cfg.yaml --out runs/try --resume
  planessl pretrain --config cfg.yaml --data mnms2:/data/MnM2/dataset --out runs/mnms2   (prepares OUT/cache first)
  torchrun --nproc_per_node=4 -m training_cli pretrain --config cfg.yaml      (4 GPUs, DDP)

outputs: OUT/config.yaml, OUT/checkpoints/{last,best}.safetensors (+ .json), OUT/metrics.csv,
OUT/progress.png, OUT/tensorboard/, OUT/train.log and OUT/model/ (model.safetensors + manifest.json).
exit status: 0 done, 2 bad configuration, 130/143 stopped by SIGINT/SIGTERM (resumable).
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "pretrain",
        help="self-supervised pretraining (intersection lines and/or slice location)",
        description=(
            "Pretrain the PlaneSSL network on the pretext tasks from a YAML configuration. "
            "Run under torchrun for several GPUs or machines (optim.batch_size is the global batch)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="YAML configuration")
    add_overrides_argument(p, "model.base_filters=8 optim.epochs=3")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output directory (overrides 'output')")
    p.add_argument("--resume", action="store_true", help="continue the run in the output directory from 'last'")
    p.add_argument("--data", metavar="FORMAT:PATH",
                   help="prepare the cache from this data set first (= --set data.format=FORMAT data.root=PATH; "
                        "the cache goes to data.cache, else OUT/cache, and is reused while unchanged)")
    p.set_defaults(func=run)
    return p


def _log_to_file(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("planessl").addHandler(handler)
    return handler


def run(args: argparse.Namespace) -> int:
    # imported here so that `planessl --help` and the other commands do not load torch
    from PlaneSSLLib.training.config import load_config, parse_overrides
    from PlaneSSLLib.training.data_hooks import check_data_source, ensure_cache
    from PlaneSSLLib.training.distributed import env_world
    from PlaneSSLLib.training.pretrain import last_checkpoint, train
    from PlaneSSLLib.training.signals import TrainingInterrupted

    rank, world, _ = env_world()
    overrides = parse_overrides(args.overrides)
    if args.data:
        from PlaneSSLLib.data.sources import parse_data_spec

        spec = parse_data_spec(args.data)
        overrides["data.root"], overrides["data.format"] = str(spec.root), spec.format
    if args.out is not None:
        overrides["output"] = str(args.out)
    config = load_config(args.config, overrides)
    report = ensure_cache(config, rank=rank)
    if report is not None:
        print(f"planessl pretrain: {config.data.format}:{config.data.root} -> "
              f"{'reused' if report.reused else 'prepared'} cache {report.cache_dir} ({report.n_slices} slices, "
              f"{report.n_subjects} subjects)" + "".join(f"\n  {n}" for n in report.notes), file=sys.stderr, flush=True)
    check_data_source(config)
    out = Path(config.output)
    last = last_checkpoint(out)
    if args.resume and not last.is_file():
        raise CLIError(f"{out}: nothing to resume (no {last})")
    if not args.resume and last.is_file():
        raise CLIError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    handler = None
    if rank == 0:
        handler = _log_to_file(out / "train.log")
        procs = f" on {world} processes" if world > 1 else ""
        print(f"planessl pretrain: {'resuming' if args.resume else 'writing'} {out}{procs} "
              f"(checkpoints/, metrics.csv, progress.png, model/)", file=sys.stderr, flush=True)
    else:
        logging.getLogger("planessl").setLevel(logging.WARNING)
    try:
        result = train(config, resume=args.resume)
    except TrainingInterrupted as exc:
        if rank == 0:
            print(f"planessl pretrain: {exc}; continue with: planessl pretrain --config {args.config} "
                  f"--out {out} --resume", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:
        if handler is not None:
            logging.getLogger("planessl").removeHandler(handler)
            handler.close()
    if rank == 0:
        best = f"{result.best_metric:.4g} at epoch {result.best_epoch}" if result.best_metric is not None else "n/a"
        print(f"planessl pretrain: done, {result.epochs} epochs, {result.global_step} steps; best loss {best}; "
              f"weights {result.weights}", file=sys.stderr, flush=True)
    return 0
