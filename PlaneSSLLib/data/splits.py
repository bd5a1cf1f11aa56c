"""Subject and exam splits: who trains, who validates, who is held out for testing, who is labelled.

Every split is a pure function of its inputs (subject keys, fractions, seeds). Two orders exist:

- **hash order** (:func:`hash_order`): subjects ranked by ``sha256(f"{seed}:{key}")`` (with a salt
  prefix for the segmentation splits), so a subject's side does not depend on which other
  subjects are present. Used by the pretraining hold-out of a cache (:func:`split_subjects`),
  the segmentation pool/validation/test split (:func:`split_seg_subjects`) with its nested
  labelled subsets (:func:`choose_labeled_subjects`), and the ACL exams split stratified by label
  (:func:`split_exams`).
- **permutation order** (:func:`split_ids_permuted`): a numpy permutation seeded by
  ``[seed, 0xDA7A]``; the synthetic pretraining data's split.

The two count rules differ too (kept as they are: results recorded in the README depend on
them): :func:`holdout_count` (``round(f · n)``, at least one and at most ``n - 1`` when ``f > 0``
and ``n ≥ 2``) for the hash-order hold-outs and the ACL split; ``ceil`` for the permutation split;
the segmentation split's own rule in :func:`split_seg_subjects`. ``Testing/split_expected.json``
freezes their outputs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np

from ..errors import PlaneSSLError

__all__ = [
    "Labelled",
    "SplitError",
    "choose_labeled_subjects",
    "hash_order",
    "holdout_count",
    "split_exams",
    "split_ids_permuted",
    "split_seg_subjects",
    "split_seg_subjects_stratified",
    "split_subjects",
    "stratified_counts",
]


class SplitError(PlaneSSLError, ValueError):
    """A split that cannot be made (a fraction out of range, more labelled subjects than the pool holds)."""


class Labelled(Protocol):
    """What :func:`split_exams` reads of an exam (``preprocess.exams.Exam``)."""

    key: str
    label: int | None


ExamT = TypeVar("ExamT", bound=Labelled)


def hash_order(keys: Sequence[str], seed: int, salt: str = "") -> list[int]:
    """Indices of ``keys`` ranked by ``sha256("[salt:]seed:key")`` (independent of the other keys)."""
    prefix = f"{salt}:" if salt else ""
    return sorted(range(len(keys)), key=lambda i: hashlib.sha256(f"{prefix}{seed}:{keys[i]}".encode()).hexdigest())


def holdout_count(fraction: float, n: int) -> int:
    """``round(fraction · n)``, at least 1 and at most ``n - 1`` when ``fraction > 0`` and ``n ≥ 2``."""
    k = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        k = max(1, min(k, n - 1))
    return k


# ----------------------------------------------------------------------------- pretraining
def split_subjects(subject_keys: Sequence[str], holdout_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Subject indices split into (training, held out) in hash order; ``holdout_count`` of them held out."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise SplitError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    ranked = hash_order(subject_keys, seed)
    k = holdout_count(holdout_fraction, len(subject_keys))
    return sorted(ranked[k:]), sorted(ranked[:k])


def split_ids_permuted(ids: Sequence[str], val_fraction: float, val_subjects: Sequence[str],
                       seed: int) -> tuple[list[str], list[str]]:
    """``(train ids, val ids)`` in the order of ``ids``: the named ``val_subjects`` held out, else
    ``ceil(val_fraction · n)`` ids (at most ``n - 1``) of a numpy permutation seeded by ``[seed, 0xDA7A]``."""
    ids = list(ids)
    if val_subjects:
        unknown = sorted(set(val_subjects) - set(ids))
        if unknown:
            raise SplitError(f"data.val_subjects: unknown subject id(s): {', '.join(unknown)}")
        held = set(val_subjects)
        return [s for s in ids if s not in held], [s for s in ids if s in held]
    n_val = math.ceil(val_fraction * len(ids)) if val_fraction > 0 else 0
    n_val = min(n_val, max(0, len(ids) - 1))
    perm = np.random.default_rng([seed, 0xDA7A]).permutation(len(ids))
    val = {ids[i] for i in perm[:n_val]}
    return [s for s in ids if s not in val], [s for s in ids if s in val]


# ----------------------------------------------------------------------------- segmentation
def split_seg_subjects(subject_keys: Sequence[str], val_fraction: float, test_fraction: float,
                       split_seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    """``(train pool, validation, test)`` subject indices in hash order (salt ``split``).

    At least one subject stays in the training pool; test gets at least one when its fraction
    is > 0 and there are ≥ 3 subjects, validation at least one when its fraction is > 0 and ≥ 2
    subjects remain after the test set.
    """
    n = len(subject_keys)
    ranked = hash_order(subject_keys, split_seed, "split")
    n_test = max(1, int(round(test_fraction * n))) if test_fraction > 0 and n >= 3 else 0
    n_val = max(1, int(round(val_fraction * n))) if val_fraction > 0 and n - n_test >= 2 else 0
    n_test = min(n_test, max(0, n - 1 - n_val))
    test, val = sorted(ranked[:n_test]), sorted(ranked[n_test:n_test + n_val])
    return sorted(ranked[n_test + n_val:]), val, test


def stratified_counts(sizes: dict[str, int], k: int) -> dict[str, int]:
    """``k`` spread over groups of ``sizes`` in proportion (largest remainder; ties by larger group, then name).

    A group of two or more keeps at least one member outside the ``k`` while another group has room, so
    every pathology stays in the rest too; SplitError when ``k`` exceeds the total."""
    total = sum(sizes.values())
    if not 0 <= k <= total:
        raise SplitError(f"cannot take {k} of {total} subjects")
    if k == 0 or total == 0:
        return dict.fromkeys(sizes, 0)
    quota = {g: k * c / total for g, c in sizes.items()}
    counts = {g: min(int(math.floor(q)), c) for (g, q), c in zip(quota.items(), sizes.values(), strict=True)}
    soft_cap = {g: c - 1 if c >= 2 else c for g, c in sizes.items()}
    for cap in (soft_cap, sizes):
        order = sorted(sizes, key=lambda g: (-(quota[g] - counts[g]), -sizes[g], g))
        while sum(counts.values()) < k:
            room = [g for g in order if counts[g] < cap[g]]
            if not room:
                break
            for g in room:
                if sum(counts.values()) == k:
                    break
                counts[g] += 1
    return counts


def split_seg_subjects_stratified(subject_keys: Sequence[str], groups: Sequence[str | None], n_test: int,
                                  n_val: int, split_seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    """``(train pool, validation, test)`` subject indices with the test and validation sets stratified by
    ``groups`` (e.g. the pathology of each subject; None: one unknown group).

    Within each group subjects are taken in hash order (salt ``split``, as :func:`split_seg_subjects`), the
    test set first (:func:`stratified_counts` of ``n_test``), then the validation set from the rest.
    SplitError unless at least one subject is left for the training pool.
    """
    n = len(subject_keys)
    if len(groups) != n:
        raise SplitError(f"{len(groups)} group labels for {n} subjects")
    if n_test < 0 or n_val < 0 or n_test + n_val > n - 1:
        raise SplitError(f"{n_test} test + {n_val} validation subjects leave no training pool of {n} subjects")
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g or "", []).append(i)
    ranked = {g: [idx[j] for j in hash_order([subject_keys[i] for i in idx], split_seed, "split")]
              for g, idx in sorted(by_group.items())}
    take_test = stratified_counts({g: len(v) for g, v in ranked.items()}, n_test)
    test = [i for g, v in ranked.items() for i in v[:take_test[g]]]
    rest = {g: v[take_test[g]:] for g, v in ranked.items()}
    take_val = stratified_counts({g: len(v) for g, v in rest.items()}, n_val)
    val = [i for g, v in rest.items() for i in v[:take_val[g]]]
    pool = [i for g, v in rest.items() for i in v[take_val[g]:]]
    return sorted(pool), sorted(val), sorted(test)


def choose_labeled_subjects(pool: Sequence[int], subject_keys: Sequence[str], n: int | None, seed: int) -> list[int]:
    """``n`` subjects of ``pool`` (all when None) in hash order (salt ``labeled``), so for one seed the
    2-subject set is part of the 4-subject set. SplitError (a ValueError) when ``n`` is not in 1..len(pool)."""
    pool = list(pool)
    if n is None:
        return sorted(pool)
    if not 1 <= n <= len(pool):
        raise SplitError(f"labeled subjects must be between 1 and {len(pool)} (the training pool), got {n}")
    order = hash_order([subject_keys[i] for i in pool], seed, "labeled")
    return sorted(pool[i] for i in order[:n])


# ----------------------------------------------------------------------------- knee exams (ACL)
def split_exams(exams: Sequence[ExamT], val_fraction: float, split_seed: int, labeled_subjects: int | None,
                seed: int, test_fraction: float = 0.0) -> tuple[list[ExamT], list[ExamT], list[ExamT]]:
    """``(training, validation, test)`` exams, each sorted by key.

    Per label (0, then 1), in hash order by ``split_seed``: ``holdout_count(test_fraction)`` exams
    to test, then ``holdout_count(val_fraction)`` of the rest to validation (so each class keeps a
    training exam); then, with ``labeled_subjects``, that many training exams by ``seed``,
    stratified by label (:func:`_stratified_subset`). Exams of other labels (None) are left out.
    SplitError when ``labeled_subjects`` is not in 1..len(training).
    """
    train: list[ExamT] = []
    val: list[ExamT] = []
    test: list[ExamT] = []
    for label in (0, 1):
        group = [e for e in exams if e.label == label]
        order = hash_order([e.key for e in group], split_seed)
        k_test = holdout_count(test_fraction, len(group))
        k_val = holdout_count(val_fraction, len(group) - k_test)
        test += [group[i] for i in order[:k_test]]
        val += [group[i] for i in order[k_test:k_test + k_val]]
        train += [group[i] for i in order[k_test + k_val:]]
    if labeled_subjects is not None:
        train = _stratified_subset(train, int(labeled_subjects), seed)
    for part in (train, val, test):
        part.sort(key=lambda e: e.key)
    return train, val, test


def _stratified_subset(train: list[ExamT], n: int, seed: int) -> list[ExamT]:
    """``n`` exams of ``train`` in hash order by ``seed``, positives in proportion (at least one of each
    class when ``n ≥ 2`` and both are present)."""
    if not 1 <= n <= len(train):
        raise SplitError(f"--labeled-subjects: {n} asked, the training pool holds {len(train)} exam(s)")
    pos = [e for e in train if e.label == 1]
    neg = [e for e in train if e.label == 0]
    n_pos = int(round(n * len(pos) / len(train)))
    if n >= 2 and pos and neg:
        n_pos = min(max(1, n_pos), n - 1)
    n_pos = min(n_pos, len(pos))
    n_neg = min(n - n_pos, len(neg))
    n_pos = n - n_neg
    return ([pos[i] for i in hash_order([e.key for e in pos], seed)[:n_pos]]
            + [neg[i] for i in hash_order([e.key for e in neg], seed)[:n_neg]])
