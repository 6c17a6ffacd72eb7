"""Config sections of the detector: ``model:``, ``loss:`` and ``postprocess:`` (frozen dataclasses).

YAML keys are the field names; :func:`cvkit.config.from_dict` maps a section onto its dataclass and
rejects unknown keys. Each field's comment is its documentation. ``LossConfig`` lives in
``cvkit.losses.config`` and ``PostprocessConfig`` in ``cvkit.postprocess`` (so that losses and
postprocessing do not import the models); both are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvkit.losses.config import LossConfig
from cvkit.postprocess import PostprocessConfig

__all__ = ["ModelConfig", "LossConfig", "PostprocessConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """The ``model:`` section: which detector, which backbone, how it is initialised and fine-tuned."""

    arch: str = "ssd"  # detector: a key of cvkit.models.DETECTORS (ssd | dense)
    backbone: str = "resnet18"  # a key of cvkit.models.BACKBONES: vgg16[_bn], resnet18/34/50, densenet121
    backbone_width: float = 1.0  # resnet*: channel multiplier of every stage (0.5: a quarter of the compute)
    backbone_stage_widths: tuple[float, ...] = ()  # resnet*: five multipliers (stem, layer1..4); () = backbone_width
    pretrained: str = ""  # local file: torchvision classifier state_dict or cvkit checkpoint; "" = random init
    freeze_stages: int = 0  # freeze (no grad, BatchNorm in eval) the first k backbone stages (stage 0 = the stem)
    freeze_bn: bool = False  # keep every backbone BatchNorm's running statistics fixed (affine weights still learn)
    backbone_lr_mult: float = 1.0  # backbone lr = lr * this (d2l fine-tuning: 0.1, the new layers learn 10x faster)
    extra_channels: tuple[int, ...] = (512, 256, 256, 256)  # output channels of the SSD extra layers, in order
    extra_mid_channels: tuple[int, ...] = (256, 128, 128, 128)  # 1x1 bottleneck channels of each extra layer
    num_valid_extras: int = 2  # the last k extra layers use an unpadded stride-1 3x3 conv (SSD300: 5 -> 3 -> 1)
    extra_bn: bool = True  # BatchNorm in the extra layers (SSD's VGG original has none)
    head_kernel_size: int = 3  # kernel of the per-level class and box convolutions
    neck: str = "pan"  # dense: fpn (top-down) | pan (top-down + bottom-up)
    neck_channels: int = 96  # dense: channels of every pyramid level and of the head
    extra_levels: int = 0  # dense: stride-2 pyramid levels after the last backbone tap
    head_convs: int = 2  # dense: convolutions of each tower of the shared head
    head_shared: bool = True  # dense: one head for every level (False: a tower and output convs per level)
    head_norm: str = "bn"  # dense: bn | gn | none, in the neck and the head
    prior_prob: float = 0.01  # dense: initial foreground probability of every class (class bias init)
    channels_last: bool = True  # run the convolutions in NHWC memory format (faster oneDNN kernels on CPU)
