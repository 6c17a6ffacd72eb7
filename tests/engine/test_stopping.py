"""EarlyStopping and RunBudget on their own, the budget-driven schedule, and fit under a budget."""

from __future__ import annotations

import math
import time

import pytest
import torch

from cvkit.engine import TrainConfig, fit, load_checkpoint
from cvkit.engine.optim import IterationSchedule
from cvkit.engine.stopping import EarlyStopping, RunBudget
from tests.engine._tiny import ScriptedEvaluator, TinyCriterion, TinyDetector, TinyPostprocessor, tiny_loader

QUIET = {"progress": False, "console_table": False, "plots": False, "tensorboard": False}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_early_stopping_max_and_min_with_min_delta_and_patience():
    stop = EarlyStopping("max", patience=2, min_delta=0.1)
    assert stop.update(0.5, 1) and stop.best == 0.5 and stop.best_epoch == 1
    assert not stop.update(0.55, 2)  # better by less than min_delta
    assert not stop.should_stop
    assert not stop.update(float("nan"), 3)  # never an improvement
    assert stop.should_stop and stop.bad_evals == 2 and stop.best == 0.5
    low = EarlyStopping("min")
    assert low.update(2.0, 1) and low.update(1.0, 2) and not low.update(1.5, 3)
    assert low.best == 1.0 and not low.should_stop  # patience 0: never stops
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping("up")


def test_budget_fraction_is_the_largest_share_clamped_and_monotone():
    clock = FakeClock()
    budget = RunBudget(minutes=1.0, max_images=100, max_iters=10, clock=clock)
    budget.start()
    assert budget.fraction() == 0.0 and not budget.exhausted()
    budget.step(20, seconds=1.0)  # images 0.2, iterations 0.1
    assert budget.fraction() == pytest.approx(0.2)
    clock.now += 30.0  # time: 30 s of 60 s, minus the estimated final evaluation (none: no eval images)
    assert budget.fraction() == pytest.approx(0.5)
    budget.record_evaluation(6.0)  # keep 6.6 s for the final evaluation: 30 / 53.4
    assert budget.fraction() == pytest.approx(30.0 / 53.4)
    budget.reserve_s = 0.0
    assert budget.fraction() == pytest.approx(30.0 / 53.4)  # never decreases
    clock.now += 60.0
    assert budget.fraction() == 1.0 and budget.exhausted()


def test_budget_reserve_is_estimated_from_the_training_speed_before_any_evaluation():
    clock = FakeClock()
    budget = RunBudget(minutes=10.0, eval_images=300, clock=clock)
    budget.start()
    budget.step(10, seconds=1.0)  # 10 images/s: evaluation at 30 images/s -> 10 s for 300 images
    assert budget.estimated_reserve() == pytest.approx(10.0)
    clock.now += 59.0
    assert budget.fraction() == pytest.approx(59.0 / 590.0)


def test_budget_state_survives_a_resume_and_continues_the_clock():
    clock = FakeClock()
    budget = RunBudget(minutes=1.0, max_images=50, clock=clock)
    budget.start()
    budget.step(10, seconds=2.0)
    clock.now += 12.0
    state = budget.state_dict()
    assert state["time_used"] == 12.0 and state["images_seen"] == 10
    again = RunBudget(minutes=1.0, max_images=50, clock=clock)
    again.load_state_dict(state)
    clock.now += 1000.0  # the time between the two processes does not count
    again.start()
    assert again.time_used == 12.0 and again.images_seen == 10
    clock.now += 3.0
    assert again.time_used == 15.0 and again.fraction() == pytest.approx(0.25)


def _schedule(kind: str = "cosine", warmup: int = 2, total: int = 10) -> IterationSchedule:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return IterationSchedule(optimizer, total_iters=total, kind=kind, warmup_iters=warmup, warmup_factor=0.1,
                             milestone_iters=[5], gamma=0.5)


def test_schedule_by_fraction_equals_the_iteration_schedule_when_the_fraction_is_t_over_T():
    by_iter, by_fraction = _schedule(), _schedule()
    for t in range(1, 11):
        by_iter.step()
        by_fraction.step(t / 10)
        assert by_fraction.get_last_lr()[0] == pytest.approx(by_iter.get_last_lr()[0], abs=1e-12), t
    assert by_fraction.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # cosine ends at min_lr_ratio
    steps = _schedule("multistep")
    lrs = []
    for t in range(1, 11):
        steps.step(t / 10)
        lrs.append(steps.get_last_lr()[0])
    assert lrs[2:] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]  # milestone at iteration 5 of 10


def test_schedule_by_fraction_warms_up_by_iterations_then_decays_over_the_rest_of_the_budget():
    schedule = _schedule(warmup=2)
    schedule.step(0.3)  # a slow first step: 30% of the time budget, still warming up
    assert schedule.get_last_lr()[0] == pytest.approx(0.1 + 0.9 * 0.5)
    schedule.step(0.4)  # warmup over at 40%: the cosine spans the remaining 60%
    assert schedule.get_last_lr()[0] == pytest.approx(1.0)
    schedule.step(0.7)
    assert schedule.get_last_lr()[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    resumed = _schedule(warmup=2)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.get_last_lr() == schedule.get_last_lr()


def _fit(tmp_path, name, cfg, resume=None, criterion=None):
    torch.manual_seed(0)
    criterion = criterion or TinyCriterion()
    evaluator = ScriptedEvaluator([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    history = fit(TinyDetector(), criterion, TinyPostprocessor(), tiny_loader(num_images=16, batch_size=4),
                  tiny_loader(num_images=8, shuffle=False, transform=None), cfg, tmp_path / name,
                  evaluator=evaluator, resume=resume)
    return history, criterion, evaluator


def test_an_image_budget_stops_inside_an_epoch_with_the_lr_at_its_end_and_a_final_evaluation(tmp_path):
    # 16 images per epoch, 4 per step: 40 images = 2.5 epochs, so the run stops after step 2 of epoch 3
    cfg = TrainConfig(epochs=100, max_images=40, lr=0.05, warmup_epochs=0.5, budget_evals=2, **QUIET)
    history, criterion, evaluator = _fit(tmp_path, "run", cfg)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert len(criterion.losses) == 10 and history[-1]["images_seen"] == 40
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine at its end value
    assert ["AP" in row for row in history] == [False, True, True]  # half the budget after epoch 2, then final
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["budget"]["finished"] and last["budget"]["images_seen"] == 40 and last["epoch"] == 3
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    again, more, _ = _fit(tmp_path, "run", cfg, resume=tmp_path / "run" / "checkpoints" / "last.pt")
    assert more.losses == [] and len(again) == 3  # a finished budget trains no further


def test_an_image_budget_run_resumed_from_a_crash_repeats_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(epochs=100, max_images=44, lr=0.05, warmup_epochs=0.5, **QUIET)
    _, whole, _ = _fit(tmp_path, "whole", cfg)

    class Crash(RuntimeError):
        pass

    class Crashing(TinyCriterion):
        def forward(self, outputs, targets):
            if torch.is_grad_enabled() and len(self.losses) == 9:  # step 2 of epoch 3
                raise Crash
            return super().forward(outputs, targets)

    with pytest.raises(Crash):
        _fit(tmp_path, "crashed", cfg, criterion=Crashing())
    _, resumed, _ = _fit(tmp_path, "crashed", cfg, resume=tmp_path / "crashed" / "checkpoints" / "last.pt")
    assert len(whole.losses) == 11 and resumed.losses == whole.losses[8:]


class SlowCriterion(TinyCriterion):
    def forward(self, outputs, targets):
        if torch.is_grad_enabled():
            time.sleep(0.05)
        return super().forward(outputs, targets)


def test_a_time_budget_ends_the_run_at_the_budget(tmp_path):
    minutes = 1.5 / 60  # 1.5 s; each step takes at least 50 ms, an epoch (4 steps) 200 ms
    cfg = TrainConfig(epochs=1000, budget_minutes=minutes, lr=0.05, warmup_epochs=0.5, **QUIET)
    start = time.perf_counter()
    history, criterion, evaluator = _fit(tmp_path, "timed", cfg, criterion=SlowCriterion())
    took = time.perf_counter() - start
    assert 4 <= len(criterion.losses) <= 30
    assert history[-1]["time_used"] <= 1.5 + 1.0 and took < 10
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-9) and "AP" in history[-1]
    assert load_checkpoint(tmp_path / "timed" / "checkpoints" / "last.pt")["budget"]["finished"]


class TickingClock:
    """Every reading is ``tick`` seconds after the previous one: time passes between any two looks."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_a_time_budget_that_runs_out_ends_the_pass_with_the_schedule_at_its_end_value():
    """The step that uses up the budget is the one the schedule sees at its end: the pass judges 'used up'
    by the same fraction it gave the schedule (it used to read the clock again, and a late tick ended the
    run with the lr short of its end value: flaky under load)."""
    from cvkit.engine.train import train_one_epoch

    torch.manual_seed(0)
    model, criterion = TinyDetector(), TinyCriterion()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for tick in (0.07, 0.13, 0.29):
        budget = RunBudget(minutes=1.0 / 60, clock=TickingClock(tick))  # 1 s, ticking on every look
        budget.start()
        schedule = IterationSchedule(optimizer, total_iters=1000, kind="cosine", warmup_iters=0)
        for epoch in range(100):
            train_one_epoch(model, criterion, optimizer, tiny_loader(num_images=16, batch_size=4), "cpu", epoch,
                            scheduler=schedule, budget=budget)
            if budget.exhausted():
                break
        assert budget.exhausted()
        assert schedule.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12), tick
