"""Build a classifier from the ``classifier:`` section: :data:`MODELS` is a plain dict name -> builder.

    model = build_classifier(ClassifierConfig(name="resnet18", pretrained="resnet18.pth", head_lr_mult=10,
                                              freeze_stages=2), num_classes=5, image_size=(64, 64))

Order: read the pretrained file (if any) -> build (torchvision weights go into the torchvision model before
its layers are reused) -> cvkit weights -> new classifier layer -> head lr multiple -> frozen stages.
The model's first module normalizes uint8 images with ``mean`` / ``std`` (RGB, 0..1 units: the config's
``transforms.mean`` / ``transforms.std``; a model with other ``in_channels`` gets their average per channel);
those buffers never come from a pretrained file.
Weights are never downloaded: ``pretrained`` is a local file, either a torchvision-format state_dict (the
names of ``torchvision.models.<name>().state_dict()``) or a cvkit checkpoint (``fit``'s ``last.pt`` /
``best.pt``: its EMA weights when kept, else the model's; or a bare cvkit state_dict).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

from cvkit.checkpoint import PIXEL_STAT_KEYS, read_weights_file
from cvkit.models.backbones._load import state_dict_problems
from cvkit.models.classification import zoo
from cvkit.models.classification.config import ClassifierConfig
from cvkit.models.classification.zoo import Classifier
from cvkit.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageNormalizer, channel_stats

__all__ = ["MODELS", "SMALL_INPUT_BELOW", "build_classifier", "read_pretrained", "uses_small_input"]

MODELS: dict[str, Callable[..., Classifier]] = {
    "lenet": zoo.lenet,
    "lenet_bn": zoo.lenet_bn,
    "mlp": zoo.mlp,
    "alexnet": zoo.alexnet,
    "vgg11": zoo.vgg11,
    "vgg16": zoo.vgg16,
    "nin": zoo.nin,
    "googlenet": zoo.googlenet,
    "resnet18": zoo.resnet18,
    "resnet34": zoo.resnet34,
    "resnet50": zoo.resnet50,
    "resnet_mini": zoo.resnet_mini,
    "densenet121": zoo.densenet121,
}

SMALL_INPUT_BELOW = 64  # small_input="auto" turns the small stem on for inputs whose shorter side is below this


def uses_small_input(cfg: ClassifierConfig, image_size: Sequence[int] | None) -> bool:
    """``small_input`` resolved: on/off as given; auto: on when ``min(image_size) < SMALL_INPUT_BELOW``."""
    if cfg.small_input != "auto":
        return cfg.small_input == "on"
    return image_size is not None and min(image_size) < SMALL_INPUT_BELOW


def read_pretrained(path: str | os.PathLike) -> tuple[str, dict[str, Tensor]]:
    """``("torchvision" | "cvkit", state_dict)`` of a local weights file, read by
    :func:`cvkit.checkpoint.read_weights_file`; a cvkit classifier's keys (``stages.``, ``head.``) decide."""
    state = read_weights_file(path, "classifier.pretrained")
    if any(k.startswith(("stages.", "head.")) for k in state):
        return "cvkit", state
    return "torchvision", state


def _load_cvkit(model: Classifier, weights: Mapping[str, Tensor], skip_fc: bool) -> None:
    """Strictly copy cvkit weights into ``model`` (all but ``head.fc.*`` when ``skip_fc``, and never the
    normalizer's buffers: the model keeps the run's own)."""
    keep = {k: v for k, v in weights.items()
            if not (skip_fc and k.startswith("head.fc.")) and k not in PIXEL_STAT_KEYS}
    optional = ("head.fc.",) if skip_fc else ()
    problems = state_dict_problems(model.state_dict(), keep, optional + PIXEL_STAT_KEYS)
    if problems:
        raise ValueError(f"pretrained cvkit weights do not fit {model.name}: " + "; ".join(problems))
    model.load_state_dict(keep, strict=False)


def build_classifier(cfg: ClassifierConfig, num_classes: int, image_size: Sequence[int] | None = None, *,
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Classifier:
    """The zoo model ``cfg.name`` for ``num_classes`` classes and inputs of ``image_size`` ``(H, W)``
    (used by ``small_input: auto``), normalizing with ``mean`` / ``std``, with pretrained weights and
    fine-tuning applied (module docstring)."""
    if cfg.name not in MODELS:
        close = difflib.get_close_matches(cfg.name, MODELS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown classifier {cfg.name!r}{hint} valid: {sorted(MODELS)}")
    kind, weights = read_pretrained(cfg.pretrained) if cfg.pretrained else ("", {})
    builder = MODELS[cfg.name]
    kwargs: dict[str, int | float | bool] = {
        "in_channels": cfg.in_channels, "small_input": uses_small_input(cfg, image_size), "hidden_dim": cfg.hidden_dim,
    }
    if cfg.dropout != ClassifierConfig.dropout or cfg.name in ("mlp", "alexnet", "vgg11", "vgg16", "nin"):
        kwargs["dropout"] = cfg.dropout
    if kind == "torchvision":
        model = builder(num_classes, tv_weights=weights, **kwargs)  # the file's classifier layer is never used
    elif kind == "cvkit":
        head_classes = weights["head.fc.weight"].shape[0] if "head.fc.weight" in weights else num_classes
        skip_fc = cfg.reset_head or head_classes != num_classes
        if not cfg.reset_head and head_classes != num_classes:
            raise ValueError(f"classifier.reset_head=false but the weights have {head_classes} classes, "
                             f"the data {num_classes}")
        model = builder(num_classes, **kwargs)
        _load_cvkit(model, weights, skip_fc)
    else:
        model = builder(num_classes, **kwargs)
    model.normalizer = ImageNormalizer(channel_stats(mean, cfg.in_channels), channel_stats(std, cfg.in_channels))
    if kind and cfg.reset_head:
        model.reset_classifier(num_classes)
    model.head_lr_mult = cfg.head_lr_mult
    if cfg.freeze_stages:
        model.freeze(cfg.freeze_stages)
    return model
