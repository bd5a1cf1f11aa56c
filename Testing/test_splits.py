"""``data.splits``: the merged splitters give exactly the partitions frozen from the four old ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import split_cases as sc

from PlaneSSLLib.data.splits import (
    SplitError,
    choose_labeled_subjects,
    split_exams,
    split_ids_permuted,
    split_seg_subjects,
    split_subjects,
)
from PlaneSSLLib.errors import PlaneSSLError

EXPECTED = sc.load_expected()


def _outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` as lists (JSON has no tuples), or "error" for a SplitError."""
    try:
        out = fn(*args, **kwargs)
    except SplitError:
        return "error"
    return [list(part) for part in out] if isinstance(out, tuple) else out


def _frozen(value: Any) -> Any:
    return "error" if isinstance(value, dict) else value


def test_every_group_of_cases_is_frozen():
    for name, cases in (("holdout", sc.holdout_cases()), ("permuted", sc.permuted_cases()), ("seg", sc.seg_cases()),
                        ("labeled", sc.labeled_cases()), ("exams", sc.exam_cases())):
        assert len(EXPECTED[name]) == len(cases), name
    assert any(not isinstance(r, dict) for r in EXPECTED["labeled"])
    assert any(not isinstance(r, dict) and r[0] for r in EXPECTED["exams"])


def test_pretraining_holdout_matches_frozen():
    got = [_outcome(split_subjects, sc.keys(n), f, seed=s) for n, f, s in sc.holdout_cases()]
    assert got == [_frozen(r) for r in EXPECTED["holdout"]]


def test_permuted_split_matches_frozen():
    got = [_outcome(split_ids_permuted, sc.synthetic_ids(n), f, named, s) for n, f, named, s in sc.permuted_cases()]
    assert got == [_frozen(r) for r in EXPECTED["permuted"]]


def test_seg_split_matches_frozen():
    got = [_outcome(split_seg_subjects, sc.keys(n), vf, tf, split_seed=s) for n, vf, tf, s in sc.seg_cases()]
    assert got == [_frozen(r) for r in EXPECTED["seg"]]


def test_labeled_subsets_match_frozen_and_nest():
    got = []
    for n, vf, tf, split_seed, k, seed in sc.labeled_cases():
        keys = sc.keys(n)
        pool = split_seg_subjects(keys, vf, tf, split_seed=split_seed)[0]
        got.append(_outcome(choose_labeled_subjects, pool, keys, k, seed=seed))
    assert got == [_frozen(r) for r in EXPECTED["labeled"]]
    keys = sc.keys(23)
    pool = split_seg_subjects(keys, 0.2, 0.2)[0]
    two, four = (choose_labeled_subjects(pool, keys, k, seed=5) for k in (2, 4))
    assert set(two) < set(four) < set(pool)


def test_exam_split_matches_frozen():
    got = []
    for pattern, vf, tf, split_seed, k, seed in sc.exam_cases():
        items = sc.exam_items(pattern)
        position = {id(e): i for i, e in enumerate(items)}
        parts = _outcome(split_exams, items, vf, split_seed, k, seed, test_fraction=tf)
        got.append(parts if parts == "error" else [[position[id(e)] for e in part] for part in parts])
    assert got == [_frozen(r) for r in EXPECTED["exams"]]


def test_split_errors_are_planessl_errors():
    with pytest.raises(SplitError, match="holdout_fraction"):
        split_subjects(sc.keys(3), 1.0)
    with pytest.raises(ValueError, match="between 1 and 2"):  # finetune_seg turns ValueError into a ConfigError
        choose_labeled_subjects([0, 1], sc.keys(2), 3, seed=0)
    with pytest.raises(PlaneSSLError, match="labeled-subjects: 9 asked"):
        split_exams(sc.exam_items("balanced"), 0.2, 0, 9, 0)
    with pytest.raises(SplitError, match="unknown subject id"):
        split_ids_permuted(sc.synthetic_ids(3), 0.0, ["nobody"], 0)
