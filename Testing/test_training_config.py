"""Pretraining configuration: YAML + --set overrides, validated up front with clear messages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

from training_helpers import REPO, run_cli, write_config  # noqa: E402

from PlaneSSLLib.training.config import (  # noqa: E402
    ConfigError,
    PretrainConfig,
    config_from_dict,
    load_config,
    parse_overrides,
    save_config,
)

CONFIGS = REPO / "Resources" / "Configs"


def _problems(exc_info) -> str:
    return "\n".join(exc_info.value.problems)


def test_defaults_are_the_reference():
    cfg = PretrainConfig()
    assert cfg.optim.lr == 1e-3 and cfg.optim.decay_factor == 0.3 and cfg.optim.decay_every == 100
    assert cfg.optim.epochs == 500 and cfg.optim.batch_size == 20 and cfg.optim.slices_per_subject == 1
    assert cfg.model.base_filters == 64 and cfg.model.levels == 5
    assert cfg.data.sigma_px == 6.0 and cfg.data.size_hw == (224, 224) and cfg.data.spacing_mm == 1.26


@pytest.mark.parametrize("name", ["pretrain_reference.yaml", "pretrain_demo.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(CONFIGS / name, check_paths=False)
    if name == "pretrain_reference.yaml":
        assert cfg.model.base_filters == 64 and cfg.model.levels == 5 and cfg.optim.batch_size == 20
        assert cfg.optim.epochs == 500 and cfg.data.image_size == 224 and cfg.data.sigma_px == 6
    else:
        assert cfg.model.base_filters <= 16 and cfg.data.size_hw[0] <= 128


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optim": {"lrr": 0.1}, "modle": {}}))
    with pytest.raises(ConfigError) as exc:
        load_config(path, check_paths=False)
    text = _problems(exc)
    assert f"{path}: optim.lrr: unknown key (did you mean 'lr'?)" in text
    assert f"{path}: modle: unknown key (did you mean 'model'?)" in text


def test_wrong_types_and_ranges(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"base_filters": "eight", "norm": "group"},
        "optim": {"lr": True, "epochs": 0},
        "data": {"source": "synthetic", "views": {"SAX": []}, "image_size": 30},
        "runtime": {"amp": "fp8"},
    }))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = _problems(exc)
    assert "model.base_filters: expected an integer, got 'eight'" in text
    assert "optim.lr: expected a number, got True" in text
    # range checks run once the types are right
    path.write_text(yaml.safe_dump({
        "model": {"norm": "group"}, "optim": {"epochs": 0},
        "data": {"source": "synthetic", "views": {"SAX": []}, "image_size": 30}, "runtime": {"amp": "fp8"},
    }))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = _problems(exc)
    for expected in ("model.norm: must be", "optim.epochs: must be >= 1", "runtime.amp: must be",
                     "data.views.SAX: lists no partner view", "data.image_size: 30 must be divisible by"):
        assert expected in text
    assert str(path) in text


def test_missing_cache_is_reported_before_any_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"cache": str(tmp_path / "nope")}}))
    with pytest.raises(ConfigError, match=r"data\.cache: cache directory .*nope.* does not exist"):
        load_config(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is empty"):
        load_config(path, {"data.cache": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="data.cache: required"):
        config_from_dict({}, "x.yaml")


def test_overrides_are_yaml_and_named_in_errors(tmp_path):
    path = write_config(tmp_path / "c.yaml")
    cfg = load_config(path, ["model.base_filters=8", "optim.epochs=3", "data.image_size=[32, 64]",
                             "runtime.device=cpu"])
    assert cfg.model.base_filters == 8 and cfg.optim.epochs == 3 and cfg.data.size_hw == (32, 64)
    with pytest.raises(ConfigError) as exc:
        load_config(path, ["model.base_filters=eight"])
    assert "--set: model.base_filters: expected an integer, got 'eight'" in _problems(exc)
    with pytest.raises(ConfigError, match="--set: optim.nope: unknown key"):
        load_config(path, ["optim.nope=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["optim.epochs"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml"), ["optim.epochs=7"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml")
    assert again == cfg


def test_cli_reports_config_errors_with_exit_2(tmp_path, capsys):
    from training_cli.main import main

    path = write_config(tmp_path / "c.yaml")
    code = main(["pretrain", "--config", str(path), "--out", str(tmp_path / "out"), "--set", "optim.batch_sise=4"])
    err = capsys.readouterr().err
    assert code == 2 and "--set: optim.batch_sise: unknown key (did you mean 'batch_size'?)" in err
    code = main(["pretrain", "--config", str(path), "--out", str(tmp_path / "out"),
                 "--set", "data.source=cache", f"data.cache={tmp_path}/none"])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["pretrain", "--config", str(tmp_path / "missing.yaml")])
    assert code == 2 and "missing.yaml: no such config file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_help_lists_pretrain():
    result = run_cli([sys.executable, "-m", "training_cli", "pretrain", "--help"])
    assert result.returncode == 0 and "--resume" in result.stdout and "130/143" in result.stdout


def test_config_paths_are_strings_not_paths():
    cfg = config_from_dict({"data": {"source": "synthetic"}}, "x")
    assert isinstance(cfg.output, str) and Path(cfg.output).name == "pretrain"
