"""Learning-rate policies and parameter groups, shared by every training task.

A policy is a pure function of the optimiser step, so a resumed run needs only its step to set
every group's learning rate again (no scheduler state to save). Settings (``optim.*``):

- ``schedule``: ``step`` (the paper: ``lr`` × ``decay_factor`` every ``decay_every`` epochs),
  ``cosine`` (from ``lr`` down to ``min_lr`` over the run), ``poly`` (``(1 - t)^poly_power``, nnU-Net's)
  or ``constant``;
- ``warmup_steps``: a linear ramp from ``lr / warmup_steps`` to the policy's value first;
- parameter groups: a task names its parameters ``transferred`` (the layers a pretrained
  initialisation fills; the same layers when training from scratch, so that scratch and
  pretrained runs differ only in their first weights) and ``new`` (the rest). ``transferred_lr``
  gives the transferred group its own base rate (null: ``lr``); ``freeze_transferred`` leaves it
  out of the optimiser; ``head_warmup_steps`` trains only the new layers for that many steps (a
  linear probe) before the whole network is fine-tuned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["SCHEDULES", "GROUP_NAMES", "LRPolicy", "build_optimizer", "drop_grads"]

SCHEDULES = ("step", "cosine", "poly", "constant")
#: parameter-group names, in the optimiser's order (the first one's rate is what the logs show)
GROUP_NAMES = ("new", "transferred")


@dataclass(frozen=True)
class LRPolicy:
    """The learning-rate factor of every optimiser step (see the module docstring)."""

    schedule: str
    total_steps: int
    steps_per_epoch: int
    decay_factor: float = 1.0
    decay_every: int = 1
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    poly_power: float = 0.9

    def lr(self, base_lr: float, step: int) -> float:
        """The learning rate of a group with base rate ``base_lr`` at optimiser step ``step`` (0-based)."""
        if self.schedule == "step":
            value = base_lr
            # multiplied out one decay at a time: the same floats as torch's StepLR
            for _ in range((step // max(self.steps_per_epoch, 1)) // self.decay_every):
                value *= self.decay_factor
        elif self.schedule in ("cosine", "poly"):
            t = min(step / max(self.total_steps, 1), 1.0)
            shape = 0.5 * (1.0 + math.cos(math.pi * t)) if self.schedule == "cosine" else (1.0 - t) ** self.poly_power
            value = base_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape)
        else:
            value = base_lr
        if self.warmup_steps and step < self.warmup_steps:
            value *= (step + 1) / self.warmup_steps
        return value

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set every group's ``lr`` for optimiser step ``step`` from its ``base_lr``."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr(group["base_lr"], step)


def build_optimizer(groups: dict[str, list[torch.nn.Parameter]], optim) -> tuple[torch.optim.Optimizer,
                                                                                  list[torch.nn.Parameter]]:
    """Adam over the task's named groups (``new`` first); returns it and the parameters that the head-only
    warm-up holds still (the transferred ones). A frozen transferred group is left out of the optimiser."""
    unknown = set(groups) - set(GROUP_NAMES)
    if unknown:  # pragma: no cover - a task's programming error
        raise ValueError(f"unknown parameter groups {sorted(unknown)}")
    param_groups = []
    held: list[torch.nn.Parameter] = []
    for name in GROUP_NAMES:
        params = [p for p in groups.get(name, []) if p.requires_grad]
        if not params:
            continue
        if name == "transferred":
            if optim.freeze_transferred:
                for p in params:
                    p.requires_grad_(False)
                continue
            held = params
        lr = optim.transferred_lr if name == "transferred" and optim.transferred_lr is not None else optim.lr
        param_groups.append({"params": params, "lr": lr, "base_lr": lr, "name": name})
    return torch.optim.Adam(param_groups, lr=optim.lr, weight_decay=optim.weight_decay), held


def drop_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Forget the gradients of ``params``, so that Adam leaves them (and their moments) untouched this step."""
    for p in params:
        p.grad = None
