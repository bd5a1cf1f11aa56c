"""``planessl experiment transfer`` running a whole study on a tiny config: cohorts, one pretraining, a 2-count x
2-seed x 2-init grid, the report (paired gains, thirds), and a rerun that reuses every finished stage."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import yaml

from PlaneSSLLib.training.provenance import source_revision
from training_cli.main import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "Resources" / "Configs"


def _tiny_study(tmp: Path) -> Path:
    size = {"data.image_size": 32, "data.spacing_mm": 9.0}
    raw = {
        "task": "seg",
        "cohorts": {"target": {"anatomy": "heart", "subjects": 5, "seed": 31, "options": {"matrix": 64}},
                    "pretrain": {"anatomy": "heart", "subjects": 3, "seed": 32, "options": {"matrix": 64}}},
        "pretraining": {"config": str(CONFIGS / "pretrain_demo.yaml"), "tasks": {"lines": "lines"},
                        "overrides": {**size, "data.sigma_px": 1.0, "optim.epochs": 1, "optim.slices_per_subject": 2,
                                      "runtime.progress": "none", "runtime.plot": False}},
        "protocols": {"paper": {"config": str(CONFIGS / "finetune_seg_paper.yaml"),
                                "overrides": {"split.test_subjects": 2, "split.val_subjects": 1}}},
        "labeled_subjects": [1, "all"], "seeds": [0, 1], "first_labeled_subjects": [1],
        "inits": {"scratch": "scratch", "lines": "pretrained:lines"},
        "finetune_overrides": {**size, "optim.epochs": 1, "optim.steps_per_epoch": 2},
        "report": {"bootstrap": 200},
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _with_pathology(write):
    """The cohort stage as the clinical phantom will do it: subjects.csv gains a ``pathology`` column."""

    def wrapped(spec, folder):
        write(spec, folder)
        table = folder / "subjects.csv"
        with open(table, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for i, r in enumerate(rows):
            r["pathology"] = ("NOR", "DCM")[i % 2]
        with open(table, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    return wrapped


def test_study_end_to_end_then_resumes(tmp_path, caplog, monkeypatch, capsys):
    from training_cli.commands import experiment as command

    monkeypatch.setattr(command, "_write_cohort", _with_pathology(command._write_cohort))
    config, out = _tiny_study(tmp_path), tmp_path / "study"
    caplog.set_level(logging.INFO)
    following = tmp_path / "following"  # --save-record with a run: the record after every step and at the end
    assert main(["experiment", "transfer", "--config", str(config), "--out", str(out),
                 "--save-record", str(following)]) == 0
    assert capsys.readouterr().err.count(f"wrote the study's record to {following}") == 4  # 3 steps + the end
    assert json.loads((following / "record.json").read_text())["finished_finetuning_runs"] == 8
    assert (out / "cohorts" / "target" / "subjects.csv").is_file() and (out / "pretrain" / "lines" / "model").is_dir()
    runs = sorted(p.name for p in (out / "runs" / "paper" / "runs").iterdir())
    assert runs == [f"{i}_n{n}_s{s}" for i in ("lines", "scratch") for n in ("1", "all") for s in (0, 1)]
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["task", "init", "labeled_subjects", "seed", "metric", "value"]
    head = {(r["init"], r["labeled_subjects"], r["seed"]) for r in rows if r["metric"] == "dice mean"}
    assert head == {(f"paper/{i}", n, s) for i in ("scratch", "lines") for n in ("1", "2") for s in ("0", "1")}
    metrics = {r["metric"] for r in rows}
    assert {"dice basal", "dice mid", "dice apical"} <= metrics
    # 5 subjects NOR/DCM/NOR/DCM/NOR: the 2 test subjects are one of each group
    assert {"dice pathology NOR", "dice pathology DCM"} <= metrics
    md = (out / "results.md").read_text()
    assert "gain over scratch [95 % CI]" in md and "all (2) labelled" in md and "| lines |" in md
    assert "| apical | DCM | NOR |" in md  # pathology columns
    assert "Partial report" not in md and "## Pretext tasks on held-out subjects" in md and "| lines |" in md
    assert "## Compute" in md and "| paper | 8 |" in md  # the eight runs' wall times
    pretext = json.loads((out / "pretrain" / "lines" / "pretext_eval.json").read_text())
    assert pretext["overall"]["n_images"] > 0 and 0.0 <= pretext["overall"]["median_angle_deg"] <= 90.0
    # first_labeled_subjects [1]: 1 labelled for seed 0 and seed 1 first, then 'all' seed by seed, a partial report
    # after each step
    started = [line.split(": fine-tuning")[0].rsplit(" ", 1)[-1] for line in caplog.text.splitlines()
               if "fine-tuning seg" in line]
    assert [r.split("_", 1)[1] for r in started] == ["n1_s0"] * 2 + ["n1_s1"] * 2 + ["nall_s0"] * 2 + ["nall_s1"] * 2
    assert "study report after step 1 of 4 (2 runs finished)" in caplog.text
    assert "study report after step 3 of 4 (6 runs finished)" in caplog.text
    rows_file = out / "runs" / "paper" / "runs" / "scratch_n1_s0" / "results_rows.json"
    saved_rows = json.loads(rows_file.read_text())
    assert saved_rows["wall_s"] > 0
    # the code that ran it: this checkout's revision (the suite runs in a git clone; the key is left out otherwise)
    revision = source_revision()
    assert saved_rows.get("code") == (revision or None)
    assert (out / "results.png").stat().st_size > 1000
    settings = out / "settings"
    assert {"study.yaml", "protocol_paper.yaml", "pretraining.yaml", "software.json", "cohort_target.json"} <= {
        p.name for p in settings.iterdir()}
    software = json.loads((settings / "software.json").read_text())
    assert "torch" in software and software.get("planessl_commit") == revision.get("commit")
    before = (out / "results.csv").read_bytes()

    # a rerun reuses cohorts, pretraining and finished runs; a run without its results file is run again (from
    # its last checkpoint: here the one its last epoch wrote)
    (out / "runs" / "paper" / "runs" / "lines_n1_s1" / "results_rows.json").unlink()
    # meanwhile --report-only reports the 7 finished runs, paired on the seeds each cell has, and runs nothing
    assert main(["experiment", "transfer", "--config", str(config), "--out", str(out), "--report-only"]) == 0
    md = (out / "results.md").read_text()
    assert "Partial report: 7 of 8 fine-tuning runs finished (seeds 0 complete)" in md
    assert "per protocol and labelled count: paper 1 labelled 3/4; paper all labelled 4/4." in md
    assert not (out / "runs" / "paper" / "runs" / "lines_n1_s1" / "results_rows.json").exists()
    stamp = (out / "pretrain" / "lines" / "model" / "model.safetensors").stat().st_mtime_ns
    caplog.clear()
    assert main(["experiment", "transfer", "--config", str(config), "--out", str(out)]) == 0
    text = caplog.text
    assert "cohort target: reusing" in text and "pretraining lines: reusing" in text
    assert text.count("fine-tuning seg") == 0 and text.count("resuming seg") == 1 and "lines_n1_s1: resuming" in text
    assert (out / "pretrain" / "lines" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert (out / "results.csv").read_bytes() == before  # deterministic runs: the same numbers again

    # --jobs 2: every run in a worker process (runs have finished here, so the shared caches exist)
    for name in ("scratch_n1_s1", "lines_nall_s1"):  # one seed: the same block of the grid
        (out / "runs" / "paper" / "runs" / name / "results_rows.json").unlink()
        (out / "runs" / "paper" / "runs" / name / "run_plan.json").unlink()  # no plan: started again
    caplog.clear()
    assert main(["experiment", "transfer", "--config", str(config), "--out", str(out), "--jobs", "2"]) == 0
    assert caplog.text.count("fine-tuning seg") == 2 and "lines_nall_s1: finished" in caplog.text

    def values(data: bytes) -> dict:
        rows = csv.DictReader(data.decode().splitlines())
        return {(r["init"], r["labeled_subjects"], r["seed"], r["metric"]): float(r["value"]) for r in rows}

    again, first = values((out / "results.csv").read_bytes()), values(before)
    assert again.keys() == first.keys()
    worst = max(abs(again[k] - first[k]) for k in first if first[k] == first[k])
    assert worst < 1e-3, worst  # one CPU thread in the worker instead of two: summation order only

    def same(a: dict, b: dict) -> bool:  # the same numbers (NaN where a metric is undefined)
        return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)

    # the study's record: no cohorts, caches or checkpoints; its own report rewritten in place from it alone
    record = tmp_path / "record"
    assert main(["experiment", "transfer", "--config", str(config), "--out", str(out), "--report-only",
                 "--save-record", str(record)]) == 0
    kept = {p.relative_to(record).parts[0] for p in record.rglob("*")}
    assert {"settings", "pretrain", "runs", "results.csv", "record.json"} <= kept
    assert not kept & {"cohorts", "pretrain_cache", "seg_cache"} and not list(record.rglob("checkpoints"))
    assert not list(record.rglob("tensorboard")) and not list((record / "runs").rglob("model"))
    assert (record / "runs" / "paper" / "runs" / "lines_n1_s0" / "test_metrics.csv").is_file()
    assert (record / "pretrain" / "lines" / "model" / "model.safetensors").is_file()
    assert json.loads((record / "record.json").read_text())["finished_finetuning_runs"] == 8
    assert main(["experiment", "transfer", "--config", str(config), "--out", str(record), "--report-only"]) == 0
    assert same(values((record / "results.csv").read_bytes()), again)
    # a copy elsewhere resumes: the cohorts are written again (identically), the pretraining and every run reused
    moved = tmp_path / "elsewhere" / "study"
    moved.parent.mkdir()
    record.rename(moved)
    caplog.clear()
    assert main(["experiment", "transfer", "--config", str(config), "--out", str(moved)]) == 0
    text = caplog.text
    assert "cohort target: writing" in text and "pretraining lines: reusing" in text, text
    assert "fine-tuning seg" not in text and "resuming seg" not in text
    assert same(values((moved / "results.csv").read_bytes()), again)
    # a record is not written over a folder that is not one, nor inside its study
    (tmp_path / "taken").mkdir()
    for dest in (tmp_path / "taken", moved / "inside"):
        assert main(["experiment", "transfer", "--config", str(config), "--out", str(moved), "--report-only",
                     "--save-record", str(dest)]) != 0


def test_study_config_problems_are_named(tmp_path, capsys):
    raw = yaml.safe_load(_tiny_study(tmp_path).read_text())
    raw["cohorts"]["pretrain"]["seed"] = 31
    raw["inits"]["other"] = "pretrained:missing"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert main(["experiment", "transfer", "--config", str(bad), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert "cohorts.pretrain.seed" in err and "pretraining.tasks.missing" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("counts", [[1, 1], [0], ["some"]])
def test_labelled_counts_are_checked(tmp_path, capsys, counts):
    raw = yaml.safe_load(_tiny_study(tmp_path).read_text())
    raw["labeled_subjects"] = counts
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert main(["experiment", "transfer", "--config", str(bad), "--out", str(tmp_path / "o")]) != 0
    assert "labeled_subjects" in capsys.readouterr().err


def test_a_stopped_pretraining_resumes_and_a_changed_one_restarts(heart_cohort, tmp_path, caplog):
    from PlaneSSLLib.training.study import _pretrain_stage

    caplog.set_level(logging.INFO)
    overrides = {"data.image_size": 32, "data.spacing_mm": 9.0, "data.sigma_px": 1.0, "optim.epochs": 2,
                 "optim.slices_per_subject": 2, "runtime.progress": "none", "runtime.plot": False}
    stage = {"config": str(CONFIGS / "pretrain_demo.yaml"), "tasks": {"lines": "lines"}, "overrides": overrides}
    out = tmp_path / "study"
    run = out / "pretrain" / "lines"
    assert _pretrain_stage(stage, heart_cohort, out, ["lines"]) == {"lines": run / "model"}
    # what a kill after the last checkpoint leaves: no model, no done.json
    (run / "done.json").unlink()
    for f in (run / "model").iterdir():
        f.unlink()
    (run / "model").rmdir()
    caplog.clear()
    _pretrain_stage(stage, heart_cohort, out, ["lines"])
    assert "resuming" in caplog.text and (run / "model" / "manifest.json").is_file()
    # other settings: the run starts again from scratch
    caplog.clear()
    _pretrain_stage({**stage, "overrides": {**overrides, "optim.epochs": 1}}, heart_cohort, out, ["lines"])
    assert "resuming" not in caplog.text and "reusing" not in caplog.text
    assert json.loads((run / "done.json").read_text())["epochs"] == 1


def test_a_location_only_decoder_is_refused_before_anything_runs(tmp_path, capsys):
    config = _tiny_study(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["pretraining"]["tasks"] = {"location": "location"}
    raw["inits"] = {"scratch": "scratch", "location": "pretrained:location"}
    config.write_text(yaml.safe_dump(raw))
    assert main(["experiment", "transfer", "--config", str(config), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "inits.location" in err and "no decoder" in err and not (tmp_path / "s").exists()


def test_grid_steps_put_the_first_counts_first_for_every_seed():
    from types import SimpleNamespace

    from PlaneSSLLib.training.study import _grid_steps

    cfg = SimpleNamespace(labeled_subjects=[1, 2, 4, "all"], seeds=[0, 1], first_labeled_subjects=[])
    assert _grid_steps(cfg, ["paper", "strong"]) == [  # default: seed by seed, every protocol, every count
        ("paper", [1, 2, 4, "all"], 0), ("strong", [1, 2, 4, "all"], 0),
        ("paper", [1, 2, 4, "all"], 1), ("strong", [1, 2, 4, "all"], 1)]
    cfg.first_labeled_subjects = [2, 1]  # in the grid's order whatever the config's
    assert _grid_steps(cfg, ["paper", "strong"]) == [
        ("paper", [1, 2], 0), ("paper", [1, 2], 1), ("strong", [1, 2], 0), ("strong", [1, 2], 1),
        ("paper", [4, "all"], 0), ("strong", [4, "all"], 0), ("paper", [4, "all"], 1), ("strong", [4, "all"], 1)]
    cfg.first_labeled_subjects = [1, 2, 4, "all"]
    assert [s[2] for s in _grid_steps(cfg, ["paper"])] == [0, 1]


def test_first_counts_must_be_in_the_grid(tmp_path, capsys):
    config = _tiny_study(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["first_labeled_subjects"] = [2]
    config.write_text(yaml.safe_dump(raw))
    assert main(["experiment", "transfer", "--config", str(config), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert "first_labeled_subjects" in err and "not among labeled_subjects" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_follow_up_reuses_another_study(tmp_path, caplog, capsys):
    """--reuse-from: a follow-up that adds an init starts from the first study's cohorts, caches and finished
    runs (checked against its own settings), runs only the new ones, and leaves the first study as it was."""
    raw = yaml.safe_load(_tiny_study(tmp_path).read_text())
    raw.update(labeled_subjects=[1], seeds=[0], first_labeled_subjects=[], inits={"scratch": "scratch"})
    first_config, follow_config = tmp_path / "first.yaml", tmp_path / "follow.yaml"
    first_config.write_text(yaml.safe_dump(raw, sort_keys=False))
    first, follow = tmp_path / "first", tmp_path / "follow"
    assert main(["experiment", "transfer", "--config", str(first_config), "--out", str(first)]) == 0
    scratch_rows = (first / "runs" / "paper" / "runs" / "scratch_n1_s0" / "results_rows.json").read_bytes()
    cohort_file = next((first / "cohorts" / "target").rglob("*.dcm"))
    raw["inits"] = {"scratch": "scratch", "lines": "pretrained:lines"}
    follow_config.write_text(yaml.safe_dump(raw, sort_keys=False))
    caplog.set_level(logging.INFO)
    caplog.clear()
    assert main(["experiment", "transfer", "--config", str(follow_config), "--out", str(follow),
                 "--reuse-from", str(first)]) == 0
    text = caplog.text
    assert "cohorts target, pretrain, caches seg_cache, pretraining none, 1 finished" in text, text  # no pretraining
    assert "cohort target: reusing" in text and "cohort pretrain: reusing" in text
    assert "scratch_n1_s0: reusing" in text and text.count("fine-tuning seg") == 1 and "lines_n1_s0" in text
    assert (follow / "runs" / "paper" / "runs" / "scratch_n1_s0" / "results_rows.json").read_bytes() == scratch_rows
    assert not (follow / "runs" / "paper" / "runs" / "scratch_n1_s0" / "checkpoints").exists()  # not needed
    assert not (first / "runs" / "paper" / "runs" / "lines_n1_s0").exists()  # the first study is left as it was
    assert (follow / cohort_file.relative_to(first)).read_bytes() == cohort_file.read_bytes()
    # a run taken from the source is still checked: under other settings it is run again, not reused
    raw["finetune_overrides"]["optim.steps_per_epoch"] = 3
    follow_config.write_text(yaml.safe_dump(raw, sort_keys=False))
    other = tmp_path / "other"
    caplog.clear()
    assert main(["experiment", "transfer", "--config", str(follow_config), "--out", str(other),
                 "--reuse-from", str(follow)]) == 0
    assert "2 finished fine-tuning runs" in caplog.text and "pretraining lines" in caplog.text
    assert caplog.text.count("fine-tuning seg") == 2 and caplog.text.count("removing an unfinished or stale") == 2
    # a folder that is not a study, or with --report-only: named, non-zero, nothing written
    capsys.readouterr()
    assert main(["experiment", "transfer", "--config", str(follow_config), "--out", str(tmp_path / "x"),
                 "--reuse-from", str(tmp_path)]) != 0
    assert "not a study folder" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["experiment", "transfer", "--config", str(follow_config), "--out", str(other), "--report-only",
                 "--reuse-from", str(first)]) != 0
    assert "--reuse-from: only when running a study" in capsys.readouterr().err


def test_a_signal_stops_the_study_with_a_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    """Ctrl-C or a scheduler's SIGTERM during a study's pretraining or an in-process run: the run wrote its
    checkpoint, the command says how to go on and exits 128 + signal, and --save-record keeps what finished."""
    import signal

    from PlaneSSLLib.training import study
    from PlaneSSLLib.training.signals import TrainingInterrupted

    def stopped(config, out, stages, jobs=1):
        Path(out).mkdir(parents=True, exist_ok=True)
        raise TrainingInterrupted(signal.SIGINT, str(Path(out) / "pretrain" / "last.safetensors"), 900)

    monkeypatch.setattr(study, "run_study", stopped)
    saved = []
    monkeypatch.setattr("training_cli.commands.experiment.save_record", lambda out, dest: saved.append(dest))
    config = _tiny_study(tmp_path)
    code = main(["experiment", "transfer", "--config", str(config), "--out", str(tmp_path / "o"),
                 "--save-record", str(tmp_path / "record")])
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGINT and "Traceback" not in err
    assert "stopped by SIGINT after step 900" in err and f"--config {config} --out {tmp_path / 'o'}" in err
    assert saved == [tmp_path / "record"]
