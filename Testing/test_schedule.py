"""Learning-rate policies and parameter groups (training/schedule.py), and the engine applying them to a task."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from PlaneSSLLib.training.config import ConfigError, TrainOptim, TrainRuntime, build_config, check_schedule  # noqa: E402
from PlaneSSLLib.training.engine import Engine, Task  # noqa: E402
from PlaneSSLLib.training.schedule import LRPolicy, build_optimizer  # noqa: E402


def test_step_policy_gives_torch_steplr_floats():
    base, gamma, every, per_epoch = 1e-3, 0.3, 2, 5
    policy = LRPolicy("step", total_steps=12 * per_epoch, steps_per_epoch=per_epoch, decay_factor=gamma,
                      decay_every=every)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=base)
    reference = torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=gamma)
    for epoch in range(12):
        expected = opt.param_groups[0]["lr"]
        for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            assert policy.lr(base, step) == expected  # bit-identical, not approximately
        opt.step()
        reference.step()


def test_cosine_poly_and_warmup_shapes():
    cos = LRPolicy("cosine", total_steps=100, steps_per_epoch=10, min_lr_ratio=0.1)
    assert cos.lr(1.0, 0) == pytest.approx(1.0) and cos.lr(1.0, 100) == pytest.approx(0.1)
    assert cos.lr(1.0, 50) == pytest.approx(0.55)
    poly = LRPolicy("poly", total_steps=100, steps_per_epoch=10, poly_power=0.9)
    values = [poly.lr(2.0, s) for s in range(0, 101, 10)]
    assert values[0] == 2.0 and values[-1] == 0.0 and all(a > b for a, b in zip(values, values[1:], strict=False))
    warm = LRPolicy("constant", total_steps=100, steps_per_epoch=10, warmup_steps=4)
    assert [warm.lr(1.0, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def _optim(**values) -> TrainOptim:
    return TrainOptim(**{"lr": 1e-3, **values})


def test_groups_transferred_rate_and_freezing():
    new, old = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    groups = {"new": list(new.parameters()), "transferred": list(old.parameters())}
    opt, held = build_optimizer(groups, _optim(transferred_lr=1e-4))
    assert [g["name"] for g in opt.param_groups] == ["new", "transferred"]
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-4] and held == list(old.parameters())
    opt, held = build_optimizer(groups, _optim(freeze_transferred=True))
    assert [g["name"] for g in opt.param_groups] == ["new"] and held == []
    assert not any(p.requires_grad for p in old.parameters())


def test_bad_schedule_settings_are_named():
    problems: list[str] = []
    check_schedule(_optim(schedule="linear", warmup_steps=-1, lr=float("nan"), min_lr=1.0),
                   lambda key, message: problems.append(key))
    assert problems == ["optim.schedule", "optim.lr", "optim.warmup_steps", "optim.min_lr"]


# -- the engine with a tiny task: a head-only warm-up holds the transferred layer still --------------------------


@dataclass
class _Config:
    optim: TrainOptim = field(default_factory=lambda: TrainOptim(epochs=3, batch_size=4, steps_per_epoch=None))
    runtime: TrainRuntime = field(default_factory=lambda: TrainRuntime(progress="none", tensorboard=False,
                                                                       plot=False, seed=1))
    output: str = ""

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


class _Regression(Task):
    """y = 2x on 16 points; layer 0 is 'transferred', layer 1 'new'; records the transferred weight per step."""

    name = "toy"

    def setup(self, device, dist):
        torch.manual_seed(0)
        self.x = torch.linspace(-1, 1, 16).unsqueeze(1)
        self.y = 2 * self.x
        self.model = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Linear(4, 1))
        self.seen: list[torch.Tensor] = []
        return self.model

    def param_groups(self, model):
        return {"transferred": list(model[0].parameters()), "new": list(model[1].parameters())}

    def epoch_batches(self, epoch, dist):
        return [list(range(i, i + 4)) for i in range(0, 16, 4)]

    def train_step(self, model, batch, epoch, index, dist):
        self.seen.append(self.model[0].weight.detach().clone())
        loss = torch.nn.functional.mse_loss(model(self.x[batch]), self.y[batch])
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def validate(self, model, dist):
        return {"val_loss": float(torch.nn.functional.mse_loss(model(self.x), self.y))}

    def improved(self, row, best):
        return best is None or row["val_loss"] < best["val_loss"]

    def finish(self, model, state):
        return state["history"]


def test_engine_head_warmup_then_whole_network(tmp_path: Path):
    config = _Config(output=str(tmp_path / "run"))
    config.optim.head_warmup_steps = 5
    config.optim.schedule = "cosine"
    task = _Regression(config)
    result = Engine(task).run()
    seen = task.seen + [task.model[0].weight.detach()]
    assert all(torch.equal(seen[0], w) for w in seen[:6])  # steps 0-4 leave the transferred layer alone
    assert not torch.equal(seen[5], seen[6])  # step 5 trains it
    history = result.result
    assert len(history) == 3 and history[-1]["val_loss"] < history[0]["val_loss"]
    lrs = [row["lr"] for row in history]  # the rate of each epoch's last step
    assert lrs[0] < 1e-3 and lrs == sorted(lrs, reverse=True) and math.isclose(lrs[-1], 1e-3 * 0.5 * (1 + math.cos(
        math.pi * 11 / 12)))
    assert (tmp_path / "run" / "metrics.csv").is_file() and (tmp_path / "run" / "checkpoints" / "best.json").is_file()


def test_shared_sections_validate_like_every_config():
    @dataclass
    class Holder:
        optim: TrainOptim = field(default_factory=TrainOptim)

    with pytest.raises(ConfigError, match=r"optim\.schedul: unknown key \(did you mean 'schedule'\?\)"):
        build_config(Holder, {"optim": {"schedul": "cosine"}}, "x.yaml", None)


def test_keys_renamed_by_the_rebuild_are_named():
    from PlaneSSLLib.training.finetune_acl import acl_config_from_dict

    with pytest.raises(ConfigError) as info:
        acl_config_from_dict({"data": {"root": "x"}, "optim": {"encoder_lr": 1e-4}, "model": {"freeze_encoder": True}},
                             "acl.yaml")
    assert "acl.yaml: optim.encoder_lr: renamed to optim.transferred_lr" in str(info.value)
    assert "acl.yaml: model.freeze_encoder: renamed to optim.freeze_transferred" in str(info.value)
