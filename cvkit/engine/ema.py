"""Exponential moving average of a model's weights.

After every optimizer step ``ema.update(model)`` sets, for each floating-point parameter and buffer,
``avg = d * avg + (1 - d) * current`` with ``d = decay * (1 - exp(-updates / warmup_steps))`` (``d = decay``
when ``warmup_steps == 0``), so early averages follow the fast-changing weights closely. Integer buffers
(BatchNorm's ``num_batches_tracked``) are copied. ``ema.module`` is a frozen copy in eval mode, used for
evaluation and saved in checkpoints.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """An averaged copy of ``model`` (see the module docstring for the update rule)."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup_steps: int = 1000):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup_steps = int(warmup_steps)
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if self.warmup_steps <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.warmup_steps))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model`` 's current weights into the average (``model`` is not changed)."""
        d = self.current_decay()
        current = model.state_dict()
        averages, values = [], []
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.dtype.is_floating_point:
                averages.append(avg)
                values.append(value.to(avg.dtype))
            else:
                avg.copy_(value)
        if averages:  # avg + (1 - d) * (value - avg) == d * avg + (1 - d) * value, one fused kernel per dtype
            torch._foreach_lerp_(averages, values, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
