"""Tiny stand-ins that follow the issue-5 contract, so engine tests need no real detector.

- ``TinyDetection``: a dataset of cvkit samples (image tensor (3, 8, 8), one box, one label).
- ``noisy``: a seeded transform (``transform(sample, seed=...)``), like cvkit's presets.
- ``TinyDetector``: ``model(images) -> {"cls_logits" (B, A, C+1), "bbox_deltas" (B, A, 4)}``, optional dropout.
- ``TinyCriterion``: ``criterion(outputs, targets) -> {"loss", "loss_cls", "loss_box"}``; optionally scaled
  by draws from numpy's and python's global generators (so resume must restore those states too).
- ``TinyPostprocessor``: ``postprocessor(outputs, image_sizes, orig_sizes) -> list of {"boxes", "scores", "labels"}``.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from cvkit.data.loader import build_dataloader

NUM_CLASSES = 3
NUM_ANCHORS = 4
SIZE = 8


class TinyDetection(torch.utils.data.Dataset):
    def __init__(self, num_images: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(num_images, 3, SIZE, SIZE, generator=g)
        self.labels = torch.randint(0, NUM_CLASSES, (num_images,), generator=g)
        xy = torch.rand(num_images, 2, generator=g) * SIZE / 2
        self.boxes = torch.cat([xy, xy + SIZE / 2], dim=1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.images[index].clone(),
            "boxes": self.boxes[index : index + 1].clone(),
            "labels": self.labels[index : index + 1].clone(),
            "image_id": index + 1,
            "orig_size": (SIZE, SIZE),
            "file_name": f"{index}.png",
        }


def noisy(sample: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = dict(sample)
    out["image"] = sample["image"] + torch.from_numpy(rng.normal(0, 0.1, sample["image"].shape).astype(np.float32))
    return out


def tiny_loader(num_images: int = 16, batch_size: int = 4, seed: int = 0, shuffle: bool = True, transform=noisy):
    return build_dataloader(
        TinyDetection(num_images), transform, batch_size=batch_size, shuffle=shuffle, num_workers=0, seed=seed
    )


class TinyDetector(nn.Module):
    def __init__(self, dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4) if batchnorm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.cls = nn.Linear(4 * SIZE * SIZE, NUM_ANCHORS * (NUM_CLASSES + 1))
        self.box = nn.Linear(4 * SIZE * SIZE, NUM_ANCHORS * 4)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.drop(torch.relu(self.norm(self.conv(images)))).flatten(1)
        batch = images.shape[0]
        return {
            "cls_logits": self.cls(x).reshape(batch, NUM_ANCHORS, NUM_CLASSES + 1),
            "bbox_deltas": self.box(x).reshape(batch, NUM_ANCHORS, 4),
        }


class TinyCriterion(nn.Module):
    """Anchor 0 predicts the first object (class l -> logit l + 1, background 0), box in units of SIZE."""

    def __init__(self, global_rng: bool = False):
        super().__init__()
        self.global_rng = global_rng
        self.calls = 0
        self.losses: list[float] = []

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        self.calls += 1
        labels = torch.stack([t["labels"][0] + 1 for t in targets])
        boxes = torch.stack([t["boxes"][0] / SIZE for t in targets])
        loss_cls = nn.functional.cross_entropy(outputs["cls_logits"][:, 0], labels)
        loss_box = nn.functional.smooth_l1_loss(outputs["bbox_deltas"][:, 0], boxes)
        if self.global_rng:  # draws that only a restored numpy / python RNG state repeats
            loss_box = loss_box * (1.0 + 0.1 * float(np.random.rand()) + 0.1 * random.random())
        loss = loss_cls + loss_box
        if torch.is_grad_enabled():
            self.losses.append(float(loss.detach()))
        return {"loss": loss, "loss_cls": loss_cls, "loss_box": loss_box}


class TinyPostprocessor:
    def __call__(self, outputs: dict, image_sizes: torch.Tensor, orig_sizes: torch.Tensor) -> list[dict]:
        probs = outputs["cls_logits"][:, 0].softmax(-1)
        scores, labels = probs[:, 1:].max(-1)
        boxes = outputs["bbox_deltas"][:, 0].float() * SIZE
        boxes = torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], dim=1)
        return [
            {"boxes": boxes[i : i + 1], "scores": scores[i : i + 1], "labels": labels[i : i + 1]}
            for i in range(len(probs))
        ]


class ScriptedEvaluator:
    """Returns the next value of ``values`` as ``AP``; counts calls and the images it saw."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0
        self.num_images = 0

    def reset(self) -> None:
        self.num_images = 0

    def update(self, predictions, batch) -> None:
        assert len(predictions) == len(batch["image_ids"])
        self.num_images += len(predictions)

    def compute(self) -> dict:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {"AP": value, "AP50": value}

    def report(self) -> str:
        return f"scripted report after {self.calls} evaluations"
