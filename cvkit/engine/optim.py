"""Optimizers from param groups, and per-iteration learning-rate schedules.

Param groups: a model that has ``model.param_groups(lr, weight_decay, no_decay_norm_bias)`` (cvkit
detectors: backbone groups at ``lr * backbone_lr_mult``, head groups at ``lr``, frozen parameters left
out) gives its own; for any other ``nn.Module`` :func:`default_param_groups` splits the trainable
parameters into ``decay`` and ``no_decay`` (weights of normalization layers and every bias) groups.

Schedule: the learning rate of group ``g`` at iteration ``t`` (0-based, counted over the whole run) is
``g["initial_lr"] * lr_factor(t)``, with ``W`` warmup and ``T`` total iterations::

    warmup   t < W:   warmup_factor + (1 - warmup_factor) * t / W
    cosine:           min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * (t - W) / (T - W))) / 2
    multistep:        gamma ** (number of milestones m with m * iters_per_epoch <= t)
    constant:         1

so ``lr_factor(0) == warmup_factor`` (or 1 without warmup) and, for cosine, ``lr_factor(T) == min_lr_ratio``.
The schedule is rebuilt from the config on resume (only the iteration count is restored), so a resumed run
with more epochs stretches the cosine to the new end.

Runs with a time or image budget (``train.budget_minutes``, ``train.max_images``) do not know ``T`` in
advance: :meth:`IterationSchedule.step` then takes the fraction ``f`` of the budget used
(:class:`cvkit.engine.stopping.RunBudget`), the warmup still counts iterations, and after it the progress is
``(f - f_W) / (1 - f_W)`` with ``f_W`` the fraction at the end of the warmup (cosine), and a milestone ``m``
is passed once ``f >= m * iters_per_epoch / T`` (multistep). With ``f = t / T`` both are the formulas above.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from cvkit.engine.config import TrainConfig
from cvkit.models.param_groups import NORM_LAYERS, part_param_groups

__all__ = [
    "NORM_LAYERS",
    "default_param_groups",
    "model_param_groups",
    "build_optimizer",
    "IterationSchedule",
    "build_schedule",
]

def default_param_groups(
    model: nn.Module, lr: float, weight_decay: float, no_decay_norm_bias: bool = True
) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` as optimizer groups; frozen ones (``requires_grad=False``) are left out.

    ``no_decay_norm_bias``: two groups, ``decay`` (weight_decay) and ``no_decay`` (0.0: the parameters
    :func:`cvkit.models.param_groups.skips_weight_decay` names); otherwise one group ``all``. Empty groups
    are dropped.
    """
    groups = part_param_groups(model, lr, weight_decay, no_decay_norm_bias, parts=(("decay", 1.0),))
    for g in groups:
        g["name"] = {"decay": "decay" if no_decay_norm_bias else "all", "decay_no_decay": "no_decay"}[g["name"]]
        del g["lr_mult"]
    return groups


def model_param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """``model.param_groups(...)`` when the model defines it, else :func:`default_param_groups`."""
    own = getattr(model, "param_groups", None)
    if callable(own):
        groups = [dict(g) for g in own(cfg.lr, cfg.weight_decay, no_decay_norm_bias=cfg.no_decay_norm_bias)]
    else:
        groups = default_param_groups(model, cfg.lr, cfg.weight_decay, cfg.no_decay_norm_bias)
    groups = [g for g in groups if list(g["params"])]
    if not groups:
        raise ValueError("the model has no trainable parameters (all frozen?)")
    for i, g in enumerate(groups):
        g["params"] = list(g["params"])
        g.setdefault("name", f"group{i}")
        g.setdefault("lr", cfg.lr)
        g.setdefault("weight_decay", cfg.weight_decay)
    return groups


def build_optimizer(groups: Iterable[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The ``cfg.optimizer`` optimizer over ``groups`` (each group keeps its own ``lr`` / ``weight_decay``)."""
    groups = list(groups)
    name = cfg.optimizer
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps)
    if name == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps)
    raise ValueError(f"unknown optimizer {name!r}; valid: sgd, adam, adamw, rmsprop, adagrad, adadelta")


class IterationSchedule:
    """Set every group's lr to ``initial_lr * lr_factor(t)``; call :meth:`step` after each optimizer step.

    ``state_dict()`` holds only the iteration counter, so the schedule's shape always follows the config
    it was built from.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_iters: int,
        kind: str = "cosine",
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        min_lr_ratio: float = 0.0,
        milestone_iters: Iterable[int] = (),
        gamma: float = 0.1,
    ):
        if kind not in ("cosine", "multistep", "constant"):
            raise ValueError(f"unknown schedule {kind!r}; valid: cosine, multistep, constant")
        self.optimizer = optimizer
        self.total_iters = max(int(total_iters), 1)
        self.kind = kind
        self.warmup_iters = max(int(warmup_iters), 0)
        self.warmup_factor = float(warmup_factor)
        self.min_lr_ratio = float(min_lr_ratio)
        self.milestone_iters = sorted(int(m) for m in milestone_iters)
        self.gamma = float(gamma)
        self.last_iter = 0
        self.fraction: float | None = None  # the budget fraction of the last step (budgeted runs)
        self.warmup_fraction = 0.0  # the budget fraction when the warmup ended
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    def lr_factor(self, t: int, fraction: float | None = None) -> float:
        """The multiplier of the base lr at iteration ``t``, or at the budget ``fraction`` used once the
        warmup is over (see the module docstring)."""
        if t < self.warmup_iters:
            return self.warmup_factor + (1.0 - self.warmup_factor) * t / self.warmup_iters
        if self.kind == "cosine":
            if fraction is None:
                span = max(self.total_iters - self.warmup_iters, 1)
                progress = min(max(t - self.warmup_iters, 0) / span, 1.0)
            else:
                span_f = max(1.0 - self.warmup_fraction, 1e-12)
                progress = min(max(fraction - self.warmup_fraction, 0.0) / span_f, 1.0)
            return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "multistep":
            if fraction is None:
                return self.gamma ** sum(1 for m in self.milestone_iters if m <= t)
            return self.gamma ** sum(1 for m in self.milestone_iters if m / self.total_iters <= fraction)
        return 1.0

    def _apply(self) -> None:
        factor = self.lr_factor(self.last_iter, self.fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def step(self, fraction: float | None = None) -> None:
        """Advance one iteration; ``fraction``: the budget used so far (budgeted runs), else None."""
        self.last_iter += 1
        self.fraction = None if fraction is None else float(fraction)
        if self.fraction is not None and self.last_iter <= self.warmup_iters:
            self.warmup_fraction = self.fraction
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_iter": self.last_iter, "fraction": self.fraction, "warmup_fraction": self.warmup_fraction}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
        fraction = state.get("fraction")
        self.fraction = None if fraction is None else float(fraction)
        self.warmup_fraction = float(state.get("warmup_fraction", 0.0))
        self._apply()


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, iters_per_epoch: int) -> IterationSchedule:
    """The ``cfg.schedule`` schedule for ``cfg.epochs * iters_per_epoch`` iterations."""
    iters_per_epoch = max(int(iters_per_epoch), 1)
    return IterationSchedule(
        optimizer,
        total_iters=cfg.epochs * iters_per_epoch,
        kind=cfg.schedule,
        warmup_iters=round(cfg.warmup_epochs * iters_per_epoch),
        warmup_factor=cfg.warmup_factor,
        min_lr_ratio=cfg.min_lr_ratio,
        milestone_iters=[m * iters_per_epoch for m in cfg.milestones],
        gamma=cfg.gamma,
    )
