"""The first module of every cvkit model: uint8 images -> normalized float32, from buffers in its state_dict.

Every detector (:mod:`cvkit.models.detector`) and classifier (:mod:`cvkit.models.classification`) starts
with an :class:`ImageNormalizer` at ``model.normalizer``, as Detectron2's ``preprocess_image`` and
torchvision's ``GeneralizedRCNNTransform`` do, so that a checkpoint or an exported model takes images as a
decoder gives them. The data pipeline only does geometry and ships uint8 batches; the engine moves them to
the training device and the model normalizes them there (one float pass per batch, on the device).

Glossary: B batch, C channels (3, RGB), H, W image size.

Input rule (one rule for every model):

- **uint8** ``(B, C, H, W)``, pixel values 0..255 (RGB): normalized to float32
  ``(x - pixel_mean) / pixel_std`` on the device the images are on.
- **floating point** (any float dtype): taken as *already normalized* and returned unchanged (the same
  tensor object). Code and benchmarks that feed normalized floats keep working; a float image in 0..1 or
  0..255 is **not** rescaled: give uint8 instead.
- any other dtype: ``TypeError``.

Buffers (persistent, so part of the state_dict and of every checkpoint): ``pixel_mean`` and ``pixel_std``,
float32 ``(C, 1, 1)`` in 0..255 pixel units, ``pixel_mean = 255 * mean`` and ``pixel_std = 255 * std``
for the config's ``transforms.mean`` / ``transforms.std`` (0..1 units). The state_dict keys are
``normalizer.pixel_mean`` / ``normalizer.pixel_std`` (:data:`cvkit.checkpoint.PIXEL_STAT_KEYS`);
checkpoints written before they existed get them from their stored preprocessing when they are read
(:func:`cvkit.checkpoint.load_checkpoint`).

The float values: ``float32(x) * scale + shift`` with ``scale = 1 / pixel_std`` and
``shift = -pixel_mean / pixel_std`` (float32), the same values on every device and on both paths below:

- a CPU batch of channel-last views (cvkit's collated batches: a ``(B, C, H, W)`` view of a
  ``(B, H, W, C)`` buffer) is converted per image with ``cv2.split`` into uint8 planes and one numpy
  multiply-add per plane, faster on one thread than torch's transposing conversion (measured in
  ``benchmarks/bench_data.py``);
- everything else (CUDA, contiguous batches, and always while tracing or exporting, where numpy would be
  frozen into the graph as a constant) goes through torch: one conversion to contiguous float32, then an
  in-place multiply-add.

An exported graph (``cvkit export``) is traced with a uint8 example, so it takes uint8 images only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageNormalizer", "channel_stats"]

#: the default ``transforms.mean`` / ``transforms.std`` (RGB, 0..1 units), ImageNet's
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def channel_stats(values: Sequence[float], channels: int) -> tuple[float, ...]:
    """``values`` (one per RGB channel) for a ``channels``-channel input: as given when the counts agree,
    else their average repeated (a greyscale model gets the mean of the RGB statistics)."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    return (sum(values) / len(values),) * channels


class ImageNormalizer(nn.Module):
    """uint8 ``(B, C, H, W)`` -> float32 ``(x - pixel_mean) / pixel_std``; floats pass through (module docstring).

    Args:
        mean: per-channel mean in 0..1 units (``transforms.mean``).
        std: per-channel standard deviation in 0..1 units (``transforms.std``), all positive.
    """

    pixel_mean: Tensor  # float32 (C, 1, 1), 0..255 units (a buffer)
    pixel_std: Tensor  # float32 (C, 1, 1), 0..255 units (a buffer)

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("pixel_mean", _pixel_units(mean))
        self.register_buffer("pixel_std", _pixel_units(std))
        self.num_channels = len(mean)

    def extra_repr(self) -> str:
        mean = [round(v, 4) for v in self.pixel_mean.flatten().tolist()]
        std = [round(v, 4) for v in self.pixel_std.flatten().tolist()]
        return f"pixel_mean={mean}, pixel_std={std}"

    def forward(self, images: Tensor) -> Tensor:
        """Normalized float32 ``(B, C, H, W)`` for uint8 ``images``; float ``images`` unchanged."""
        if images.is_floating_point():
            return images  # already normalized (the module docstring's rule)
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8 (0..255) or already normalized floats, got {images.dtype}")
        tracing = _tracing()
        if not tracing and (images.dim() != 4 or images.shape[1] != self.num_channels):
            raise ValueError(f"images must be (B, {self.num_channels}, H, W), got shape {tuple(images.shape)}")
        scale = self.pixel_std.reciprocal()  # (C, 1, 1) float32
        shift = -self.pixel_mean * scale
        if not tracing and images.device.type == "cpu" and _is_channel_last(images):
            return _normalize_channel_last_cpu(images, scale.flatten().tolist(), shift.flatten().tolist())
        # one pass converts to float32 in the standard layout, whatever the input's strides
        return images.to(torch.float32, memory_format=torch.contiguous_format).mul_(scale).add_(shift)


def _pixel_units(values: Sequence[float]) -> Tensor:
    """float32 ``(C, 1, 1)`` ``255 * values`` (computed in float64, rounded once)."""
    return (255.0 * torch.tensor([float(v) for v in values], dtype=torch.float64)).view(-1, 1, 1).float()


def _is_channel_last(images: Tensor) -> bool:
    return images.permute(0, 2, 3, 1).is_contiguous()


def _tracing() -> bool:
    """Inside ``torch.jit.trace`` / script, ``torch.compile`` or ``torch.export``: only torch ops may run."""
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling())


def _normalize_channel_last_cpu(images: Tensor, scale: list[float], shift: list[float]) -> Tensor:
    """``images.float() * scale + shift`` in the standard layout for a CPU batch of channel-last views: per
    image, ``cv2.split`` into uint8 planes, then ``float32(x) * scale + shift`` per plane with numpy (the
    same two float32 roundings as the torch path)."""
    scale32 = [np.float32(v) for v in scale]
    shift32 = [np.float32(v) for v in shift]
    batch, channels, height, width = images.shape
    out = np.empty((batch, channels, height, width), dtype=np.float32)
    planes = np.empty((channels, height, width), dtype=np.uint8)
    pixels = images.permute(0, 2, 3, 1).numpy()  # (B, H, W, C), no copy
    for b in range(batch):
        if channels == 1:
            planes[0] = pixels[b, :, :, 0]
        else:
            cv2.split(pixels[b], list(planes))
        for c in range(channels):
            np.multiply(planes[c], scale32[c], out=out[b, c], dtype=np.float32)
            out[b, c] += shift32[c]
    return torch.from_numpy(out)
