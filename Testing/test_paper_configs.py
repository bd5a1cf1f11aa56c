"""Resources/Configs/paper/: every config loads and passes its validation, and says what the paper used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from PlaneSSLLib.training.config import load_config
from PlaneSSLLib.training.experiment import load_experiment_config
from PlaneSSLLib.training.finetune_acl import load_acl_config
from PlaneSSLLib.training.finetune_seg import load_finetune_config

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "Resources" / "Configs" / "paper"
LOADERS = {"pretrain_": lambda p: load_config(p, check_paths=False), "finetune_acdc": load_finetune_config,
           "finetune_mrnet": load_acl_config, "experiment_": load_experiment_config}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory where the configs' relative paths resolve (weights folders named by the experiment)."""
    os.symlink(REPO / "Resources", tmp_path / "Resources")
    (tmp_path / "runs" / "paper" / "pretrain_dsb" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _loader(path: Path):
    return next(load for prefix, load in LOADERS.items() if path.name.startswith(prefix))


def test_every_paper_config_loads_and_validates(workdir):
    paths = sorted(PAPER.glob("*.yaml"))
    assert {p.name for p in paths} == {"pretrain_kaggle_dsb.yaml", "finetune_acdc.yaml",
                                       "experiment_transfer_acdc.yaml", "finetune_mrnet_acl.yaml"}
    for path in paths:
        assert _loader(path)(path) is not None, path


def test_paper_settings(workdir):
    pre = load_config(PAPER / "pretrain_kaggle_dsb.yaml", check_paths=False)
    assert (pre.model.base_filters, pre.model.levels, pre.data.image_size, pre.data.spacing_mm) == (64, 5, 224, 1.26)
    assert (pre.optim.lr, pre.optim.decay_factor, pre.optim.decay_every, pre.optim.epochs) == (1e-3, 0.3, 100, 500)
    assert (pre.optim.batch_size, pre.data.sigma_px, pre.data.augment) == (20, 6.0, False)
    assert pre.data.views == {"SAX": ["2CH", "4CH"]}
    seg = load_finetune_config(PAPER / "finetune_acdc.yaml")
    assert (seg.data.format, seg.data.image_size, seg.data.spacing_mm) == ("acdc", 224, 1.26)
    assert (seg.model.base_filters, seg.model.levels, seg.optim.epochs, seg.data.rotation_deg) == (64, 5, 500, 15.0)
    exp = load_experiment_config(PAPER / "experiment_transfer_acdc.yaml")
    assert 4 in exp.labeled_subjects and "scratch" in exp.inits
    acl = load_acl_config(PAPER / "finetune_mrnet_acl.yaml")
    assert acl.data.format == "mrnet"


def test_a_broken_paper_config_is_named(workdir):
    from PlaneSSLLib.training.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.format: must be one of"):
        load_finetune_config(PAPER / "finetune_acdc.yaml", ["data.format=ukbb"])
