"""The classification run: data, model, criterion, evaluator -> :func:`cvkit.engine.train.fit`; and k-fold.

    rows = run(cfg, run_dir)               # one run on data.train_split, validated on data.val_split
    folds = run(cfg, run_dir, kfold=5)     # 5-fold cross-validation on the train split (d2l 5.7)

``cfg`` is a :class:`cvkit.run_config.RunConfig` with ``data.format`` synthetic_cls or image_folder and the
``cls_train`` / ``cls_eval`` presets; the model comes from the ``classifier:`` section
(:class:`cvkit.models.classification.ClassifierConfig`, passed explicitly or read as ``cfg.classifier``).
The model returns logits (B, C) in train and eval alike; the criterion is cross-entropy; there is no
postprocessor (the evaluator takes the logits).

Run folder (besides what ``fit`` writes: metrics.csv with ``accuracy`` / ``top5`` per epoch, losses.png and
metrics.png curves, checkpoints, eval_report.txt with the per-class table and the confusion matrix)::

    confusion.png   the confusion matrix of the last evaluation
    kfold.json      (k-fold) per-fold rows and the mean and standard deviation of the accuracy; each fold
                    trains in <run_dir>/fold<i>

Checkpoints carry ``extra = {"config", "task": "classify", "class_names", "preprocess": {size, mean, std,
interpolation, cls_resize_ratio}}`` so ``infer`` needs nothing else.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from cvkit.config import ConfigError, to_dict
from cvkit.models.classification.config import ClassifierConfig

__all__ = ["run", "run_kfold", "kfold_splits", "checkpoint_extra", "check_config", "build_model",
           "load_classify_config", "CLASSIFY_FORMATS"]

CLASSIFY_FORMATS = ("synthetic_cls", "image_folder")


def _classifier_cfg(cfg: Any, classifier: ClassifierConfig | None) -> ClassifierConfig:
    if classifier is not None:
        return classifier
    return getattr(cfg, "classifier", None) or ClassifierConfig()


def check_config(cfg: Any, classifier: ClassifierConfig, evaluator_metrics: tuple[str, ...]) -> None:
    """Refuse configs that cannot train a classifier, naming the key to change."""
    if cfg.data.format not in CLASSIFY_FORMATS:
        raise ConfigError(f"task classify needs data.format in {CLASSIFY_FORMATS}, got {cfg.data.format!r}")
    for key in ("train_preset", "eval_preset"):
        if not getattr(cfg.transforms, key).startswith("cls_"):
            raise ConfigError(f"task classify needs classification presets: transforms.{key}="
                              f"{getattr(cfg.transforms, key)!r} (use cls_train / cls_eval)")
    monitor = cfg.train.monitor
    if monitor not in evaluator_metrics and not monitor.startswith("val_"):
        raise ConfigError(f"train.monitor={monitor!r} is not a classification metric; use one of "
                          f"{list(evaluator_metrics)} or val_loss")
    if classifier.in_channels != 3:
        raise ConfigError("classifier.in_channels must be 3 for runs (the data pipeline gives RGB images); "
                          "other values are for using the models as a library")


def checkpoint_extra(cfg: Any, classifier: ClassifierConfig, class_names: tuple[str, ...]) -> dict[str, Any]:
    """What a classification checkpoint carries so that infer needs nothing else."""
    config = to_dict(cfg)
    config["classifier"] = to_dict(classifier)  # the section actually used (run may be given one explicitly)
    config["task"] = "classify"
    return {
        "config": config,
        "task": "classify",
        "class_names": list(class_names),
        "preprocess": {
            "size": list(cfg.transforms.size),
            "mean": list(cfg.transforms.mean),
            "std": list(cfg.transforms.std),
            "interpolation": cfg.transforms.interpolation,
            "cls_resize_ratio": cfg.transforms.cls_resize_ratio,
        },
    }


def build_model(cfg: Any, classifier: ClassifierConfig, num_classes: int) -> tuple[torch.nn.Module, Any]:
    """``(model, criterion)`` for ``num_classes`` classes at the input size ``cfg.transforms.size``, normalizing
    its uint8 input with ``cfg.transforms.mean`` / ``std``; the model's random init is seeded from ``train.seed``."""
    from cvkit.engine.seed import seed_everything
    from cvkit.losses.classification import ClassificationLoss
    from cvkit.models.classification.build import build_classifier

    seed_everything(cfg.train.seed)
    model = build_classifier(classifier, num_classes, image_size=tuple(cfg.transforms.size),
                             mean=cfg.transforms.mean, std=cfg.transforms.std)
    return model, ClassificationLoss(classifier.label_smoothing)


def _fit_once(cfg: Any, classifier: ClassifierConfig, train_set: Any, val_set: Any, class_names: tuple[str, ...],
              run_dir: Path, resume: str | os.PathLike | None) -> tuple[list[dict[str, float]], Any]:
    from cvkit.data.loader import loader_from_config
    from cvkit.engine.train import fit
    from cvkit.evaluation.classification import ClassificationEvaluator
    from cvkit.transforms.presets import build_transform
    from cvkit.viz.confusion import plot_confusion_matrix

    evaluator = ClassificationEvaluator(class_names, topk=classifier.topk)
    check_config(cfg, classifier, ("accuracy", evaluator.topk_name, "accuracy_class_mean"))
    train_loader = loader_from_config(cfg.data, train_set, build_transform(cfg.transforms.train_preset, cfg.transforms))
    val_loader = loader_from_config(cfg.data, val_set, build_transform(cfg.transforms.eval_preset, cfg.transforms),
                                    train=False)
    model, criterion = build_model(cfg, classifier, len(class_names))
    extra = checkpoint_extra(cfg, classifier, class_names)
    rows = fit(model, criterion, None, train_loader, val_loader, cfg.train, run_dir,
               evaluator=evaluator, resume=resume, extra_state=extra)
    if evaluator.num_samples:
        evaluator.compute()
        plot_confusion_matrix(evaluator.confusion, class_names, Path(run_dir) / "confusion.png")
    return rows, evaluator


