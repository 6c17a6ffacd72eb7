"""A detection run: datasets and loaders, the detector (model, criterion, postprocessor), a COCO evaluator on
the val split, then :func:`cvkit.engine.train.fit`.

Reads top to bottom::

    seed (train.seed) -> datasets (data:) -> transforms and loaders (transforms:, data:)
    -> detector, criterion, postprocessor (model:, loss:, postprocess:, anchors:) -> evaluator -> fit (train:)

Everything random that is built before ``fit`` (the model's initial weights, the head's init) is drawn after
seeding from ``train.seed`` alone, so two runs of one config start from the same weights, and so does every
process of a torchrun job (``fit`` then seeds ``train.seed + rank`` for the training itself). The loaders ship
uint8 images; the detector normalizes them itself (``transforms.mean`` / ``std`` are buffers of its first
module, so its state_dict carries them). Every checkpoint carries what inference needs: the resolved config,
class names, preprocessing (size, mean, std) and the dataset's category ids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["run", "checkpoint_extra", "build_model"]


def build_model(cfg: Any, num_classes: int, postprocess: Any = None) -> tuple[Any, Any, Any]:
    """``(model, criterion, postprocessor)`` of ``cfg`` for ``num_classes`` classes; the model normalizes its
    uint8 input with ``cfg.transforms.mean`` / ``std``. ``postprocess``: a ``postprocess:`` section to use
    instead of ``cfg.postprocess`` (``cvkit infer``'s threshold overrides)."""
    from cvkit.models.build import build_detector

    return build_detector(cfg.model, cfg.loss, postprocess or cfg.postprocess, cfg.anchors, num_classes=num_classes,
                          mean=cfg.transforms.mean, std=cfg.transforms.std)


def checkpoint_extra(cfg: Any, class_names: tuple[str, ...], category_ids: Any) -> dict[str, Any]:
    """What a detection checkpoint carries so that ``cvkit infer`` needs nothing else."""
    from cvkit.run_config import to_dict

    return {
        "config": to_dict(cfg),
        "task": cfg.task,
        "class_names": list(class_names),
        "category_ids": None if category_ids is None else [int(c) for c in category_ids],
        "preprocess": {
            "size": list(cfg.transforms.size),
            "mean": list(cfg.transforms.mean),
            "std": list(cfg.transforms.std),
            "interpolation": cfg.transforms.interpolation,
        },
    }


def run(cfg: Any, run_dir: str | os.PathLike, resume: str | os.PathLike | None = None) -> list[dict[str, float]]:
    """Train the detector of ``cfg`` (a :class:`cvkit.run_config.RunConfig`) into ``run_dir``; returns fit's
    per-epoch rows."""
    from cvkit.data.build import build_dataset
    from cvkit.data.loader import loader_from_config
    from cvkit.engine.seed import seed_everything
    from cvkit.engine.train import fit
    from cvkit.evaluation.coco import CocoEvaluator
    from cvkit.transforms.presets import build_mosaic, build_transform

    seed_everything(cfg.train.seed)  # before anything random is built: the same start on every run and rank
    train_set = build_dataset(cfg.data, "train", progress=True)
    val_set = build_dataset(cfg.data, "val", progress=True)
    train_tf = build_transform(cfg.transforms.train_preset, cfg.transforms)
    val_tf = build_transform(cfg.transforms.eval_preset, cfg.transforms)
    mosaic = build_mosaic(cfg.transforms) if cfg.transforms.train_preset == "ssd_train" else None
    train_loader = loader_from_config(cfg.data, train_set, train_tf, train=True, mosaic=mosaic)
    val_loader = loader_from_config(cfg.data, val_set, val_tf, train=False)
    class_names = tuple(train_set.class_names)
    seed_everything(cfg.train.seed)  # the weights do not depend on how much the data readers drew
    model, criterion, postprocessor = build_model(cfg, len(class_names))
    evaluator = CocoEvaluator.from_dataset(val_set)
    extra = checkpoint_extra(cfg, class_names, getattr(train_set, "category_ids", None))
    return fit(model, criterion, postprocessor, train_loader, val_loader, cfg.train, Path(run_dir),
               evaluator=evaluator, resume=resume, extra_state=extra)
