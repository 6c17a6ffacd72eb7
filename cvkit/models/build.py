"""Builders: one plain function per name, in plain dicts (no registry, no decorators).

    model, criterion, postprocessor = build_detector(model_cfg, loss_cfg, post_cfg, anchor_cfg, num_classes,
                                                     mean=tf_cfg.mean, std=tf_cfg.std)

``BACKBONES`` maps a backbone name to ``builder(state_dict=None) -> Backbone``; ``DETECTORS`` maps a
detector name (``model.arch``) to ``builder(model_cfg, anchor_cfg, num_classes, mean=..., std=...) -> nn.Module``.
``mean`` / ``std`` (RGB, 0..1 units: the config's ``transforms.mean`` / ``transforms.std``, ImageNet's by
default) become the buffers of the model's first module, its :class:`~cvkit.models.preprocess.ImageNormalizer`:
the model takes uint8 images.

Feature maps and anchors: the model makes its anchors from the sizes of the feature maps it actually
computes (so outputs and anchors always line up). ``build_detector`` also checks that, at
``anchors.image_size``, those sizes equal ``anchors.resolved_feature_sizes()`` (``anchors.feature_sizes``,
or ``ceil(image_size / step)``), because SSD anchors place their centres with the configured steps. The
number of extra layers is the number of anchor levels minus the backbone's taps (ResNet/DenseNet: 3 taps
+ 3 extras; VGG: 2 taps + 4 extras; SSD300: 38, 19, 10, 5, 3, 1 in both cases).

With ``anchors.steps: null`` (and no ``anchors.feature_sizes``) nothing is checked: each level's anchors
tile its actual feature map (centres ``(j + 0.5) * image / W``), so any input size works.

Smaller inputs (CPU-friendly): the unpadded extra layers (``model.num_valid_extras``, 3x3 -> 1x1) need
a 3x3 map, i.e. an input of about 260 pixels or more. Below that use ``num_valid_extras: 0`` (every extra
layer halves the map) and either ``anchors.steps: null`` or steps ``image / feature size`` per level,
e.g. 128x128: ``steps: [8, 16, 32, 64, 128, 128]`` -> 16, 8, 4, 2, 1, 1.

Pretrained weights (``model.pretrained``, a local file; nothing is downloaded):

- a torchvision state_dict of the classifier (``torchvision.models.resnet18().state_dict()``, e.g. the
  file torchvision's hub would download): loaded into the backbone's pretrained stages, strictly
  (the classifier's ``fc.*`` / ``classifier.*`` keys may be present or missing);
- a cvkit checkpoint (a dict with a ``"model"`` state_dict of a detector, or that state_dict itself):
  loaded into the whole detector; when the checkpoint was trained for another number of classes the class
  convolutions keep their fresh initialisation (a new head), everything else must fit. The normalizer's
  buffers are not taken from the file: they come from this run's ``mean`` / ``std`` (which the data is
  normalized with), and a file written before they existed loads as well.

Files are read with ``torch.load(weights_only=True)``: loading can never execute code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from torch import Tensor, nn

from cvkit.checkpoint import PIXEL_STAT_KEYS, read_weights_file
from cvkit.losses.dense import DenseLoss
from cvkit.losses.multibox import MultiBoxLoss
from cvkit.models.backbones import (
    Backbone,
    SSDExtras,
    densenet121,
    resnet18,
    resnet34,
    resnet50,
    vgg16,
    vgg16_bn,
)
from cvkit.models.backbones.resnet import stage_widths
from cvkit.models.config import LossConfig, ModelConfig, PostprocessConfig
from cvkit.models.detector import DenseDetector, SingleShotDetector, SSDDetector
from cvkit.models.heads import SharedHead, SSDHead
from cvkit.models.necks import FPN
from cvkit.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageNormalizer
from cvkit.ops.anchors import AnchorConfig
from cvkit.postprocess import DetectionPostprocessor

__all__ = ["BACKBONES", "DETECTORS", "build_backbone", "build_ssd", "build_dense", "build_detector",
           "load_weights_file"]

log = logging.getLogger(__name__)

Model = TypeVar("Model", bound=SingleShotDetector)

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg16": vgg16,
    "vgg16_bn": vgg16_bn,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "densenet121": densenet121,
}


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid names: {', '.join(sorted(table))}")
    return table[name]


# the state keys of a cvkit detector's class convolutions (SSD per level, dense shared or per level): they
# identify a cvkit checkpoint and are sized by the number of classes
CLASS_HEAD_PREFIXES = ("head.cls_convs.", "head.cls_out.", "head.cls_outs.")


def load_weights_file(path: str | Path) -> tuple[str, dict[str, Tensor]]:
    """``("checkpoint", detector_state)`` or ``("torchvision", state_dict)`` of a weights file, read by
    :func:`cvkit.checkpoint.read_weights_file`; a cvkit detector's keys (``head.cls_convs.``) decide."""
    state = read_weights_file(path, "model.pretrained")
    if any(k.startswith(CLASS_HEAD_PREFIXES) for k in state):
        return "checkpoint", state
    return "torchvision", state


