"""The ``classifier:`` config section (:class:`ClassifierConfig`): which zoo model, its input adaptation,
pretrained weights and fine-tuning. Every field has a default, so ``classifier: {}`` is complete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cvkit.config import ConfigError

__all__ = ["ClassifierConfig"]


@dataclass(frozen=True)
class ClassifierConfig:
    name: str = "resnet18"  # zoo model: lenet mlp alexnet vgg11 vgg16 nin googlenet resnet18/34/50 densenet121
    in_channels: int = 3  # input channels (runs: 3, the pipeline gives RGB; 1: greyscale, library use)
    small_input: Literal["auto", "on", "off"] = "auto"  # small stem (3x3/1 conv, ceil pools); auto: min(size)<64
    dropout: float = 0.5  # dropout before the classifier layer(s) (mlp, alexnet, vgg, nin, googlenet)
    hidden_dim: int = 0  # width of the MLP classifier (alexnet, vgg: 4096, mlp: 256); 0 = the model's default
    pretrained: str = ""  # local torchvision state_dict or cvkit checkpoint; "": random
    reset_head: bool = True  # pretrained: a fresh classifier layer, not the file's
    head_lr_mult: float = 1.0  # classifier layer lr = train.lr * this (rest: train.lr)
    freeze_stages: int = 0  # freeze stages[:N] (stage 0 = stem); frozen BN stays in eval
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    topk: int = 5  # the evaluator's second accuracy: top-k (shown as top<k>)

    def __post_init__(self) -> None:
        checks = [
            (self.in_channels >= 1, f"classifier.in_channels must be >= 1, got {self.in_channels}"),
            (0.0 <= self.dropout < 1.0, f"classifier.dropout must be in [0, 1), got {self.dropout}"),
            (self.hidden_dim >= 0, f"classifier.hidden_dim must be >= 0, got {self.hidden_dim}"),
            (self.head_lr_mult > 0, f"classifier.head_lr_mult must be > 0, got {self.head_lr_mult}"),
            (self.freeze_stages >= 0, f"classifier.freeze_stages must be >= 0, got {self.freeze_stages}"),
            (0.0 <= self.label_smoothing < 1.0, "classifier.label_smoothing must be in [0, 1)"),
            (self.topk >= 1, f"classifier.topk must be >= 1, got {self.topk}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