def run(cfg: Any, run_dir: str | os.PathLike, resume: str | os.PathLike | None = None, kfold: int | None = None,
        classifier: ClassifierConfig | None = None) -> list[dict[str, float]]:
    """Train a classifier into ``run_dir``; returns fit's per-epoch rows, or with ``kfold=K`` one row per fold
    (see :func:`run_kfold`). ``classifier`` defaults to ``cfg.classifier`` (else the defaults)."""
    from cvkit.data.build import build_dataset

    classifier = _classifier_cfg(cfg, classifier)
    if kfold is not None:
        if resume is not None:
            raise ValueError("--resume cannot be combined with k-fold cross-validation")
        return run_kfold(cfg, run_dir, kfold, classifier)
    train_set = build_dataset(cfg.data, "train", progress=True)
    val_set = build_dataset(cfg.data, "val", progress=True)
    class_names = tuple(train_set.class_names)
    if tuple(val_set.class_names) != class_names:
        raise ValueError(f"train classes {class_names} differ from val classes {tuple(val_set.class_names)}")
    rows, _ = _fit_once(cfg, classifier, train_set, val_set, class_names, Path(run_dir), resume)
    return rows


def kfold_splits(labels: list[int] | np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint validation index sets covering every sample once, stratified: each class's samples
    are shuffled (from ``seed``) and dealt round-robin, so fold sizes and class counts differ by at most one
    (class by class)."""
    labels = np.asarray(labels, dtype=np.int64)
    if not 2 <= k <= len(labels):
        raise ValueError(f"k-fold needs 2 <= k <= {len(labels)} samples, got k={k}")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        for j, index in enumerate(members):
            folds[(offset + j) % k].append(int(index))
        offset += len(members)  # continue the deal where the previous class stopped: balanced fold sizes
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def run_kfold(cfg: Any, run_dir: str | os.PathLike, k: int, classifier: ClassifierConfig | None = None
              ) -> list[dict[str, float]]:
    """K-fold cross-validation on the train split: fold i trains a fresh model on the other folds and
    validates on fold i (in ``run_dir/fold<i>``). Returns one row per fold ``{"fold", "accuracy", "top<k>",
    "accuracy_class_mean", "val_loss", "epochs"}`` (the last epoch's evaluation); prints the table and the
    mean ± sample standard deviation of the accuracy, and writes both to ``run_dir/kfold.json``."""
    from cvkit.data.build import build_dataset
    from cvkit.data.image_folder import ImageFolderDataset

    classifier = _classifier_cfg(cfg, classifier)
    run_dir = Path(run_dir)
    base = build_dataset(cfg.data, "train", progress=True)
    if not isinstance(base, ImageFolderDataset):  # a detection format (check_config runs later, in _fit_once)
        raise ConfigError(f"task classify needs data.format in {CLASSIFY_FORMATS}, got {cfg.data.format!r}")
    class_names = tuple(base.class_names)
    folds = kfold_splits(base.targets, k, cfg.data.seed)
    everything = np.arange(len(base))
    out: list[dict[str, float]] = []
    for i, val_index in enumerate(folds):
        train_index = np.setdiff1d(everything, val_index)
        train_set, val_set = Subset(base, train_index.tolist()), Subset(base, val_index.tolist())
        rows, evaluator = _fit_once(cfg, classifier, train_set, val_set, class_names, run_dir / f"fold{i + 1}", None)
        last = next((r for r in reversed(rows) if "accuracy" in r), {})
        out.append({
            "fold": float(i + 1),
            "accuracy": last.get("accuracy", math.nan),
            evaluator.topk_name: last.get(evaluator.topk_name, math.nan),
            "accuracy_class_mean": last.get("accuracy_class_mean", math.nan),
            "val_loss": last.get("val_loss", math.nan),
            "epochs": float(len(rows)),
        })
    accuracies = [r["accuracy"] for r in out]
    mean = statistics.fmean(accuracies)
    std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    lines = [f"{k}-fold cross-validation ({len(base)} train samples)", f"{'fold':>6} {'accuracy':>9} {'val_loss':>9}"]
    lines += [f"{int(r['fold']):>6} {r['accuracy']:>9.4f} {r['val_loss']:>9.4f}" for r in out]
    lines.append(f"accuracy: {mean:.4f} ± {std:.4f} (mean ± std over {k} folds)")
    print("\n".join(lines))
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"k": k, "folds": out, "accuracy_mean": mean, "accuracy_std": std}
    (run_dir / "kfold.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return out


def load_classify_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Any, Any]:
    """``(RunConfig, ClassifierConfig)`` of a classification YAML file with ``a.b=c`` overrides."""
    from cvkit.run_config import load_run_config

    cfg = load_run_config(Path(path), list(overrides))
    return cfg, cfg.classifier
