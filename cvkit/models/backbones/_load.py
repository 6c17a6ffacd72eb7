"""Load a torchvision-format state_dict into a torchvision classifier before its layers are reused."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from torch import Tensor, nn

__all__ = ["load_torchvision_state", "state_dict_problems"]

# torchvision's old DenseNet files name "norm.1" what the module calls "norm1" (and conv.1, relu.1 ...)
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def state_dict_problems(
    expected: Mapping[str, Tensor], given: Mapping[str, Tensor], optional: Sequence[str] = ()
) -> list[str]:
    """Why ``given`` does not fit a model whose state_dict is ``expected`` (empty list: it fits).

    Keys starting with one of ``optional`` may be missing; any other missing key, any unexpected key and
    every shape mismatch is reported, with up to three examples each.
    """
    unexpected = sorted(k for k in given if k not in expected)
    missing = sorted(k for k in expected if k not in given and not k.startswith(tuple(optional)))
    mismatched = sorted(
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in given.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:3]})")
    return problems


def load_torchvision_state(
    model: nn.Module, state_dict: Mapping[str, Tensor], unused_prefixes: Sequence[str], name: str
) -> None:
    """Copy ``state_dict`` into the torchvision classifier ``model``, strictly for the layers cvkit uses.

    Keys under ``unused_prefixes`` (the classifier, e.g. ``"fc."``) may be present or missing. Any other
    missing key, unexpected key or shape mismatch raises ``ValueError`` naming the keys.
    """
    fixed = {}
    for key, value in state_dict.items():
        match = _DENSENET_OLD_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    expected = model.state_dict()
    problems = state_dict_problems(expected, fixed, unused_prefixes)
    if problems:
        raise ValueError(f"pretrained weights do not fit torchvision's {name}: " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in fixed.items() if k in expected}, strict=False)
