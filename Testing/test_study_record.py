"""The study records (the clinical heart study's ``docs/studies/heart_clinical``, its follow-up, and the clinical
knee's ACL study ``docs/studies/knee_acl_clinical``, written by ``planessl experiment transfer --save-record``)
still match the code: a study spread over several machines resumes from it only while every
pretraining stamp and run fingerprint it holds is what the current code and configs compute. A change that
breaks this (a pretraining config's text, a fine-tuning setting, a new config field) would make the next sitting
run the finished runs again; this test names them instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from PlaneSSLLib.training.experiment import load_experiment_config, plan_runs, pretraining_names
from PlaneSSLLib.training.study import _protocol_configs, cohort_specs, cohort_stamp, pretraining_stamp

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs" / "studies" / "heart_clinical"
CONFIG = REPO / "Resources" / "Configs" / "experiment_transfer_clinical.yaml"
#: the follow-up (a full-rate strong protocol) on the study's own cohorts and pretraining, and its record
FOLLOW_UP = REPO / "Resources" / "Configs" / "experiment_transfer_clinical_fullrate.yaml"
FOLLOW_UP_RECORD = REPO / "docs" / "studies" / "heart_clinical_fullrate"
#: the ACL study on the clinical knee (issue 12)
ACL_RECORD = REPO / "docs" / "studies" / "knee_acl_clinical"
ACL_CONFIG = REPO / "Resources" / "Configs" / "experiment_transfer_acl_clinical.yaml"
RECORDS = [(RECORD, CONFIG), (FOLLOW_UP_RECORD, FOLLOW_UP), (ACL_RECORD, ACL_CONFIG)]
#: the records that ran their own pretraining (the follow-up reuses the heart study's)
PRETRAINED = [(RECORD, CONFIG), (ACL_RECORD, ACL_CONFIG)]


def _config():
    return load_experiment_config(CONFIG)


def test_the_record_is_there_and_says_what_it_holds():
    for record in (RECORD, ACL_RECORD):
        if record == ACL_RECORD and not (record / "record.json").is_file():
            continue
        note = json.loads((record / "record.json").read_text(encoding="utf-8"))
        finished = list(record.glob("runs/*/runs/*/results_rows.json"))
        assert note["finished_finetuning_runs"] == len(finished), record
        assert (record / "settings" / "study.yaml").is_file(), record
        assert not (record / "cohorts").exists() and not list(record.rglob("checkpoints")), record
    assert list(RECORD.glob("runs/*/runs/*/results_rows.json")) and (RECORD / "results.md").is_file()


@pytest.mark.parametrize("record,config_path", PRETRAINED, ids=["heart", "acl"])
def test_pretraining_stamps_match_the_configs(record, config_path):
    if not (record / "pretrain").is_dir():
        pytest.skip(f"{record}: no pretraining recorded yet")
    config = load_experiment_config(config_path)
    specs = cohort_specs(config.cohorts)
    for name in pretraining_names(config.inits):
        run = record / "pretrain" / name
        assert (run / "done.json").is_file() and (run / "model" / "model.safetensors").is_file(), name
        wanted = pretraining_stamp(config.pretraining, name, record, cohort_stamp(specs["pretrain"]), "")
        saved = json.loads((run / "stage.json").read_text(encoding="utf-8"))
        assert saved == json.loads(json.dumps(wanted, default=str)), (
            f"pretraining {name}: its stamp no longer matches {config.pretraining['config']} and the study's "
            "pretraining overrides; the next sitting would pretrain again")


@pytest.mark.parametrize("record,config_path", RECORDS, ids=["study", "follow-up", "acl"])
def test_every_finished_run_is_reused(record, config_path):
    if not (record / "record.json").is_file():
        pytest.skip(f"{record}: no record yet")
    config = load_experiment_config(config_path)
    names = pretraining_names(config.inits)
    weights = {name: record / "pretrain" / name / "model" for name in names}
    folders = {name: record / "cohorts" / name for name in cohort_specs(config.cohorts)}
    subs = _protocol_configs(config, folders, record, weights)
    stale = []
    for protocol, sub in subs.items():
        plan = plan_runs(sub, record / "runs" / protocol, tidy=False, root=record)
        finished = {p.parent.name for p in (record / "runs" / protocol / "runs").glob("*/results_rows.json")}
        redo = {args[5].name for _, args in plan.pending}
        stale += sorted(f"{protocol}/{run}" for run in finished & redo)
    assert not stale, (f"{len(stale)} finished runs of the record no longer match their settings (e.g. "
                       f"{', '.join(stale[:4])}): a fine-tuning config, a setting or a config field changed. Name "
                       "a new field with its neutral value in experiment.NEUTRAL_ADDITIONS, or, when the change is "
                       "meant to change the study, say so in the README and let the next sitting run them again")


def test_the_demo_quotes_the_record():
    """``make demo`` ends with the study's answer at 1 and 2 labelled subjects, against the best scratch of the
    study and its full-rate follow-up; it must be the follow-up record's (which holds the study's runs too)."""
    import re

    from training_cli.commands.demo import STUDY_NOTE

    text = (FOLLOW_UP_RECORD / "results.md").read_text(encoding="utf-8")
    section = text.split("## Best pretrained against best scratch", 1)[1].split("The same chosen on the test", 1)[0]
    note = " ".join(STUDY_NOTE.split())
    for n in (1, 2):
        row = re.search(rf"^\| {n} \| (\S+) \| (\S+) \| ([+-]\d\.\d+) \[[^]]*\] \| \[(-?\d\.\d+), (-?\d\.\d+)\] \| "
                        r"(\d) of (\d)", section, re.M)
        assert row, f"no validation-chosen row for {n} labelled in {FOLLOW_UP_RECORD / 'results.md'}"
        assert row[1].endswith("/lines-enc") and row[2].endswith("/scratch"), (n, row.groups())
        quoted = (f"{row[3]} ", f"{row[4]} to {row[5]}", f"{row[6]} of {row[7]}")
        assert all(q in note for q in quoted), row.groups()
    assert "the lines-only encoder" in note and "heart_clinical_fullrate" in note



def test_the_follow_up_changes_only_the_rate():
    """The follow-up shares the study's cohorts, pretraining, budget and its two protocols (so their runs are the
    study's, reused); its third protocol is the strong one with every layer at the full rate and nothing else."""
    from PlaneSSLLib.training.experiment import _load_finetune

    study, follow = _config(), load_experiment_config(FOLLOW_UP)
    for key in ("task", "cohorts", "pretraining", "finetune_overrides", "seeds", "report"):
        assert getattr(follow, key) == getattr(study, key), key
    assert {k: v for k, v in follow.protocols.items() if k != "strong-full"} == study.protocols
    assert all(follow.inits[name] == study.inits[name] for name in follow.inits)
    assert set(follow.labeled_subjects) <= set(study.labeled_subjects)
    folders = {name: RECORD / "cohorts" / name for name in cohort_specs(study.cohorts)}
    weights = {name: RECORD / "pretrain" / name / "model" for name in pretraining_names(study.inits)}
    subs = _protocol_configs(follow, folders, RECORD, weights)
    strong = _load_finetune(subs["strong"], subs["strong"].inits["lines"], labeled_subjects=1, seed=0).to_dict()
    full = _load_finetune(subs["strong-full"], subs["strong-full"].inits["lines"], labeled_subjects=1, seed=0).to_dict()
    assert strong["optim"].pop("transferred_lr") == 3e-4 and full["optim"].pop("transferred_lr") is None
    assert full == strong


def test_the_follow_up_reuses_the_study_runs():
    """Every paper/strong run in the follow-up's record is the study's run of that name, unchanged."""
    if not (FOLLOW_UP_RECORD / "record.json").is_file():
        pytest.skip("no follow-up record yet")
    shared = list(FOLLOW_UP_RECORD.glob("runs/paper/runs/*/results_rows.json"))
    shared += FOLLOW_UP_RECORD.glob("runs/strong/runs/*/results_rows.json")
    assert len(shared) == 60
    for rows in shared:
        original = RECORD / rows.relative_to(FOLLOW_UP_RECORD)
        assert rows.read_bytes() == original.read_bytes(), rows