def build_backbone(name: str, state_dict: Mapping[str, Tensor] | None = None,
                   width: float | Sequence[float] = 1.0) -> Backbone:
    """The backbone ``name`` (a key of :data:`BACKBONES`), optionally with torchvision weights; ``width``
    scales the channels (ResNets only): one multiplier, or five (stem, layer1..layer4)."""
    factory = _lookup(BACKBONES, name, "backbone")
    if isinstance(width, (int, float)) and width == 1.0:
        return factory(state_dict=state_dict)
    if not name.startswith("resnet"):
        raise ValueError(f"model.backbone_width applies to the resnet backbones, not {name!r} (set it to 1.0)")
    return factory(state_dict=state_dict, width=width)


def _load_detector_state(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    expected = model.state_dict()
    new_head = [k for k in expected if k.startswith(CLASS_HEAD_PREFIXES)]
    head_mismatch = any(k in state and tuple(state[k].shape) != tuple(expected[k].shape) for k in new_head)
    skip = (set(new_head) if head_mismatch else set()) | set(PIXEL_STAT_KEYS)  # the run's normalization stays
    missing = sorted(k for k in expected if k not in state and k not in skip)
    unexpected = sorted(k for k in state if k not in expected and k not in skip)
    mismatched = sorted(
        k for k in state if k in expected and k not in skip and tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source}: checkpoint does not fit this model (another backbone or extra-layer setting?): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {mismatched[:3]}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in skip}, strict=False)
    if head_mismatch:
        log.info("%s: trained for another number of classes; the class convolutions start fresh", source)


