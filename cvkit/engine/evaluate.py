"""``evaluate``: validation loss and evaluator metrics in one pass over a loader.

For each batch: ``outputs = model(images)`` (``batch["images"]`` moved to the device as they are, uint8: the
model normalizes them); ``criterion(outputs, targets)`` gives the loss terms (logged
as ``val_<name>``, averaged over batches); the postprocessor turns outputs into predictions which the
evaluator accumulates. The model's train/eval mode is restored afterwards.

The evaluator is pluggable: any object with ``reset()``, ``update(predictions, batch)`` and
``compute() -> dict[str, float]`` (optionally ``report() -> str``, a text report that ``fit`` writes to
``eval_report.txt``, and ``table_metrics``, the metric names ``fit`` shows on the console), e.g.
:class:`cvkit.evaluation.coco.CocoEvaluator`. Predictions are ``postprocessor(outputs, image_sizes,
batch["orig_sizes"])`` for detection batches (``image_sizes`` int64 ``(B, 2)``: the network input's
``(height, width)`` per image), ``postprocessor(outputs)`` for other batches, and ``outputs`` itself when
there is no postprocessor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["evaluate", "move_to_device", "batch_targets", "input_sizes", "predict"]


def move_to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device) for v in obj)
    return obj


def batch_targets(batch: dict[str, Any]) -> Any:
    """What the criterion compares against: ``batch["targets"]`` (detection) or ``batch["labels"]``."""
    return batch["targets"] if "targets" in batch else batch["labels"]


def input_sizes(images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """int64 ``(B, 2)``: the ``(height, width)`` of each network input image."""
    if isinstance(images, torch.Tensor):
        return torch.tensor([list(images.shape[-2:])] * images.shape[0], dtype=torch.int64)
    return torch.tensor([list(im.shape[-2:]) for im in images], dtype=torch.int64).reshape(-1, 2)


def predict(postprocessor: Callable[..., Any] | None, outputs: Any, batch: dict[str, Any]) -> Any:
    """The predictions the evaluator receives (see the module docstring)."""
    if postprocessor is None:
        return outputs
    if "orig_sizes" in batch:
        return postprocessor(outputs, input_sizes(batch["images"]), batch["orig_sizes"])
    return postprocessor(outputs)


def _to_float32(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _to_float32(v) for k, v in outputs.items()}
    return outputs


def autocast_args(amp: bool | torch.dtype | None, device: torch.device) -> tuple[bool, torch.dtype | None]:
    """``amp``: a dtype autocasts to it on any device; True is float16 on CUDA only; False/None is off."""
    if isinstance(amp, torch.dtype):
        return True, amp
    return bool(amp) and device.type == "cuda", torch.float16 if device.type == "cuda" else None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: Callable[..., dict[str, torch.Tensor]] | None,
    postprocessor: Callable[..., Any] | None,
    loader: Iterable[dict[str, Any]],
    device: torch.device | str = "cpu",
    evaluator: Any | None = None,
    amp: bool | torch.dtype | None = False,
    progress: bool = False,
) -> dict[str, float]:
    """Validation loss terms (``val_loss``, ``val_loss_cls``, ...) plus ``evaluator.compute()`` 's metrics."""
    from tqdm import tqdm

    device = torch.device(device)
    use_amp, amp_dtype = autocast_args(amp, device)
    was_training = model.training
    model.eval()
    if evaluator is not None:
        evaluator.reset()
    sums: dict[str, float] = {}
    num_batches = 0
    try:
        for batch in tqdm(loader, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
            if len(batch["images"]) == 0:
                continue
            images = move_to_device(batch["images"], device)  # uint8: the model normalizes them there
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                outputs = model(images)
                if criterion is not None:
                    losses = criterion(outputs, move_to_device(batch_targets(batch), device))
            if criterion is not None:
                for key, value in losses.items():
                    sums[f"val_{key}"] = sums.get(f"val_{key}", 0.0) + float(value)
            num_batches += 1
            if evaluator is not None:
                if use_amp:  # postprocess and metrics in float32 (NMS kernels take float16/32/64, not bfloat16)
                    outputs = _to_float32(outputs)
                evaluator.update(predict(postprocessor, outputs, batch), batch)
    finally:
        model.train(was_training)
    metrics = {k: v / max(num_batches, 1) for k, v in sums.items()}
    if evaluator is not None and num_batches:
        metrics.update({k: float(v) for k, v in evaluator.compute().items()})
    return metrics
