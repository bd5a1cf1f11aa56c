"""The pretraining loop in-process: tasks, outputs, resume rules, the real cache, augmentation."""

from __future__ import annotations

import csv

import pytest

torch = pytest.importorskip("torch")

from training_helpers import TINY  # noqa: E402

from PlaneSSLLib.inference.weights import load_exported  # noqa: E402
from PlaneSSLLib.training.config import ConfigError, config_from_dict  # noqa: E402
from PlaneSSLLib.training.data_hooks import build_datasets, subject_epoch_sampler  # noqa: E402
from PlaneSSLLib.training.distributed import shard_batches  # noqa: E402
from PlaneSSLLib.training.pretrain import RunExistsError, train  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(tmp_path, **over):
    raw = {k: dict(v) for k, v in TINY.items()}
    for dotted, value in over.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    raw["output"] = str(tmp_path / "run")
    return config_from_dict(raw, "test")


@pytest.mark.parametrize("task", ["lines", "location", "both"])
def test_each_task_trains_and_exports(tmp_path, task):
    cfg = tiny(tmp_path, task__name=task, runtime__plot=task == "both")
    result = train(cfg)
    out = tmp_path / "run"
    assert result.epochs == 2 and result.global_step == 6 and result.best_epoch in (1, 2)
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.safetensors", "checkpoints/best.json",
                 "model/model.safetensors", "model/manifest.json"):
        assert (out / name).is_file(), name
    assert (out / "progress.png").is_file() == (task == "both")
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["lr"]) == pytest.approx(0.3e-3)  # decay x0.3 after epoch 1 (decay_every 1)
    model, manifest = load_exported(out / "model")
    assert manifest["task"] == task and manifest["metrics"]["best_epoch"] == result.best_epoch
    heads = model(torch.zeros(1, 1, 32, 32))
    assert ("lines" in heads) == (task != "location") and ("location" in heads) == (task != "lines")
    if task != "location":
        assert heads["lines"].shape == (1, 3, 32, 32) and manifest["channels"] == ["line0", "line1", "line2"]


def test_run_directory_rules(tmp_path):
    cfg = tiny(tmp_path, optim__epochs=1)
    with pytest.raises(RunExistsError, match="nothing to resume"):
        train(cfg, resume=True)
    train(cfg)
    with pytest.raises(RunExistsError, match="already holds a run"):
        train(cfg)
    # resuming a finished run with more epochs continues it
    more = tiny(tmp_path, optim__epochs=2)
    result = train(more, resume=True)
    assert result.epochs == 2 and result.global_step == 6
    changed = tiny(tmp_path, optim__epochs=3, model__base_filters=8)
    with pytest.raises(ConfigError, match="cannot resume with a different model.base_filters"):
        train(changed, resume=True)


def test_line_channels_must_match_the_data(tmp_path):
    with pytest.raises(ConfigError, match="model.line_channels: 5, but the data gives 3"):
        train(tiny(tmp_path, model__line_channels=5))


def test_epoch_sampling_depends_only_on_seed_and_epoch():
    factory = subject_epoch_sampler([0, 0, 0, 1, 1, 2, 2, 2], slices_per_subject=1)
    assert factory(1, 4) == factory(1, 4)
    assert sorted({i // 3 if i < 3 else (1 if i < 5 else 2) for i in factory(1, 4)}) == [0, 1, 2]
    assert any(factory(1, e) != factory(1, 0) for e in range(1, 6))


def test_shards_concatenate_to_the_global_batch():
    order = list(range(11))
    one = shard_batches(order, 4, 0, 1)
    two = [shard_batches(order, 4, r, 2) for r in range(2)]
    assert len(two[0]) == len(two[1]) == len(one) == 3
    for k, batch in enumerate(one[:-1]):
        assert two[0][k] + two[1][k] == batch
    assert two[0][-1] + two[1][-1] == [8, 9, 10, 0]  # padded to a multiple of the world size
    with pytest.raises(ValueError, match="not divisible"):
        shard_batches(order, 3, 0, 2)


def test_augmentation_hook_options_are_checked(tmp_path):
    pytest.importorskip("PlaneSSLLib.data.augment")
    with pytest.raises(ConfigError, match="data.augment_options.spin: unknown option"):
        train(tiny(tmp_path, data__augment_options={"spin": 1}))
    result = train(tiny(tmp_path, data__augment_options={"rotation_deg": 10, "scale_range": [0.95, 1.05]},
                        optim__epochs=1))
    assert result.global_step == 3


def test_trains_from_a_prepared_cache(tmp_path):
    prepare = pytest.importorskip("PlaneSSLLib.data.prepare")
    from PlaneSSLLib.phantoms import CohortOptions, write_cohort
    from PlaneSSLLib.preprocess.config import PrepareConfig

    write_cohort(tmp_path / "heart", CohortOptions("heart", 3, seed=0, phases=2, matrix=64), workers=1)
    prepare.prepare_cache(tmp_path / "heart", tmp_path / "cache", PrepareConfig(spacing_mm=4.0, size_px=64))
    raw = {k: dict(v) for k, v in TINY.items()}
    raw["data"] = {"source": "cache", "cache": str(tmp_path / "cache"), "anatomy": "heart", "image_size": 64,
                   "spacing_mm": 4.0, "sigma_px": 2.0, "val_fraction": 0.34}
    raw["optim"]["epochs"] = 1
    raw["optim"]["slices_per_subject"] = 4
    raw["output"] = str(tmp_path / "run")
    cfg = config_from_dict(raw, "test")
    train_ds, val_ds, _, info = build_datasets(cfg)
    assert info.channel_names == ["2CH", "3CH", "4CH", "SAX"] and info.train_subjects == 2 and val_ds is not None
    result = train(cfg)
    assert result.global_step == 4  # 2 subjects x 4 slices, global batch 2
    _, manifest = load_exported(tmp_path / "run" / "model")
    assert manifest["channels"] == ["2CH", "3CH", "4CH", "SAX"] and manifest["input"]["spacing_mm"] == [4.0, 4.0]
    assert manifest["data_fingerprint"] and manifest["intensity_normalisation"]["method"] == "minmax"
    bad = config_from_dict({**raw, "data": {**raw["data"], "image_size": 32}}, "test")
    with pytest.raises(ConfigError, match="data.image_size: 32, but the cache"):
        build_datasets(bad)


def test_location_loss_is_masked():
    from PlaneSSLLib.training.losses import masked_location_mse

    pred = torch.tensor([0.0, 1.0, 5.0], requires_grad=True)
    loss = masked_location_mse(pred, torch.tensor([1.0, 1.0, 0.0]), torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert pred.grad[2] == 0
    none = masked_location_mse(pred, torch.zeros(3), torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad
