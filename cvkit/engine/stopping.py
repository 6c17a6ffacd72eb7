"""When a run stops: :class:`EarlyStopping` (the monitored metric stopped improving) and :class:`RunBudget`
(the time, images or iterations the run may use, and the fraction of them used so far).

The fraction drives everything that follows the run's length: the lr schedule after the warmup, the EMA
ramp and, under a budget, the evaluation cadence (:func:`cvkit.engine.train.fit`). Without a time or image
budget the fraction is ``iterations / (epochs * iterations per epoch)``, which is the plain epoch-based run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["EarlyStopping", "RunBudget"]


class EarlyStopping:
    """Track the best value of a monitored metric; ``update(value, epoch) -> improved``.

    ``mode`` "max" (higher is better) or "min"; a value improves on the best when it beats it by more than
    ``min_delta``; a non-finite value never improves. ``should_stop`` is True once ``patience`` (> 0)
    evaluations in a row did not improve.
    """

    def __init__(self, mode: str = "max", patience: int = 0, min_delta: float = 0.0,
                 best: float | None = None, best_epoch: int = 0, bad_evals: int = 0):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.mode, self.patience, self.min_delta = mode, int(patience), float(min_delta)
        self.best, self.best_epoch, self.bad_evals = best, int(best_epoch), int(bad_evals)

    def update(self, value: float, epoch: int) -> bool:
        """Record the metric of ``epoch``; True when it is the new best."""
        improved = False
        if math.isfinite(value):
            if self.best is None:
                improved = True
            elif self.mode == "max":
                improved = value > self.best + self.min_delta
            else:
                improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_evals = float(value), int(epoch), 0
        else:
            self.bad_evals += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience


class RunBudget:
    """The share of a run used so far: ``fraction() = max(time used / usable time, images seen / max_images,
    iterations / max_iters)``, clamped to [0, 1] and never decreasing.

    ``minutes`` (0: no time budget) is the wall time of the whole run including evaluations; the time kept for
    the final evaluation (``reserve_s``, updated by :meth:`record_evaluation`) is taken off it, so that the
    run ends at the budget with its final evaluation done. Before any evaluation the reserve is estimated
    from the training speed (``eval_images`` at three times the measured training images/s, about what
    inference without backward costs). ``time_used`` and ``images_seen`` survive a resume (:meth:`state_dict`).
    """

    def __init__(self, minutes: float = 0.0, max_images: int = 0, max_iters: int = 0, eval_images: int = 0,
                 clock: Callable[[], float] = time.perf_counter):
        self.budget_s = max(float(minutes), 0.0) * 60.0
        self.max_images = max(int(max_images), 0)
        self.max_iters = max(int(max_iters), 0)
        self.eval_images = max(int(eval_images), 0)
        self.clock = clock
        self.images_seen = 0
        self.iters = 0
        self.finished = False
        self.reserve_s: float | None = None  # measured once an evaluation ran
        self._time_before = 0.0  # time used by earlier processes of a resumed run
        self._train_s = 0.0  # time spent in training steps (for the reserve estimate)
        self._start: float | None = None
        self._fraction = 0.0

    @property
    def timed(self) -> bool:
        return self.budget_s > 0

    @property
    def limited(self) -> bool:
        """A time or image budget (not only the epochs' iteration cap): the run's length is the budget."""
        return self.timed or self.max_images > 0

    def start(self) -> None:
        """Start (or restart, after a resume) the clock."""
        self._start = self.clock()

    @property
    def time_used(self) -> float:
        running = 0.0 if self._start is None else self.clock() - self._start
        return self._time_before + running

    def step(self, images: int, seconds: float = 0.0) -> None:
        """Count one optimizer step over ``images`` samples that took ``seconds``."""
        self.iters += 1
        self.images_seen += int(images)
        self._train_s += float(seconds)

    def record_evaluation(self, seconds: float) -> None:
        """The last evaluation took ``seconds``: keep that much (and 10% more) for the final one."""
        self.reserve_s = 1.1 * float(seconds)

    def estimated_reserve(self) -> float:
        if self.reserve_s is not None:
            return self.reserve_s
        if self.eval_images == 0 or self.images_seen == 0 or self._train_s <= 0:
            return 0.0
        return self.eval_images / (3.0 * self.images_seen / self._train_s)

    def fraction(self) -> float:
        parts = [0.0]
        if self.timed:
            usable = max(self.budget_s - self.estimated_reserve(), 0.5 * self.budget_s)
            parts.append(self.time_used / usable)
        if self.max_images:
            parts.append(self.images_seen / self.max_images)
        if self.max_iters:
            parts.append(self.iters / self.max_iters)
        self._fraction = min(max(self._fraction, *parts), 1.0)
        return self._fraction

    @property
    def last_fraction(self) -> float:
        """What :meth:`fraction` returned last (no new clock reading)."""
        return self._fraction

    @property
    def used_up(self) -> bool:
        """Whether the last :meth:`fraction` reading reached 1, without reading the clock again: the stop
        decision the schedule saw (a second reading a moment later could stop a run whose lr is short of its
        end value, and could differ between processes)."""
        return self._fraction >= 1.0

    def exhausted(self) -> bool:
        """True once the time, image or iteration budget is used up."""
        return self.fraction() >= 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"time_used": self.time_used, "images_seen": self.images_seen, "iters": self.iters,
                "train_s": self._train_s, "reserve_s": self.reserve_s, "fraction": self._fraction,
                "finished": self.finished}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._time_before = float(state.get("time_used", 0.0))
        self.images_seen = int(state.get("images_seen", 0))
        self.iters = int(state.get("iters", 0))
        self._train_s = float(state.get("train_s", 0.0))
        reserve = state.get("reserve_s")
        self.reserve_s = None if reserve is None else float(reserve)
        self.finished = bool(state.get("finished", False))
        self._fraction = 0.0  # recomputed: a resumed run may have a larger budget than the one it stopped at
        self._start = None
