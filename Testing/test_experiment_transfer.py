"""``planessl experiment transfer``: orchestration with a fake seg task (fast), and summarise() math."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from PlaneSSLLib.training import experiment as exp
from PlaneSSLLib.training.config import ConfigError
from PlaneSSLLib.training.tasks import FINETUNE_KINDS

REPO = Path(__file__).resolve().parents[1]
SEG_DEMO = REPO / "Resources" / "Configs" / "finetune_seg_demo.yaml"


def _value(init: str, n: int, seed: int) -> float:
    return 0.1 * n + 0.01 * seed + (0.2 if init != "scratch" else 0.0)


class FakeFinetune:
    """Stands in for the seg task's run: records calls, writes result.json, returns deterministic rows."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, str]] = []
        self.transfers: dict[str, str] = {}  # run directory name -> the config's init.transfer
        self.resumed: list[str] = []  # run directory names continued from their checkpoint

    def __call__(self, config, resume=False):
        assert config.optim.epochs == 1  # the experiment's finetune_overrides reached the config
        init, n, seed, output = config.init.init, config.data.labeled_subjects, config.runtime.seed, config.output
        if resume:
            assert (Path(output) / "checkpoints").is_dir()
            self.resumed.append(Path(output).name)
        self.calls.append((str(init), int(n), int(seed), str(output)))
        self.transfers[Path(output).name] = config.init.transfer
        Path(output).mkdir(parents=True, exist_ok=True)
        v = _value(str(init), n, seed)
        (Path(output) / "result.json").write_text(json.dumps({"best_val_dice": v - 0.1}))

        def results_rows():
            label = "scratch" if init == "scratch" else "pretrained:encoder+decoder"
            base = {"task": "seg", "init": label, "labeled_subjects": n, "seed": seed}
            return [{**base, "metric": "dice mean", "value": v}, {**base, "metric": "dice ED LV", "value": v + 0.05},
                    {**base, "metric": "hd95_mm mean", "value": 10.0 - v},
                    {**base, "metric": "val_dice mean", "value": v - 0.1}]

        return SimpleNamespace(results_rows=results_rows)


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    fake = FakeFinetune()
    monkeypatch.setitem(FINETUNE_KINDS, "seg", dataclasses.replace(FINETUNE_KINDS["seg"], run=fake))
    weights = tmp_path / "weights"
    weights.mkdir()
    raw = {"task": "seg", "finetune_config": str(SEG_DEMO), "labeled_subjects": [1, 2, 4], "seeds": [0, 1],
           "inits": {"scratch": "scratch", "both": str(weights)}, "finetune_overrides": {"optim.epochs": 1}}
    return fake, raw, tmp_path


