"""Why does a fine-tuning run of the clinical heart study never find a structure? Rerun one of its runs with
one setting changed at a time and print what each change does (README, "The transfer study", the strong
protocol's lost structures).

    python scripts/rate_probe.py --study runs/study --run strong/lines_n4_s0 --out runs/rate_probe

``--study``: a study folder with its cohorts, segmentation cache and pretrained networks (the folder of
``planessl experiment transfer --config Resources/Configs/experiment_transfer_clinical.yaml --out DIR``, or a
copy of its record, docs/studies/heart_clinical, once that command has written the cohorts and caches into it
again); ``--run``: ``<protocol>/<run>`` of a finished run. Its saved ``config.yaml`` is run again by
``planessl finetune seg`` with the study's paths moved to ``--study``: unchanged (does the run reproduce?),
then with each change below. Each variant runs on one CPU thread, two at a time (``--jobs``); a variant
already finished in ``--out`` is reused. Then, for the unchanged rerun's network, the confusion count over
the first 16 volumes of the segmentation cache (reference class x predicted class) with BatchNorm in
evaluation mode and with batch statistics: a class lost in both is not a train/test BatchNorm gap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

#: variant name -> the settings it changes (``--set`` items)
VARIANTS = {
    "unchanged": [],
    "ce_only": ["loss.dice_weight=0"],
    "no_head_warmup": ["optim.head_warmup_steps=0"],
    "full_rate": ["optim.transferred_lr=null"],
    "full_rate_no_warmup": ["optim.transferred_lr=null", "optim.head_warmup_steps=0"],
}
STRUCTURES = ("RV", "Myo", "LV")


def _moved(path: str | None, old_root: Path, new_root: Path) -> str | None:
    """``path`` under the study folder the run was written in, moved to ``new_root``."""
    if not path or path == "scratch":
        return path
    try:
        return str(new_root / Path(path).relative_to(old_root))
    except ValueError:
        return path


def _run_variant(config: Path, study: Path, out: Path, name: str, changes: list[str]) -> Path:
    target = out / name
    if (target / "result.json").is_file():
        return target
    saved = yaml.safe_load(config.read_text(encoding="utf-8"))
    old_root = Path(saved["output"]).parents[3]  # <study>/runs/<protocol>/runs/<run>
    moved = [f"data.{k}={_moved(saved['data'][k], old_root, study)}" for k in ("dicom", "cache") if saved["data"][k]]
    init = _moved(saved["init"]["init"], old_root, study)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "training_cli.main", "finetune", "seg", "--config", str(config), "--init", str(init),
           "--set", *moved, "runtime.tensorboard=false", "runtime.progress=none", *changes, "--out", str(target)]
    with open(out / f"{name}.log", "w", encoding="utf-8") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"variant {name} failed (exit {done.returncode}); see {out / f'{name}.log'}")
    return target


def _dice(result: Path) -> dict[str, float]:
    summary = json.loads((result / "result.json").read_text(encoding="utf-8"))["summary"]
    return {"mean": summary["mean"]["dice"], **{s: summary[f"all {s}"]["dice"] for s in STRUCTURES}}


def _confusion(run: Path, study: Path) -> None:
    import numpy as np
    import torch

    from PlaneSSLLib.data.cache import open_cache
    from PlaneSSLLib.inference.weights import load_validated

    torch.set_num_threads(1)
    cache = open_cache(study / "seg_cache", content="seg")
    net, _ = load_validated(run / "model", "cpu", expect_task="seg")
    counts = {"evaluation": np.zeros((4, 4), int), "batch statistics": np.zeros((4, 4), int)}
    for k, rows in enumerate(cache.volumes().values()):
        if k == 16:
            break
        x = torch.from_numpy(np.asarray(cache.images[rows], np.float32)).unsqueeze(1)
        ref = np.asarray(cache.labels[rows])
        for mode, table in counts.items():
            net.train(mode == "batch statistics")
            with torch.no_grad():
                pred = net(x)["lines"].argmax(1).numpy()
            for c in range(4):
                table[c] += np.bincount(pred[ref == c], minlength=4)[:4]
    for mode, table in counts.items():
        print(f"\nconfusion, BatchNorm with {mode} (rows: reference bg/RV/Myo/LV, columns: predicted)")
        for name, row in zip(("bg", *STRUCTURES), table, strict=True):
            print(f"  {name:>3} " + " ".join(f"{v:9d}" for v in row))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--run", required=True, help="<protocol>/<run>, e.g. strong/lines_n4_s0")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    protocol, run = args.run.split("/", 1)
    recorded = args.study / "runs" / protocol / "runs" / run
    config = recorded / "config.yaml"
    if not config.is_file() or not (recorded / "result.json").is_file():
        raise SystemExit(f"{recorded}: not a finished run of the study (no config.yaml or result.json)")
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        done = dict(zip(VARIANTS, pool.map(lambda kv: _run_variant(config, args.study.resolve(), args.out, *kv),
                                           VARIANTS.items()), strict=True))
    print(f"{args.run}: test Dice (mean over RV/Myo/LV and ED/ES; per structure)\n")
    print("| run | change | mean | " + " | ".join(STRUCTURES) + " |")
    print("|---|---|---:|" + "---:|" * len(STRUCTURES))
    rows = [("the study's run", "–", _dice(recorded))]
    rows += [(name, " ".join(VARIANTS[name]) or "none", _dice(path)) for name, path in done.items()]
    for name, change, d in rows:
        print(f"| {name} | {change} | {d['mean']:.3f} | " + " | ".join(f"{d[s]:.3f}" for s in STRUCTURES) + " |")
    _confusion(done["unchanged"], args.study.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
