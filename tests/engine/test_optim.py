"""Param groups, optimizers and per-iteration schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cvkit.config import ConfigError, from_dict
from cvkit.engine.config import OPTIMIZERS, TrainConfig
from cvkit.engine.optim import (
    IterationSchedule,
    build_optimizer,
    build_schedule,
    default_param_groups,
    model_param_groups,
)


def _net():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False), nn.GroupNorm(1, 2))
    net[0].weight.requires_grad_(False)  # a frozen parameter
    return net


def test_default_groups_split_norm_and_bias_and_skip_frozen():
    net = _net()
    groups = {g["name"]: g for g in default_param_groups(net, 0.1, 1e-4)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids["decay"] == {id(net[2].weight)}
    assert ids["no_decay"] == {id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].weight), id(net[3].bias)}
    assert groups["decay"]["weight_decay"] == 1e-4 and groups["no_decay"]["weight_decay"] == 0.0
    (single,) = default_param_groups(net, 0.1, 1e-4, no_decay_norm_bias=False)
    assert single["name"] == "all" and len(single["params"]) == 6 and single["weight_decay"] == 1e-4


def test_weight_decay_shrinks_only_the_decay_group():
    net = _net()
    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.5)
    optimizer = build_optimizer(model_param_groups(net, cfg), cfg)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = dict(net.named_parameters())
    assert torch.allclose(after["2.weight"], before["2.weight"] * (1 - 0.1 * 0.5))
    for name in ("0.bias", "1.weight", "1.bias", "3.weight", "3.bias", "0.weight"):
        assert torch.equal(after[name], before[name]), name


def test_the_models_own_param_groups_are_used():
    class WithGroups(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = nn.Linear(2, 2), nn.Linear(2, 1)

        def param_groups(self, lr, weight_decay, no_decay_norm_bias=True):
            return [
                {"name": "backbone", "params": self.backbone.parameters(), "lr": lr * 0.1},
                {"name": "head", "params": self.head.parameters(), "lr": lr, "weight_decay": 0.0},
            ]

    cfg = TrainConfig(lr=0.2, weight_decay=1e-3, warmup_epochs=0, schedule="multistep", milestones=(1,), gamma=0.5)
    optimizer = build_optimizer(model_param_groups(WithGroups(), cfg), cfg)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        ("backbone", pytest.approx(0.02), 1e-3),
        ("head", 0.2, 0.0),
    ]
    schedule = build_schedule(optimizer, cfg, iters_per_epoch=2)
    for _ in range(2):
        schedule.step()
    assert schedule.get_last_lr() == [pytest.approx(0.01), pytest.approx(0.1)]  # the 10x ratio is kept


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_and_steps(name):
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    cfg = TrainConfig(optimizer=name, lr=0.05, nesterov=name == "sgd", betas=(0.8, 0.9), alpha=0.9, rho=0.8)
    optimizer = build_optimizer(model_param_groups(net, cfg), cfg)
    expected = {
        "sgd": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
        "adam": (torch.optim.Adam, {"betas": (0.8, 0.9)}),
        "adamw": (torch.optim.AdamW, {"betas": (0.8, 0.9)}),
        "rmsprop": (torch.optim.RMSprop, {"alpha": 0.9, "momentum": 0.9}),
        "adagrad": (torch.optim.Adagrad, {"eps": 1e-8}),
        "adadelta": (torch.optim.Adadelta, {"rho": 0.8}),
    }[name]
    assert type(optimizer) is expected[0]
    for key, value in expected[1].items():
        assert optimizer.param_groups[0][key] == value
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    first = float(nn.functional.mse_loss(net(x), y).detach())
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
    assert float(nn.functional.mse_loss(net(x), y).detach()) < first


def _schedule(**kw):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    return IterationSchedule(optimizer, **kw)


def test_warmup_then_cosine():
    s = _schedule(total_iters=110, kind="cosine", warmup_iters=10, warmup_factor=0.1, min_lr_ratio=0.05)
    assert s.get_last_lr() == [pytest.approx(0.1)]
    assert s.lr_factor(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s.lr_factor(10) == pytest.approx(1.0)
    assert s.lr_factor(60) == pytest.approx(0.05 + 0.95 * 0.5)
    assert s.lr_factor(110) == pytest.approx(0.05) and s.lr_factor(500) == pytest.approx(0.05)
    factors = [s.lr_factor(t) for t in range(10, 111)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    for _ in range(60):
        s.step()
    assert s.get_last_lr() == [pytest.approx(0.525)]


def test_multistep_and_constant_and_state_round_trip():
    s = _schedule(total_iters=100, kind="multistep", warmup_iters=0, milestone_iters=[30, 60], gamma=0.1)
    assert [s.lr_factor(t) for t in (0, 29, 30, 59, 60, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    for _ in range(35):
        s.step()
    other = _schedule(total_iters=100, kind="multistep", warmup_iters=0, milestone_iters=[30, 60], gamma=0.1)
    other.load_state_dict(s.state_dict())
    assert other.get_last_lr() == s.get_last_lr() == [pytest.approx(0.1)]
    c = _schedule(total_iters=10, kind="constant", warmup_iters=4, warmup_factor=0.5)
    assert [c.lr_factor(t) for t in (0, 2, 4, 9)] == pytest.approx([0.5, 0.75, 1.0, 1.0])


def test_build_schedule_converts_epochs_to_iterations():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = TrainConfig(epochs=10, schedule="multistep", warmup_epochs=0.5, milestones=(4, 8))
    s = build_schedule(optimizer, cfg, iters_per_epoch=20)
    assert (s.total_iters, s.warmup_iters, s.milestone_iters) == (200, 10, [80, 160])
    assert math.isclose(s.lr_factor(79), 1.0) and math.isclose(s.lr_factor(80), 0.1)


def test_train_config_is_strict():
    assert from_dict(TrainConfig, {}) == TrainConfig()
    cfg = from_dict(TrainConfig, {"optimizer": "adamw", "betas": [0.9, 0.95], "milestones": [3, 5]})
    assert cfg.betas == (0.9, 0.95) and cfg.milestones == (3, 5)
    with pytest.raises(ConfigError, match="did you mean 'warmup_epochs'"):
        from_dict(TrainConfig, {"warmup_epoch": 1})
    with pytest.raises(ConfigError, match="'sgdd' is not one of"):
        from_dict(TrainConfig, {"optimizer": "sgdd"})
    with pytest.raises(ConfigError, match="nesterov needs"):
        TrainConfig(momentum=0.0, nesterov=True)
    with pytest.raises(ConfigError, match="milestones must increase"):
        from_dict(TrainConfig, {"milestones": [5, 3]})
