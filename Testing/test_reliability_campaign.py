"""The adversarial campaign (scripts/campaign.py) in its quick form, on a handful of cases (issue 15).

The full campaign (``nice -n 10 python scripts/campaign.py --out DIR``) is run by hand; this keeps
the script working and its classification honest: damaged DICOM files through ``inspect`` and
``lines``, and one damaged weights file through ``predict seg``, must each end ``ok`` (a sane
result that reports the damage) or as a clean refusal naming the file -- never a traceback, a
hang, a silent wrong result or a changed input.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_campaign_cases_end_ok_or_refused(tmp_path):
    args = [sys.executable, str(REPO / "scripts" / "campaign.py"), "--quick", "--out", str(tmp_path),
            "--only", "truncated-half | inspect", "--only", "truncated-half | lines",
            "--only", "no-ipp-end | inspect", "--only", "no-ipp-end | lines", "--only", "spacing-1e-9 | lines",
            "--only", "syntax-jpeg2000 | inspect", "--only", "nan-tensor | predict seg"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "campaign.csv").open()))
    outcomes = {(r["case"], r["command"]): r["outcome"] for r in rows}
    assert len(rows) == 7, outcomes
    assert set(outcomes.values()) <= {"ok", "refusal"}, outcomes
    # the damage is seen: an image without position has no line; NaN weights are refused
    assert outcomes[("dicom/no-ipp-end", "lines")] == "refusal"
    assert outcomes[("weights/seg/nan-tensor", "predict seg")] == "refusal"