def build_ssd(model_cfg: ModelConfig, anchor_cfg: AnchorConfig, num_classes: int, *,
              mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> SSDDetector:
    """An :class:`SSDDetector` for ``model_cfg`` and ``anchor_cfg``, normalizing with ``mean`` / ``std``
    (see the module docstring)."""
    kind, state, backbone, generator = _backbone_and_anchors(model_cfg, anchor_cfg, num_classes)
    num_extras = generator.num_levels - len(backbone.out_channels)
    if num_extras < 0:
        raise ValueError(
            f"anchors define {generator.num_levels} levels but backbone {model_cfg.backbone!r} alone has "
            f"{len(backbone.out_channels)}; use at least that many anchor levels"
        )
    if num_extras > min(len(model_cfg.extra_channels), len(model_cfg.extra_mid_channels)):
        raise ValueError(
            f"{generator.num_levels} anchor levels - {len(backbone.out_channels)} backbone taps = {num_extras} extra "
            f"layers, but model.extra_channels / extra_mid_channels give "
            f"{len(model_cfg.extra_channels)} / {len(model_cfg.extra_mid_channels)}"
        )
    extras = SSDExtras(
        backbone.out_channels[-1],
        model_cfg.extra_mid_channels[:num_extras],
        model_cfg.extra_channels[:num_extras],
        num_valid=min(model_cfg.num_valid_extras, num_extras),
        batch_norm=model_cfg.extra_bn,
    )
    head = SSDHead(
        backbone.out_channels + extras.out_channels,
        generator.num_anchors_per_location(),
        num_classes + 1,
        model_cfg.head_kernel_size,
    )
    model = SSDDetector(
        backbone,
        extras,
        head,
        generator,
        num_classes,
        freeze_stages=model_cfg.freeze_stages,
        freeze_bn=model_cfg.freeze_bn,
        backbone_lr_mult=model_cfg.backbone_lr_mult,
        channels_last=model_cfg.channels_last,
        normalizer=ImageNormalizer(mean, std),
    )
    return _finish(model, kind, state, model_cfg, anchor_cfg)


def _backbone_and_anchors(model_cfg: ModelConfig, anchor_cfg: AnchorConfig, num_classes: int) -> tuple[str, Any,
                                                                                                      Backbone, Any]:
    """The pretrained file's kind and state (``model.pretrained``), the backbone and the anchor generator."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (foreground classes), got {num_classes}")
    kind, state = ("", None)
    if model_cfg.pretrained:
        kind, state = load_weights_file(model_cfg.pretrained)
    width = (stage_widths(model_cfg.backbone_stage_widths, "model.backbone_stage_widths")
             if model_cfg.backbone_stage_widths else model_cfg.backbone_width)
    backbone = build_backbone(model_cfg.backbone, state if kind == "torchvision" else None, width)
    return kind, state, backbone, anchor_cfg.build()


def _finish(model: Model, kind: str, state: Any, model_cfg: ModelConfig, anchor_cfg: AnchorConfig) -> Model:
    """Check the model's feature maps against the anchors' (unless they tile whatever maps the model computes:
    no steps, no feature sizes), then load a cvkit checkpoint given as ``model.pretrained``."""
    if anchor_cfg.steps is not None or anchor_cfg.feature_sizes is not None:
        expected = anchor_cfg.resolved_feature_sizes()
        actual = model.feature_sizes(anchor_cfg.image_size)
        if actual != expected:
            raise ValueError(
                f"backbone {model_cfg.backbone!r} gives feature maps {actual} for a {tuple(anchor_cfg.image_size)} "
                f"input, but the anchors expect {expected}; change anchors.steps / anchors.feature_sizes (or the "
                "input size)"
            )
    if kind == "checkpoint" and state is not None:
        _load_detector_state(model, state, model_cfg.pretrained)
    return model


def build_dense(model_cfg: ModelConfig, anchor_cfg: AnchorConfig, num_classes: int, *,
                mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> DenseDetector:
    """A :class:`DenseDetector`: the backbone's taps (strides 8, 16, 32 for ResNet), a light FPN / PAN of
    ``model.neck_channels`` channels (plus ``model.extra_levels``), and a head shared across the levels.

    The anchors need one level per pyramid level and the same number of anchors per location on every level
    (e.g. ``style: sizes``, ``sizes: [[32], [64], [128]]``, ``aspect_ratios: [[1.0]]``, ``steps: [8, 16, 32]``).
    """
    if model_cfg.neck not in ("fpn", "pan"):
        raise ValueError(f"model.neck must be 'fpn' or 'pan', got {model_cfg.neck!r}")
    kind, state, backbone, generator = _backbone_and_anchors(model_cfg, anchor_cfg, num_classes)
    neck = FPN(backbone.out_channels, model_cfg.neck_channels, pan=model_cfg.neck == "pan",
               extra_levels=model_cfg.extra_levels, norm=model_cfg.head_norm)
    per_location = set(generator.num_anchors_per_location())
    if len(per_location) != 1:
        raise ValueError(f"a shared head needs the same anchors per location on every level, got "
                         f"{generator.num_anchors_per_location()} (anchors.aspect_ratios / sizes)")
    head = SharedHead(model_cfg.neck_channels, len(neck.out_channels), per_location.pop(), num_classes,
                      model_cfg.head_convs, model_cfg.head_norm, model_cfg.prior_prob, model_cfg.head_shared)
    model = DenseDetector(backbone, neck, head, generator, num_classes, freeze_stages=model_cfg.freeze_stages,
                          freeze_bn=model_cfg.freeze_bn, backbone_lr_mult=model_cfg.backbone_lr_mult,
                          channels_last=model_cfg.channels_last, normalizer=ImageNormalizer(mean, std))
    return _finish(model, kind, state, model_cfg, anchor_cfg)


DETECTORS: dict[str, Callable[..., nn.Module]] = {"ssd": build_ssd, "dense": build_dense}


def build_detector(
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    post_cfg: PostprocessConfig,
    anchor_cfg: AnchorConfig,
    num_classes: int,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[SingleShotDetector, MultiBoxLoss | DenseLoss, DetectionPostprocessor]:
    """The model, its criterion and its postprocessor: three separate objects (DETR style). ``arch: ssd``
    pairs with :class:`MultiBoxLoss` (softmax), ``arch: dense`` with :class:`DenseLoss` (sigmoid). The model
    takes uint8 images and normalizes them with ``mean`` / ``std`` (0..1 units, ``transforms.mean`` / ``std``)."""
    model = _lookup(DETECTORS, model_cfg.arch, "detector")(model_cfg, anchor_cfg, num_classes, mean=mean, std=std)
    activation = getattr(model, "score_activation", "softmax")
    criterion: MultiBoxLoss | DenseLoss
    if activation == "sigmoid":
        criterion = DenseLoss(loss_cfg, anchor_cfg.matcher)
    else:
        criterion = MultiBoxLoss(loss_cfg, anchor_cfg.matcher)
    postprocessor = DetectionPostprocessor(post_cfg, box_weights=loss_cfg.box_weights, score_activation=activation)
    return model, criterion, postprocessor
