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

After each evaluation :class:`DetectionPictures` (``fit``'s ``on_evaluate`` hook; ``cvkit eval --out`` uses it
too) writes into the run folder, from the evaluation's own detections (no extra forward pass):

- ``val_predictions_epochNNN.png`` and ``val_predictions.png`` (the latest): the first ``num_images`` val images,
  ground truth and predictions (score >= ``score_thresh``) side by side;
- ``pr_curve.png``: per-class precision-recall at IoU 0.5, from pycocotools' accumulated precision
  (:attr:`cvkit.evaluation.coco.CocoEvaluator.pr_curves`);
- ``confusion_matrix.png``: classes + background at IoU ``iou_thresh`` and score ``score_thresh``
  (:mod:`cvkit.evaluation.detection_confusion`);

and adds the three to TensorBoard (tags ``val_predictions``, ``pr_curve``, ``confusion_matrix``, step = epoch).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run", "checkpoint_extra", "build_model", "DetectionPictures"]


class DetectionPictures:
    """The pictures of a detection evaluation (see the module docstring) for the images of ``dataset``."""

    def __init__(self, dataset: Any, class_names: Any, num_images: int = 8, score_thresh: float = 0.25,
                 iou_thresh: float = 0.5, cell_size: int = 256):
        while not hasattr(dataset, "records") and hasattr(dataset, "dataset"):
            dataset = dataset.dataset
        self.dataset = dataset
        self.class_names = [str(n) for n in class_names]
        self.num_images = num_images
        self.score_thresh = score_thresh
        self.iou_thresh = iou_thresh
        self.cell_size = cell_size
        self._cells: list[tuple[int, str, np.ndarray, float]] | None = None  # (image id, file, image, scale)

    def _fixed_images(self) -> list[tuple[int, str, np.ndarray, float]]:
        """The first ``num_images`` readable images, resized for the grid once (the same ones every time)."""
        if self._cells is None:
            from cvkit.data.errors import DataError
            from cvkit.viz.draw import fit_image

            self._cells = []
            for index, rec in enumerate(self.dataset.records):
                if len(self._cells) == self.num_images:
                    break
                try:
                    image = self.dataset.load_image(index)
                except DataError:  # unreadable (data.on_error=skip dropped it from the evaluation too)
                    continue
                small, scale = fit_image(image, self.cell_size)
                self._cells.append((int(rec.image_id), str(rec.file_name), small, scale))
        return self._cells

    def __call__(self, epoch: int, evaluator: Any, logger: Any) -> None:
        """``fit``'s hook: write the pictures into the run folder and add them to TensorBoard."""
        self.write(evaluator, logger.run_dir, epoch=epoch, logger=logger)

    def write(self, evaluator: Any, out_dir: str | os.PathLike, epoch: int | None = None,
              logger: Any = None) -> dict[str, Path]:
        """Write the pictures of ``evaluator``'s last evaluation into ``out_dir``; returns them by name."""
        import cv2

        from cvkit.evaluation.detection_confusion import DetectionConfusion
        from cvkit.viz.confusion import plot_confusion_matrix
        from cvkit.viz.draw import comparison_grid, save_image
        from cvkit.viz.plots import plot_pr_curves

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        detections = evaluator.detections()
        written: dict[str, Path] = {}
        cells = [cell for cell in self._fixed_images() if cell[0] in detections]
        if cells:
            grid = comparison_grid(
                [small for _, _, small, _ in cells],
                [(evaluator.ground_truth[i][0] * scale, evaluator.ground_truth[i][1]) for i, _, _, scale in cells],
                [(detections[i][0] * scale, detections[i][1], detections[i][2]) for i, _, _, scale in cells],
                self.class_names, self.score_thresh, self.cell_size, titles=[name for _, name, _, _ in cells])
            latest = out_dir / "val_predictions.png"
            if epoch is None:
                written["val_predictions"] = save_image(latest, grid)
            else:
                numbered = save_image(out_dir / f"val_predictions_epoch{epoch:03d}.png", grid)
                tmp = latest.with_name(f".{latest.name}.tmp.png")
                shutil.copyfile(numbered, tmp)
                os.replace(tmp, latest)  # readers never see half a picture
                written["val_predictions"] = latest
        curves = evaluator.pr_curves
        if curves is not None:
            title = f"precision-recall per class, IoU {curves.iou_thresh:g} (pycocotools, maxDets {curves.max_dets})"
            written["pr_curve"] = plot_pr_curves(curves.recall, curves.precision, self.class_names,
                                                 out_dir / "pr_curve.png", title=title)
        confusion = DetectionConfusion(len(self.class_names), self.iou_thresh, self.score_thresh)
        for image_id, (boxes, scores, labels) in detections.items():
            gt_boxes, gt_labels = evaluator.ground_truth[image_id]
            confusion.update(gt_boxes, gt_labels, boxes, scores, labels)
        written["confusion_matrix"] = plot_confusion_matrix(
            confusion.matrix, [*self.class_names, "background"], out_dir / "confusion_matrix.png",
            title=confusion.title(), xlabel="predicted (background: missed)",
            ylabel="ground truth (background: false positive)")
        if logger is not None and epoch is not None:
            for tag, path in written.items():
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is not None:  # just written: None only if the file vanished meanwhile
                    logger.add_image(tag, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), epoch)
        return written


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
    pictures = DetectionPictures(val_set, class_names) if cfg.train.plots else None
    return fit(model, criterion, postprocessor, train_loader, val_loader, cfg.train, Path(run_dir),
               evaluator=evaluator, resume=resume, extra_state=extra, input_size=tuple(cfg.transforms.size),
               on_evaluate=pictures)
