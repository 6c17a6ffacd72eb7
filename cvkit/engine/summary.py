"""``model_summary``: what a model is, counted once at the start of a run (``fit`` prints it and saves it under
``model`` in ``environment.json``).

- ``layers``: leaf modules (modules without children), and how many of each type (``layer_types``);
- ``parameters`` / ``trainable_parameters``: element counts (a parameter shared by two modules counts once);
- ``flops``: floating-point operations of one forward pass of a batch of one ``input_size`` image, as
  ``torch.utils.flop_counter.FlopCounterMode`` counts them: a multiply-add is 2 FLOPs (so MACs = flops / 2),
  and only matrix products and convolutions are counted (elementwise work, pooling and NMS are not);
- ``anchors``: anchors per image at that size, when the model's output dict has ``anchors`` (detectors:
  ``(A, 4)``); absent otherwise.

The forward pass runs in eval mode without gradients on a uint8 zero image (the models normalize their input),
and the model's mode is restored: nothing it holds changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["model_summary", "format_model_summary"]


def _count_flops(model: nn.Module, images: torch.Tensor) -> tuple[int, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        outputs = model(images)
    return int(counter.get_total_flops()), outputs


@torch.no_grad()
def model_summary(model: nn.Module, input_size: Sequence[int] | None = None,
                  device: torch.device | str | None = None) -> dict[str, Any]:
    """The summary of ``model`` (see the module docstring) at ``input_size = (height, width)``; without a size
    only the layers and parameters."""
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    params = list({id(p): p for p in model.parameters()}.values())
    summary: dict[str, Any] = {
        "name": type(model).__name__,
        "layers": len(leaves),
        "layer_types": dict(Counter(type(m).__name__ for m in leaves).most_common()),
        "parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
    }
    if input_size is None:
        return summary
    height, width = (int(v) for v in input_size)
    if device is None:
        device = next((p.device for p in params), torch.device("cpu"))
    images = torch.zeros(1, 3, height, width, dtype=torch.uint8, device=device)
    was_training = model.training
    model.eval()
    try:
        flops, outputs = _count_flops(model, images)
    finally:
        model.train(was_training)
    summary.update(input_size=[height, width], flops=flops, flops_unit="FLOPs (1 multiply-add = 2)")
    if isinstance(outputs, Mapping) and isinstance(outputs.get("anchors"), torch.Tensor):
        summary["anchors"] = int(outputs["anchors"].shape[-2])
    return summary


def format_model_summary(summary: Mapping[str, Any]) -> str:
    """One line: ``model NAME: L layers, P parameters (T trainable), G GFLOPs (2 per multiply-add) at HxW,
    A anchors per image`` (the parts the summary has)."""
    text = (f"model {summary['name']}: {summary['layers']} layers, {summary['parameters'] / 1e6:.2f}M parameters "
            f"({summary['trainable_parameters'] / 1e6:.2f}M trainable)")
    if "flops" in summary:
        height, width = summary["input_size"]
        text += f", {summary['flops'] / 1e9:.3g} GFLOPs (2 per multiply-add) at {height}x{width}"
    if "anchors" in summary:
        text += f", {summary['anchors']} anchors per image"
    return text
