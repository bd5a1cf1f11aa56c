"""The study's statistics and splits on known numbers: paired bootstrap interval, stratified test split, thirds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from PlaneSSLLib.data.splits import SplitError, split_seg_subjects_stratified, stratified_counts
from PlaneSSLLib.dicom.views import APEX_PRIOR_LPS
from PlaneSSLLib.training.seg_metrics import region_dice, stack_thirds
from PlaneSSLLib.training.study_report import paired_bootstrap_ci, paired_gains, paired_t_ci


def test_bootstrap_interval_of_constant_and_two_point_differences():
    assert paired_bootstrap_ci([0.05] * 5) == pytest.approx((0.05, 0.05, 0.05))
    # two differences 0 and 1: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    mean, low, high = paired_bootstrap_ci([0.0, 1.0], resamples=4000)
    assert (mean, low, high) == (0.5, 0.0, 1.0)
    mean, low, high = paired_bootstrap_ci([0.0, 1.0], confidence=0.4, resamples=4000)
    assert low == high == 0.5  # the middle 40 % lies on the atom at 0.5
    assert all(math.isnan(x) for x in paired_bootstrap_ci([0.2])[1:])


def test_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    d = [0.10, -0.02, 0.04, 0.07]
    means = np.array(sorted(np.mean(c) for c in itertools.product(d, repeat=len(d))))  # all 256 equally likely
    exact = np.quantile(means, [0.025, 0.975])
    mean, low, high = paired_bootstrap_ci(d, resamples=20000, seed=3)
    assert mean == pytest.approx(np.mean(d))
    assert low == pytest.approx(exact[0], abs=0.006) and high == pytest.approx(exact[1], abs=0.006)
    assert paired_bootstrap_ci(d, resamples=2000, seed=1) == paired_bootstrap_ci(d, resamples=2000, seed=1)


def test_paired_t_interval_on_known_numbers():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2 df) = 4.302653
    mean, low, high = paired_t_ci([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.2 - 4.302653 * 0.1 / math.sqrt(3), 0.2 + 4.302653 * 0.1 / math.sqrt(3)))
    assert paired_t_ci([0.05] * 4) == pytest.approx((0.05, 0.05, 0.05))
    assert math.isnan(paired_t_ci([0.2])[1]) and all(math.isnan(x) for x in paired_t_ci([]))
    # five differences: the t interval is wider than the percentile bootstrap's (which sees only these five)
    d = [0.21, 0.30, 0.02, 0.15, 0.11]
    _, b_low, b_high = paired_bootstrap_ci(d, resamples=20000)
    _, t_low, t_high = paired_t_ci(d)
    assert t_low < b_low and t_high > b_high


def test_paired_gains_pair_by_seed():
    g = paired_gains({0: 0.8, 1: 0.7, 2: 0.9}, {0: 0.6, 1: 0.5, 3: 0.1}, resamples=500)
    assert g["pairs"] == 2 and g["gain"] == pytest.approx(0.2) and g["better_on"] == 2
    assert g["low"] == pytest.approx(0.2) and g["high"] == pytest.approx(0.2)
    assert g["t_low"] == pytest.approx(0.2) and g["t_high"] == pytest.approx(0.2)  # no spread: a point
    assert list(g["per_seed"]) == [0, 1]


def test_stratified_counts_proportional_and_keeping_each_group():
    assert stratified_counts({"NOR": 10, "DCM": 10, "HCM": 10, "MINF": 10, "ARV": 10}, 10) == dict.fromkeys(
        ("NOR", "DCM", "HCM", "MINF", "ARV"), 2)
    counts = stratified_counts({"a": 6, "b": 3, "c": 1}, 5)
    assert sum(counts.values()) == 5 and counts["a"] == 3 and counts["b"] in (1, 2)
    assert stratified_counts({"a": 2, "b": 2}, 3) in ({"a": 2, "b": 1}, {"a": 1, "b": 2})
    with pytest.raises(SplitError):
        stratified_counts({"a": 2}, 3)


def test_stratified_split_is_deterministic_disjoint_and_stratified():
    groups = ["NOR", "DCM", "HCM", "MINF", "ARV"] * 8
    keys = [f"k{i:03d}" for i in range(len(groups))]
    pool, val, test = split_seg_subjects_stratified(keys, groups, 10, 5, split_seed=0)
    assert len(test) == 10 and len(val) == 5 and len(pool) == 25
    assert set(pool) | set(val) | set(test) == set(range(40)) and not set(pool) & set(test)
    assert sorted(groups[i] for i in test) == sorted(["NOR", "DCM", "HCM", "MINF", "ARV"] * 2)
    assert {groups[i] for i in val} == {"NOR", "DCM", "HCM", "MINF", "ARV"}
    assert split_seg_subjects_stratified(keys, groups, 10, 5, 0) == (pool, val, test)
    assert split_seg_subjects_stratified(keys, groups, 10, 5, 1)[2] != test
    # a subject's side depends on its own key within its group, not on the others' order
    assert split_seg_subjects_stratified(keys[::-1], groups[::-1], 10, 5, 0)[2] == sorted(39 - i for i in test)
    with pytest.raises(SplitError, match="no training pool"):
        split_seg_subjects_stratified(keys, groups, 30, 10, 0)


def test_thirds_run_from_base_to_apex_whatever_the_normal_sign():
    x = np.array([1.0, 0.0, 0.0])
    y = np.cross(APEX_PRIOR_LPS, x)
    y /= np.linalg.norm(y)
    x = np.cross(y, APEX_PRIOR_LPS)  # x × y = the apex prior
    loc = np.arange(8) * 8.0  # increasing towards the apex
    assert stack_thirds(loc, x, y).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert stack_thirds(loc, -x, y).tolist() == [2, 2, 1, 1, 1, 0, 0, 0]  # flipped normal: k = 0 is apical


def test_region_dice_skips_structures_absent_from_both():
    ref = np.zeros((3, 4, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, :2, :2] = 3  # basal LV
    pred[0, :2, :1] = 3
    pred[2, 0, 0] = 1  # apical RV predicted, absent from the reference
    out = region_dice(pred, ref, np.array([0, 1, 2]))
    assert out == {"basal": pytest.approx(2 * 2 / 6), "apical": 0.0}


def test_best_pretrained_against_best_scratch_across_protocols():
    from PlaneSSLLib.training.study_report import best_against_best

    def row(protocol, init, seed, value):
        return {"protocol": protocol, "init": init, "labeled_subjects": 1, "seed": seed, "metric": "dice mean",
                "value": value}

    rows = [row("paper", "scratch", s, 0.60 + 0.01 * s) for s in range(3)]
    rows += [row("strong", "scratch", s, 0.65 + 0.01 * s) for s in range(3)]
    rows += [row("paper", "enc", s, 0.70 + 0.01 * s) for s in range(3)]
    rows += [row("strong", "enc", s, 0.72 + 0.02 * s) for s in range(3)]
    (entry,) = best_against_best(rows, "dice mean", ["paper", "strong"], "scratch", resamples=20000)
    assert entry["best"] == "strong/enc" and entry["scratch"] == "strong/scratch" and entry["pairs"] == 3
    assert entry["gain"] == pytest.approx(0.08)  # per-seed differences 0.07, 0.08, 0.09
    # resampled means of 3 differences: 0.07 and 0.09 each have probability 1/27 > 2.5 %, so they are the bounds
    assert entry["low"] == pytest.approx(0.07) and entry["high"] == pytest.approx(0.09)


def test_best_pretrained_is_chosen_on_validation_not_on_the_test_numbers():
    from PlaneSSLLib.training.study_report import best_against_best

    def rows(protocol, init, test, val):
        base = {"protocol": protocol, "init": init, "labeled_subjects": 2, "seed": 0}
        return [{**base, "seed": s, "metric": m, "value": v + 0.01 * s}
                for s in range(3) for m, v in (("dice mean", test), ("val_dice mean", val))]

    # 'lines' has the best test mean, 'enc' the best validation mean; scratch likewise per protocol
    data = (rows("paper", "scratch", 0.50, 0.60) + rows("strong", "scratch", 0.55, 0.58)
            + rows("paper", "lines", 0.80, 0.62) + rows("paper", "enc", 0.70, 0.70))
    (test_choice,) = best_against_best(data, "dice mean", ["paper", "strong"], "scratch", resamples=2000)
    (val_choice,) = best_against_best(data, "dice mean", ["paper", "strong"], "scratch", resamples=2000,
                                      choose_by="val_dice mean")
    assert (test_choice["best"], test_choice["scratch"]) == ("paper/lines", "strong/scratch")
    assert (val_choice["best"], val_choice["scratch"]) == ("paper/enc", "paper/scratch")
    assert val_choice["gain"] == pytest.approx(0.20) and val_choice["better_on"] == 3
    assert val_choice["best_score"] == pytest.approx(0.71) and val_choice["scratch_score"] == pytest.approx(0.61)
    assert val_choice["t_low"] == pytest.approx(0.20) == val_choice["t_high"]  # no spread in the differences
    # without validation scores no honest choice can be made: the count is left out
    test_only = [r for r in data if r["metric"] == "dice mean"]
    assert best_against_best(test_only, "dice mean", ["paper", "strong"], "scratch", choose_by="val_dice mean") == []


def test_a_partial_report_says_how_far_the_study_got_and_shows_the_pretext_errors(tmp_path):
    from PlaneSSLLib.training.experiment import ExperimentConfig
    from PlaneSSLLib.training.study_report import write_study_report

    rows = [{"task": "seg", "protocol": "paper", "init": init, "labeled_subjects": 1, "labeled_setting": 1,
             "seed": 0, "metric": "dice mean", "value": value} for init, value in (("scratch", 0.5), ("enc", 0.6))]
    rows += [{**r, "seed": 2, "value": r["value"] + (0.1 if r["init"] == "scratch" else -0.05)} for r in rows]
    config = ExperimentConfig(inits={"scratch": "scratch", "enc": {"weights": "w", "transfer": "encoder"}},
                              report={"bootstrap": 100})
    pretext = {"multitask": {"overall": {"median_angle_deg": 7.25, "median_distance_mm": 2.0, "location_mae": 0.061,
                                         "mirror_confusion": 0.125, "n_images": 120},
                             "location_by_view": {"SAG": {"mae": 0.173, "mirror_confusion": 0.16},
                                                  "AX": {"mae": 0.02, "mirror_confusion": None}}}}
    for r, wall in zip(rows, (200.0, 210.0, 190.0, 400.0), strict=True):
        r["wall_s"] = wall
    write_study_report(rows, tmp_path, config, ["paper"], pretext=pretext,
                       progress={"runs_done": 2, "runs_total": 10, "seeds_done": [0]},
                       pretraining_time={"multitask": {"epochs": 80, "train_s": 600.0}})
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("# Transfer study")
    assert "Partial report: 2 of 10 fine-tuning runs finished (seeds 0 complete)" in md
    assert "| multitask | 120 | 7.2 | 2.0 | 0.061 | 12.5 % | SAG 0.173, 16.0 %; AX 0.020, – |" in md
    # the gain seed by seed (seed 0: +0.100, seed 2: -0.050), positive on one of two, and its t interval
    t_low, t_high = paired_t_ci([0.1, -0.05])[1:]
    assert (f"| enc | +0.100 | -0.050 | 1 of 2 | [{t_low:.3f}, {t_high:.3f}] |") in md
    assert "| seed 0 | seed 2 |" in md and "+0.025 [" in md
    # what it cost: four runs' wall times, the pretraining's epochs
    assert "| paper | 4 | 205 s (190–400 s) | 0.28 h |" in md and "| multitask | 80 | 10.0 min |" in md
    # the label-efficiency matrix: one row per init, one column per count (seeds 0 and 2: 0.5/0.6, 0.6/0.55)
    assert "| init \\ labelled subjects | 1 |" in md
    assert "| scratch | 0.550 ± 0.071 |" in md and "| enc | 0.575 ± 0.035 |" in md
    write_study_report(rows, tmp_path, config, ["paper"])
    assert "Partial report" not in (tmp_path / "results.md").read_text()


def test_runs_that_never_found_a_structure_are_listed(tmp_path):
    from PlaneSSLLib.training.experiment import ExperimentConfig
    from PlaneSSLLib.training.study_report import collapsed_structures, write_study_report

    def rows_of(init, seed, myo, empty):
        base = {"task": "seg", "protocol": "strong", "init": init, "labeled_subjects": 2, "labeled_setting": 2,
                "seed": seed}
        return [{**base, "metric": "dice mean", "value": 0.5}, {**base, "metric": "dice all Myo", "value": myo},
                {**base, "metric": "n_empty_pred all Myo", "value": empty}]

    rows = rows_of("scratch", 0, 0.6, 0) + rows_of("lines", 0, 0.0, 24) + rows_of("lines", 1, 0.01, 20)
    # only a Dice of exactly 0 over the test set counts (0.01: found somewhere, just badly)
    assert collapsed_structures(rows, ["strong"]) == [{"protocol": "strong", "init": "lines", "labeled": "2",
                                                       "seed": 0, "structure": "Myo", "empty_volumes": 24.0}]
    assert collapsed_structures(rows, ["paper"]) == []
    config = ExperimentConfig(inits={"scratch": "scratch", "lines": "w"}, report={"bootstrap": 100})
    write_study_report(rows, tmp_path, config, ["strong"])
    md = (tmp_path / "results.md").read_text()
    assert "| strong / lines | 1 of 2 | 2 labelled, seed 0: Myo (24) |" in md
    write_study_report(rows_of("scratch", 0, 0.6, 0), tmp_path, config, ["strong"])
    assert "never found a structure" not in (tmp_path / "results.md").read_text()


def test_an_acl_report_has_grade_columns_and_no_thirds(tmp_path):
    from PlaneSSLLib.training.experiment import ExperimentConfig
    from PlaneSSLLib.training.study_report import write_study_report

    rows = []
    for seed, (scratch, pre) in enumerate(((0.70, 0.75), (0.60, 0.72))):
        for init, auc in (("scratch", scratch), ("multitask", pre)):
            base = {"task": "acl", "protocol": "default", "init": init, "labeled_subjects": 8, "labeled_setting": 8,
                    "seed": seed}
            rows += [{**base, "metric": "auc", "value": auc}, {**base, "metric": "val_auc", "value": auc},
                     {**base, "metric": "auc grade partial", "value": auc - 0.2},
                     {**base, "metric": "auc grade complete", "value": auc + 0.1}]
    config = ExperimentConfig(task="acl", inits={"scratch": "scratch", "multitask": "w"}, report={"bootstrap": 100})
    summary = write_study_report(rows, tmp_path, config, ["default"])
    md = (tmp_path / "results.md").read_text()
    assert "| complete (AUC) | partial (AUC) |" in md and "Grade columns" in md
    assert "basal" not in md and "Thirds" not in md
    # multitask: mean AUC 0.735, complete 0.835, partial 0.535; gain over scratch +0.085 (seeds +0.05, +0.12)
    assert "| multitask | 0.735 ± 0.021 (n=2) | +0.085 [" in md and "| 0.835 | 0.535 |" in md
    assert "each initialisation's `auc` minus scratch's" in md
    entry = next(e for e in summary["table"] if e["init"] == "multitask")
    assert entry["grade partial"] == pytest.approx(0.535)