def test_runs_every_combination_and_reuses(setup):
    fake, raw, tmp = setup
    out = tmp / "exp"
    summary = exp.run_transfer_experiment(exp.experiment_config_from_dict(raw), out)
    assert len(fake.calls) == 12 and summary["ran"] == 12 and summary["reused"] == 0
    assert summary["metric"] == "dice mean"
    dirs = {Path(c[3]).name for c in fake.calls}
    assert dirs == {f"{i}_n{n}_s{s}" for i in ("scratch", "both") for n in (1, 2, 4) for s in (0, 1)}
    for d in dirs:
        assert (out / "runs" / d / "results_rows.json").is_file()

    with open(out / "results.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        body = list(reader)
    assert header == ["task", "init", "labeled_subjects", "seed", "metric", "value"]
    assert len(body) == 12 * 4
    assert {r[1] for r in body} == {"scratch", "both"}  # experiment init names
    row = next(r for r in body if r[1] == "both" and r[2] == "4" and r[3] == "1" and r[4] == "dice mean")
    assert float(row[5]) == pytest.approx(_value("w", 4, 1))
    row = next(r for r in body if r[1] == "both" and r[2] == "4" and r[3] == "1" and r[4] == "val_dice mean")
    assert float(row[5]) == pytest.approx(_value("w", 4, 1) - 0.1)

    md = (out / "results.md").read_text()
    assert "| labelled subjects | scratch | both |" in md
    for n in (1, 2, 4):
        line = next(line for line in md.splitlines() if line.startswith(f"| {n} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        for cell, init in zip(cells, ("scratch", "both"), strict=True):
            mean = float(cell.split("±")[0])
            assert mean == pytest.approx((_value(init, n, 0) + _value(init, n, 1)) / 2, abs=1e-4)
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert yaml.safe_load((out / "experiment.yaml").read_text())["seeds"] == [0, 1]

    # rerun: everything reused, nothing fine-tuned again; same results
    before = (out / "results.csv").read_text()
    summary = exp.run_transfer_experiment(exp.experiment_config_from_dict(raw), out)
    assert len(fake.calls) == 12 and summary["reused"] == 12 and summary["ran"] == 0
    assert (out / "results.csv").read_text() == before

    # an extra seed runs only the new combinations; a changed setting reruns that init's stale runs
    raw2 = {**raw, "seeds": [0, 1, 2]}
    exp.run_transfer_experiment(exp.experiment_config_from_dict(raw2), out)
    assert len(fake.calls) == 18
    # an unfinished run (no results_rows.json) is redone
    (out / "runs" / "scratch_n1_s0" / "results_rows.json").unlink()
    summary = exp.run_transfer_experiment(exp.experiment_config_from_dict(raw2), out)
    assert len(fake.calls) == 19 and summary["ran"] == 1
    saved = json.loads((out / "runs" / "scratch_n1_s0" / "results_rows.json").read_text())
    assert saved["rows"][0]["init"] == "scratch"


def test_a_run_recorded_without_its_validation_row_gets_it_from_result_json(setup):
    fake, raw, tmp = setup
    out = tmp / "exp"
    config = exp.experiment_config_from_dict(raw)
    exp.run_transfer_experiment(config, out)
    path = out / "runs" / "both_n2_s1" / "results_rows.json"
    saved = json.loads(path.read_text())
    saved["rows"] = [r for r in saved["rows"] if r["metric"] != "val_dice mean"]  # as recorded before 2026-12-01
    path.write_text(json.dumps(saved))
    (out / "runs" / "both_n2_s1" / "result.json").write_text(json.dumps({"best_val_dice": 0.625}))
    plan = exp.plan_runs(config, out, tidy=False)
    rows = [r for done in plan.done.values() for r in done
            if r["metric"] == "val_dice mean" and r["init"] == "both" and r["labeled_subjects"] == 2 and r["seed"] == 1]
    assert [r["value"] for r in rows] == [0.625] and not plan.pending  # still reused, not run again


def test_a_stopped_run_resumes_and_report_only_runs_nothing(setup):
    from PlaneSSLLib.training.engine import last_checkpoint

    fake, raw, tmp = setup
    out = tmp / "exp"
    config = exp.experiment_config_from_dict(raw)
    exp.run_transfer_experiment(config, out)
    assert fake.resumed == [] and len(fake.calls) == 12
    runs = out / "runs"
    assert json.loads((runs / "both_n2_s1" / exp.RUN_PLAN).read_text())["fingerprint"] == json.loads(
        (runs / "both_n2_s1" / "results_rows.json").read_text())["fingerprint"]
    # stopped part-way: its plan and a checkpoint, no results file -> continued, not started again
    (runs / "both_n2_s1" / "results_rows.json").unlink()
    last_checkpoint(runs / "both_n2_s1").parent.mkdir(parents=True)
    last_checkpoint(runs / "both_n2_s1").write_bytes(b"checkpoint")
    # stopped before its first checkpoint: started again from nothing
    (runs / "scratch_n1_s0" / "results_rows.json").unlink()
    # a checkpoint left by other settings (another plan): removed and started again
    (runs / "scratch_n4_s1" / "results_rows.json").unlink()
    last_checkpoint(runs / "scratch_n4_s1").parent.mkdir(parents=True)
    last_checkpoint(runs / "scratch_n4_s1").write_bytes(b"checkpoint")
    (runs / "scratch_n4_s1" / exp.RUN_PLAN).write_text('{"fingerprint": "other settings"}')

    # --report-only: nothing runs, nothing is removed, the report holds the 9 finished runs
    summary = exp.run_transfer_experiment(config, out, report_only=True)
    assert len(fake.calls) == 12 and summary["finished"] == 9 and summary["ran"] == 0
    assert last_checkpoint(runs / "scratch_n4_s1").is_file()
    md = (out / "results.md").read_text()
    assert next(line for line in md.splitlines() if line.startswith("| 4 |"))  # count 4 still has seed 0

    summary = exp.run_transfer_experiment(config, out)
    assert fake.resumed == ["both_n2_s1"] and len(fake.calls) == 15 and summary["ran"] == 3
    assert json.loads((runs / "both_n2_s1" / "results_rows.json").read_text())["resumed"] is True
    assert not last_checkpoint(runs / "scratch_n4_s1").is_file()  # the stale run's folder was cleared


def test_report_only_without_runs_is_a_clean_error(setup, capsys):
    from training_cli.main import main

    _, raw, tmp = setup
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["experiment", "transfer", "--config", str(path), "--out", str(tmp / "none"), "--report-only"]) != 0
    assert "no such directory" in capsys.readouterr().err
    (tmp / "empty").mkdir()
    assert main(["experiment", "transfer", "--config", str(path), "--out", str(tmp / "empty"), "--report-only"]) != 0
    err = capsys.readouterr().err
    assert "no finished fine-tuning run" in err and "Traceback" not in err


def test_inits_may_choose_their_transfer_mode(setup):
    fake, raw, tmp = setup
    weights = raw["inits"]["both"]
    raw = {**raw, "labeled_subjects": [1], "seeds": [0],
           "inits": {"scratch": "scratch", "both": weights, "enc": {"weights": weights, "transfer": "encoder"}}}
    summary = exp.run_transfer_experiment(exp.experiment_config_from_dict(raw), tmp / "modes")
    assert summary["ran"] == 3 and summary["table"].inits == ["scratch", "both", "enc"]
    assert fake.transfers["both_n1_s0"] == "encoder+decoder" and fake.transfers["enc_n1_s0"] == "encoder"
    assert weights in {c[0] for c in fake.calls}
    # the experiment-wide transfer applies to entries without their own
    exp.run_transfer_experiment(exp.experiment_config_from_dict({**raw, "transfer": "encoder"}), tmp / "modes2")
    assert fake.transfers["both_n1_s0"] == "encoder" and fake.transfers["enc_n1_s0"] == "encoder"
    for bad, key in (({"weights": weights, "transfer": "all"}, "inits.enc.transfer"),
                     ({"weights": weights, "transfer": "encoder", "lr": 1}, "inits.enc"),
                     ({"transfer": "encoder"}, "inits.enc")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            exp.experiment_config_from_dict({**raw, "inits": {"enc": bad}})


def test_cli_prints_table(setup, capsys):
    from training_cli.main import main

    fake, raw, tmp = setup
    cfg = tmp / "exp.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    rc = main(["experiment", "transfer", "--config", str(cfg), "--set", "seeds=[3]", "labeled_subjects=[2]",
               "--out", str(tmp / "cli")])
    assert rc == 0 and len(fake.calls) == 2
    captured = capsys.readouterr()
    assert "| labelled subjects | scratch | both |" in captured.out
    assert "dice mean" in captured.err


@pytest.mark.parametrize("change, key", [
    ({"task": "cls"}, "task"),
    ({"labeled_subjects": [1, 0]}, "labeled_subjects"),
    ({"seeds": []}, "seeds"),
    ({"inits": {"x": "/no/such/weights"}}, "inits.x"),
    ({"finetune_config": "/no/such.yaml"}, "finetune_config"),
    ({"seedz": [0]}, "seedz"),
    ({"finetune_overrides": {"optim.epochz": 1}}, "optim.epochz"),
])
def test_bad_config_names_the_key(setup, change, key):
    fake, raw, _ = setup
    with pytest.raises(ConfigError) as info:
        exp.experiment_config_from_dict({**raw, **change}, "exp.yaml")
    assert key in str(info.value)
    assert not fake.calls


def test_cli_bad_config_is_a_clean_error(setup, capsys):
    from training_cli.main import main

    _, raw, tmp = setup
    cfg = tmp / "exp.yaml"
    cfg.write_text(yaml.safe_dump({**raw, "seeds": "zero"}))
    assert main(["experiment", "transfer", "--config", str(cfg), "--out", str(tmp / "o")]) == 2
    assert "seeds" in capsys.readouterr().err


def test_summarise_math():
    def row(init, n, seed, value, metric="auc"):
        return {"task": "acl", "init": init, "labeled_subjects": n, "seed": seed, "metric": metric, "value": value}

    rows = [row("scratch", 2, 0, 0.5), row("scratch", 2, 1, 0.7), row("scratch", 2, 2, 0.9),
            row("scratch", 2, 0, 0.1, "accuracy"),
            row("pre", 2, 0, 0.8), row("pre", 2, 1, float("nan")),
            row("pre", 1, 0, 0.6), row("scratch", 1, 0, 0.55)]
    table = exp.summarise(rows)
    assert table.metric == "auc"
    assert table.inits == ["scratch", "pre"] and table.labeled_subjects == [1, 2]
    mean, std, n = table.cells[(2, "scratch")]
    assert (mean, n) == (pytest.approx(0.7), 3)
    assert std == pytest.approx(0.2)  # sample std of 0.5, 0.7, 0.9
    assert table.cells[(2, "pre")] == (pytest.approx(0.8), 0.0, 1)  # NaN left out
    assert table.cells[(1, "pre")][0] == pytest.approx(0.6)
    md = table.to_markdown()
    assert "| 2 | 0.7000 ± 0.2000 (n=3) | 0.8000 ± 0.0000 (n=1) |" in md
    assert exp.summarise(rows, "accuracy").cells[(2, "scratch")][0] == pytest.approx(0.1)
    empty = exp.summarise([row("a", 1, 0, float("nan"))])
    assert empty.cells[(1, "a")][2] == 0 and math.isnan(empty.cells[(1, "a")][0])
    assert "–" in empty.to_markdown()
    with pytest.raises(ValueError):
        exp.summarise([{**row("a", 1, 0, 1.0), "task": "other"}])


def test_a_setting_added_later_keeps_recorded_runs_at_its_neutral_value(monkeypatch):
    """A fine-tuning field added after runs were recorded leaves their fingerprint unchanged while it holds the
    value that does what the code did before (``NEUTRAL_ADDITIONS``); any other value makes the run new."""
    from PlaneSSLLib.training import experiment

    class Settings:
        def __init__(self, optim):
            self.optim = optim

        def to_dict(self):
            return {"optim": dict(self.optim), "output": "somewhere"}

    before = experiment._fingerprint("seg", Settings({"lr": 1e-3}), "scratch", 2, 0)
    with_field = Settings({"lr": 1e-3, "decoder_norm": "same"})
    assert experiment._fingerprint("seg", with_field, "scratch", 2, 0) != before
    monkeypatch.setitem(experiment.NEUTRAL_ADDITIONS, "optim.decoder_norm", "same")
    assert experiment._fingerprint("seg", with_field, "scratch", 2, 0) == before
    assert with_field.to_dict()["optim"]["decoder_norm"] == "same"  # the config itself is left as it was
    changed = Settings({"lr": 1e-3, "decoder_norm": "none"})
    assert experiment._fingerprint("seg", changed, "scratch", 2, 0) != before
    monkeypatch.setitem(experiment.NEUTRAL_ADDITIONS, "model.absent.field", 1)  # a path a config lacks: ignored
    assert experiment._fingerprint("seg", with_field, "scratch", 2, 0) == before
