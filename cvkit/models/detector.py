"""The SSD detector: normalizer -> backbone taps + extra layers -> per-level head -> raw outputs per anchor.

**Class convention (stated once, here).** ``num_classes`` counts the foreground classes; dataset
labels are ``0..num_classes-1``. The head predicts ``num_classes + 1`` logits per anchor with
**background at index 0**: foreground label ``l`` is logit ``l + 1`` (:data:`BACKGROUND_INDEX`).

Glossary: B batch, A anchors, C foreground classes, (H, W) the input tensor's size.

``images`` are uint8 ``(B, 3, H, W)`` RGB as the data pipeline (or a decoder) gives them; the first module,
``model.normalizer`` (:class:`cvkit.models.preprocess.ImageNormalizer`), turns them into float32
``(x - pixel_mean) / pixel_std`` from buffers in the state_dict. Float images are taken as already
normalized and pass through unchanged (see :mod:`cvkit.models.preprocess`).

``model(images)`` returns the same dict in train and eval mode::

    "cls_logits":  (B, A, C + 1) raw logits, background at index 0
    "bbox_deltas": (B, A, 4) box deltas relative to the anchors (BoxCoder weights, see cvkit.ops.coder)
    "anchors":     (A, 4) xyxy anchors in pixels of the input tensor, built from the actual feature
                   map sizes and the input size (cached by the anchor generator, so free after the first call)

The loss (cvkit.losses.MultiBoxLoss) and the decoding (cvkit.postprocess.DetectionPostprocessor) are
separate objects. Resizing happens in the data pipeline, never in ``forward``; normalization is the model's
first step (as Detectron2's ``preprocess_image`` and torchvision's ``GeneralizedRCNNTransform``), so a
checkpoint or an exported model takes images as a decoder gives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cvkit.models.backbones.base import Backbone
from cvkit.models.backbones.extras import SSDExtras
from cvkit.models.heads.ssd import SSDHead
from cvkit.models.param_groups import part_param_groups
from cvkit.models.preprocess import ImageNormalizer
from cvkit.ops.anchors import AnchorGrid

__all__ = ["BACKGROUND_INDEX", "SingleShotDetector", "SSDDetector", "DenseDetector"]

#: Index of the background logit; foreground label ``l`` is logit ``l + 1``.
BACKGROUND_INDEX: int = 0


class SingleShotDetector(nn.Module):
    """What SSD and the dense detector share: the normalizer, backbone freezing, train mode, param groups, the
    forward.

    A subclass sets ``normalizer`` first (the first module: its buffers lead the state_dict), then the modules
    its :meth:`features` uses and its ``head``; ``score_activation`` says how
    the class logits become scores (``softmax`` over C + 1 logits with background at 0, or per-class
    ``sigmoid`` over C logits).
    """

    score_activation = "softmax"
    normalizer: ImageNormalizer  # set by the subclass, first

    def _setup(self, backbone: Backbone, head: nn.Module, anchor_generator: AnchorGrid, num_classes: int,
               num_levels: int, what: str, freeze_stages: int, freeze_bn: bool, backbone_lr_mult: float,
               channels_last: bool) -> None:
        if anchor_generator.num_levels != num_levels:
            raise ValueError(
                f"the anchor generator has {anchor_generator.num_levels} levels but the model has {num_levels} "
                f"feature maps ({what})"
            )
        if not 0 <= freeze_stages <= backbone.num_pretrained_stages:
            raise ValueError(
                f"freeze_stages must be in 0..{backbone.num_pretrained_stages} (the backbone's pretrained stages), "
                f"got {freeze_stages}"
            )
        if backbone_lr_mult < 0:
            raise ValueError(f"backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
        self.backbone = backbone
        self.head = head
        self.anchor_generator = anchor_generator
        self.num_classes = int(num_classes)
        self.freeze_stages = int(freeze_stages)
        self.freeze_bn = bool(freeze_bn)
        self.backbone_lr_mult = float(backbone_lr_mult)
        self.channels_last = bool(channels_last)
        for stage in backbone.stages[: self.freeze_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
        self.train()

    def features(self, images: Tensor) -> list[Tensor]:
        raise NotImplementedError

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Raw outputs for uint8 ``images`` (B, 3, H, W), or already normalized floats (module docstring)."""
        _check_images(images)
        images = self.normalizer(images)
        features = self.features(images)
        cls_logits, bbox_deltas = self.head(features)
        anchors = self.anchor_generator(features, images.shape[-2:], dtype=torch.float32)
        return {"cls_logits": cls_logits, "bbox_deltas": bbox_deltas, "anchors": anchors}

    @torch.no_grad()
    def feature_sizes(self, image_size: Sequence[int]) -> list[tuple[int, int]]:
        """(H, W) of every level for an input of ``image_size = (height, width)``, without computing anything.

        Runs the network on shape-only ("meta") tensors, so it costs no arithmetic.
        """
        height, width = (int(v) for v in image_size)
        wrapper = _FeaturesOf(self)
        state = {k: torch.empty_like(v, device="meta") for k, v in wrapper.state_dict(keep_vars=True).items()}
        image = torch.empty((1, 3, height, width), device="meta")
        was_training = self.training
        self.eval()  # no BatchNorm statistics update
        try:
            features = torch.func.functional_call(wrapper, state, (image,))
        except RuntimeError as exc:
            raise ValueError(
                f"input {height}x{width} is too small for this model's layers ({exc}); use a larger input, fewer "
                f"anchor levels, or fewer unpadded extra layers (model.num_valid_extras)"
            ) from None
        finally:
            self.train(was_training)
        return [(int(f.shape[-2]), int(f.shape[-1])) for f in features]

    # -- training mode and fine-tuning -------------------------------------------------------------

    def train(self, mode: bool = True) -> SingleShotDetector:
        """Set train/eval mode; frozen stages and (with ``freeze_bn``) all backbone BatchNorms stay in eval."""
        super().train(mode)
        if mode:
            for stage in self.backbone.stages[: self.freeze_stages]:
                stage.eval()
            if self.freeze_bn:
                for module in self.backbone.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

    def param_groups(
        self, lr: float, weight_decay: float = 0.0, no_decay_norm_bias: bool = True
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups: backbone at ``lr * backbone_lr_mult``, new layers at ``lr``.

        "backbone" holds the pretrained stages; "head" holds everything new (VGG's conv6/conv7 and L2Norm,
        the extra layers, the head). With ``no_decay_norm_bias`` the biases and normalization weights of
        each part go to a ``*_no_decay`` group with ``weight_decay = 0``. Frozen parameters (no
        ``requires_grad``) are left out; empty groups are dropped. Every group has "name", "params", "lr",
        "weight_decay" and "lr_mult" (its lr / ``lr``, for schedulers that rescale the base lr).
        """
        backbone_ids = {id(p) for m in self.backbone.pretrained_modules() for p in m.parameters()}
        return part_param_groups(self, lr, weight_decay, no_decay_norm_bias,
                                 parts=(("backbone", self.backbone_lr_mult), ("head", 1.0)),
                                 part_of=lambda p: "backbone" if id(p) in backbone_ids else "head")


class SSDDetector(SingleShotDetector):
    """Single-shot detector (see the module docstring for the outputs).

    Args:
        backbone: feature extractor (its taps are the first levels).
        extras: extra layers after the last tap (the remaining levels).
        head: per-level class and box convolutions.
        anchor_generator: anchors for the levels (one level per feature map).
        num_classes: foreground classes C.
        freeze_stages: the first k backbone stages get no gradient and keep their BatchNorm in eval mode.
        freeze_bn: every backbone BatchNorm stays in eval mode (running statistics fixed).
        backbone_lr_mult: learning-rate factor of the pretrained backbone stages in :meth:`param_groups`.
        channels_last: run in NHWC memory format (the head's permute is then free).
        normalizer: the first module (default: ImageNet's mean/std), see :mod:`cvkit.models.preprocess`.
    """

    def __init__(
        self,
        backbone: Backbone,
        extras: SSDExtras,
        head: SSDHead,
        anchor_generator: AnchorGrid,
        num_classes: int,
        *,
        freeze_stages: int = 0,
        freeze_bn: bool = False,
        backbone_lr_mult: float = 1.0,
        channels_last: bool = False,
        normalizer: ImageNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.normalizer = normalizer if normalizer is not None else ImageNormalizer()
        self.extras = extras
        num_levels = len(backbone.out_channels) + len(extras.out_channels)
        what = f"{len(backbone.out_channels)} backbone taps + {len(extras.out_channels)} extra layers"
        self._setup(backbone, head, anchor_generator, num_classes, num_levels, what, freeze_stages, freeze_bn,
                    backbone_lr_mult, channels_last)

    def features(self, images: Tensor) -> list[Tensor]:
        """All feature levels: backbone taps, then extra layers."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        taps = self.backbone(images)
        return taps + self.extras(taps[-1])


class DenseDetector(SingleShotDetector):
    """A modern single-stage anchor detector: backbone taps -> feature pyramid -> head shared across levels.

    Outputs as SSD's (module docstring) except ``cls_logits``: ``(B, A, C)`` per-class sigmoid logits, no
    background logit (``score_activation = "sigmoid"``); ``num_anchors_per_level`` int64 ``(L,)`` is added
    for level-aware assigners (ATSS). Args as :class:`SSDDetector` (the normalizer first), with ``neck`` (a
    :class:`cvkit.models.necks.FPN`) instead of the extra layers and a
    :class:`cvkit.models.heads.SharedHead`.
    """

    score_activation = "sigmoid"

    def __init__(
        self,
        backbone: Backbone,
        neck: nn.Module,
        head: nn.Module,
        anchor_generator: AnchorGrid,
        num_classes: int,
        *,
        freeze_stages: int = 0,
        freeze_bn: bool = False,
        backbone_lr_mult: float = 1.0,
        channels_last: bool = False,
        normalizer: ImageNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.normalizer = normalizer if normalizer is not None else ImageNormalizer()
        self.neck = neck
        num_levels = len(getattr(neck, "out_channels", backbone.out_channels))
        self._setup(backbone, head, anchor_generator, num_classes, num_levels, f"{num_levels} pyramid levels",
                    freeze_stages, freeze_bn, backbone_lr_mult, channels_last)

    def features(self, images: Tensor) -> list[Tensor]:
        """The pyramid's levels over the backbone's taps."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.neck(self.backbone(images))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Raw outputs for uint8 ``images`` (B, 3, H, W), or already normalized floats (see the class docstring)."""
        _check_images(images)
        images = self.normalizer(images)
        features = self.features(images)
        cls_logits, bbox_deltas = self.head(features)
        anchors = self.anchor_generator(features, images.shape[-2:], dtype=torch.float32)
        counts = torch.tensor(self.anchor_generator.num_anchors_per_level(features), dtype=torch.int64)
        return {"cls_logits": cls_logits, "bbox_deltas": bbox_deltas, "anchors": anchors,
                "num_anchors_per_level": counts}


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(
            "images must be one tensor (B, 3, H, W) of equally sized images (uint8), got "
            + (f"shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__)
        )


class _FeaturesOf(nn.Module):
    """``forward = detector.features``, so that ``functional_call`` can run only the convolutions."""

    def __init__(self, detector: SingleShotDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.detector.features(images)
