"""Inputs of the split-equivalence test (``test_splits.py``) and the frozen partitions they gave.

``split_expected.json`` holds the partitions that the four splitters of commit dd0b8ae
(``data.datasets.split_subjects``, ``training.data_hooks.split_subjects``,
``data.segmentation.split_seg_subjects`` + ``choose_labeled_subjects``,
``training.finetune_acl.split_exams``) returned for these inputs, before they were merged into
``data.splits``. Results recorded in the README depend on these partitions: they must never change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPECTED_PATH = Path(__file__).with_name("split_expected.json")

SIZES = (0, 1, 2, 3, 4, 5, 7, 10, 23)
FRACTIONS = (0.0, 0.1, 0.2, 0.25, 0.5, 0.9)
SEEDS = (0, 1, 7)
SEG_FRACTIONS = ((0.0, 0.0), (0.2, 0.2), (0.1, 0.3), (0.5, 0.5), (0.0, 0.2), (0.2, 0.0), (0.34, 0.34))
LABEL_PATTERNS: dict[str, list[int]] = {
    "one_negative": [0],
    "one_positive": [1],
    "pair": [0, 1],
    "three": [0, 1, 0],
    "negatives_only": [0] * 5,
    "positives_only": [1] * 4,
    "balanced": [0, 1] * 3,
    "unbalanced": [1, 1] + [0] * 8,
    "mixed": [int(c) for c in "01101000100111010000101"],
}


def keys(n: int, prefix: str = "subject") -> list[str]:
    """``n`` hashed-looking subject keys (12 hex digits, as ``dicom.records.hash_identifier`` gives)."""
    return [hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest()[:12] for i in range(n)]


def synthetic_ids(n: int) -> list[str]:
    return [f"synthetic-{i:03d}" for i in range(n)]


@dataclass
class Item:
    """An exam stand-in: the splitters read only ``key`` and ``label``."""

    key: str
    label: int


def holdout_cases() -> list[tuple[int, float, int]]:
    return [(n, f, s) for n in SIZES for f in FRACTIONS for s in SEEDS]


def permuted_cases() -> list[tuple[int, float, list[str], int]]:
    cases = [(n, f, [], s) for n in SIZES for f in FRACTIONS for s in SEEDS]
    cases += [(5, 0.5, ["synthetic-001", "synthetic-003"], 0), (3, 0.0, ["synthetic-002"], 1)]
    return cases


def seg_cases() -> list[tuple[int, float, float, int]]:
    return [(n, vf, tf, s) for n in SIZES for vf, tf in SEG_FRACTIONS for s in SEEDS]


def labeled_cases() -> list[tuple[int, float, float, int, int | None, int]]:
    """(n subjects, val, test, split seed, labelled n, seed) on the pool of a seg split."""
    out = []
    for n in (1, 3, 5, 10, 23):
        for vf, tf in ((0.2, 0.2), (0.0, 0.0)):
            for split_seed in (0, 3):
                for k in (None, 0, 1, 2, 4, 6, 14, 23):
                    for seed in (0, 5, 6):
                        out.append((n, vf, tf, split_seed, k, seed))
    return out


def exam_cases() -> list[tuple[str, float, float, int, int | None, int]]:
    return [(p, vf, tf, ss, k, s) for p in LABEL_PATTERNS for vf in (0.0, 0.2, 0.4) for tf in (0.0, 0.3)
            for ss in (0, 1) for k in (None, 1, 2, 3, 4, 9) for s in (0, 5)]


def exam_items(pattern: str) -> list[Item]:
    labels = LABEL_PATTERNS[pattern]
    return [Item(k, lab) for k, lab in zip(keys(len(labels), "exam"), labels, strict=True)]


def load_expected() -> dict[str, Any]:
    return json.loads(EXPECTED_PATH.read_text(encoding="utf-8"))
