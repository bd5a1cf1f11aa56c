"""Configs and training never turn a bad number into silent output (issue 15, findings 5 and 6).

Finding 6: NaN/inf config values are refused naming the key, and training stops on a non-finite
loss with a clear error, exporting nothing. Finding 5: a YAML alias bomb is refused instead of
being expanded until memory runs out.
"""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")

from training_helpers import TINY, write_config  # noqa: E402

from PlaneSSLLib.errors import ConfigError, PlaneSSLError  # noqa: E402
from PlaneSSLLib.training.config import config_from_dict, load_config  # noqa: E402
from PlaneSSLLib.training.pretrain import train  # noqa: E402
from training_cli.main import main  # noqa: E402


def _raw(tmp_path, **values) -> dict:
    raw = copy.deepcopy(TINY)
    for dotted, value in values.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    raw["output"] = str(tmp_path / "run")
    return raw


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", ["data__sigma_px", "data__spacing_mm", "task__alpha", "optim__decay_factor"])
def test_non_finite_config_values_are_refused_naming_the_key(tmp_path, key, value):
    with pytest.raises(ConfigError, match=key.replace("__", r"\.") + ".*finite"):
        config_from_dict(_raw(tmp_path, **{key: value}), "test.yaml")


def test_non_finite_values_from_yaml_and_set_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {sigma_px: .nan}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: data\.sigma_px.*finite"):
        load_config(path, check_paths=False)
    with pytest.raises(ConfigError, match=r"--set: task\.beta.*finite"):
        config_from_dict(_raw(tmp_path), "test.yaml", {"task.beta": float("inf")})


def test_training_stops_on_a_non_finite_loss_and_exports_nothing(tmp_path):
    cfg = config_from_dict(_raw(tmp_path, optim__lr=1e30, runtime__log_every=1), "test.yaml")
    with pytest.raises(PlaneSSLError, match="non-finite") as info:
        train(cfg)
    assert "step" in str(info.value) and "optim.lr" in str(info.value)
    assert not (tmp_path / "run" / "model").exists()


def test_the_cli_reports_a_non_finite_loss_without_a_traceback(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", optim={"epochs": 1, "batch_size": 2, "decay_every": 1, "lr": 1e30})
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert "non-finite" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "model" / "model.safetensors").exists()


BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
data: {sigma_px: 2.0, extra: *i}
"""


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(ConfigError, match=r"bomb\.yaml.*alias"):
        load_config(path)


def test_a_self_referencing_yaml_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("data: &d {sigma_px: 2.0, again: *d}\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml"):
        load_config(path)


def test_a_few_aliases_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("optim: &o {epochs: 2, batch_size: 2}\nruntime: {seed: 1}\ndata: {source: synthetic}\n"
                    f"output: {tmp_path / 'run'}\n")
    assert load_config(path).optim.epochs == 2


def test_a_prepare_config_alias_bomb_is_refused(tmp_path):
    from PlaneSSLLib.preprocess.config import load_prepare_config

    path = tmp_path / "prep.yaml"
    path.write_text(BOMB.replace("data: {sigma_px: 2.0, extra: *i}", "prepare: {spacing_mm: 1.5, overrides: {s: *i}}"))
    with pytest.raises(ConfigError, match=r"prep\.yaml.*alias"):
        load_prepare_config(path)

