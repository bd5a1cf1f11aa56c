"""``planessl predict seg`` imports only what inference needs: a run registers its own command alone
(``training_cli.main.COMMAND_NAMES``), so neither the phantom generator nor the training stack is
imported on that path (issue 15, fast inference path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from test_weights_contract import _manifest, _network

from PlaneSSLLib.inference.weights import export_model
from PlaneSSLLib.phantoms import CohortOptions, write_cohort
from training_cli.main import COMMAND_MODULES, COMMAND_NAMES, build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_module_is_named_once():
    assert sorted(COMMAND_NAMES.values()) == sorted(COMMAND_MODULES)
    choices = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them there
    assert sorted(choices) == sorted(COMMAND_NAMES)


def test_predict_seg_imports_no_phantom_or_training_module(tmp_path):
    write_cohort(tmp_path / "c", CohortOptions("heart", subjects=1, seed=3, phases=2, matrix=48), workers=1)
    torch.manual_seed(0)
    weights = export_model(_network("seg").eval(), tmp_path / "w", _manifest("seg"))
    code = (
        "import sys; from training_cli.main import main; "
        f"rc = main(['predict', 'seg', {str(tmp_path / 'c' / 'subject_0000')!r}, '--weights', {str(weights)!r}, "
        f"'--out', {str(tmp_path / 'out')!r}, '--no-dicom-seg']); "
        "bad = sorted(m for m in sys.modules if m.startswith(('PlaneSSLLib.phantoms', 'PlaneSSLLib.training', "
        "'PlaneSSLLib.data.prepare', 'monai'))); "
        "print(rc, bad)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.stdout.strip().splitlines()[-1] == "0 []", run.stdout + run.stderr
