"""Optimizer parameter groups of a model: the one "no weight decay" rule, and parts with their own lr.

The rule (:func:`skips_weight_decay`): a parameter gets no weight decay when it belongs to a normalization
layer (:data:`NORM_LAYERS`), is named ``bias``, or has at most one dimension (scales such as SSD's L2Norm
weight). Every cvkit model's ``param_groups`` and the engine's fallback for other modules use it.

:func:`part_param_groups` splits a model's trainable parameters into named parts (each at
``lr * lr_mult``), each part into ``<part>`` (``weight_decay``) and ``<part>_no_decay`` (0) groups. Every
group has "name", "params", "lr", "weight_decay" and "lr_mult"; frozen parameters are left out and empty
groups are dropped, and the order is the parts' order, decay group first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

__all__ = ["NORM_LAYERS", "skips_weight_decay", "part_param_groups"]

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def skips_weight_decay(module: nn.Module, name: str, param: nn.Parameter) -> bool:
    """True for normalization-layer parameters, biases and parameters of at most one dimension."""
    return isinstance(module, NORM_LAYERS) or name == "bias" or param.dim() <= 1


def part_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    no_decay_norm_bias: bool = True,
    parts: Sequence[tuple[str, float]] = (("all", 1.0),),
    part_of: Callable[[nn.Parameter], str] | None = None,
) -> list[dict[str, Any]]:
    """Groups of ``model`` 's trainable parameters (see the module docstring).

    ``parts``: ``(name, lr_mult)`` in group order; ``part_of(param)`` names the part of a parameter (default:
    the first part). Without ``no_decay_norm_bias`` every parameter of a part is in its decay group.
    """
    mults = dict(parts)
    groups: dict[str, dict[str, Any]] = {}
    for part, mult in parts:
        for suffix, decay in (("", weight_decay), ("_no_decay", 0.0)):
            groups[part + suffix] = {"name": part + suffix, "params": [], "lr": lr * mult, "weight_decay": decay,
                                     "lr_mult": mult}
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            part = part_of(param) if part_of is not None else parts[0][0]
            if part not in mults:
                raise ValueError(f"part_of gave {part!r}, not one of {list(mults)}")
            no_decay = no_decay_norm_bias and skips_weight_decay(module, name, param)
            groups[part + ("_no_decay" if no_decay else "")]["params"].append(param)
    return [g for g in groups.values() if g["params"]]
