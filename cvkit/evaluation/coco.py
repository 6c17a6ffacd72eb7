"""COCO box metrics with pycocotools: AP, AP50, AP75, APs/m/l, AR and a per-class AP table.

Ground truth comes from the dataset in ORIGINAL image pixels (``dataset.annotations()``: each image's
``(height, width)``, xyxy boxes and labels) and is handed to pycocotools in its own terms: boxes as
``[x, y, width, height]``, label ``l`` as category id ``category_ids[l]`` (COCO files: the file's ids, see
:mod:`cvkit.data.coco`; other formats: ``l`` itself). A ground-truth box's ``area`` is ``width * height``
(COCO files' segmentation areas and ``iscrowd`` regions are not used: cvkit readers drop crowd boxes).

Predictions are the postprocessor's per-image dicts ``{"boxes": float32 [n, 4] xyxy original pixels,
"scores": [n], "labels": int64 [n]}`` in batch order, with ``batch["image_ids"]``::

    evaluator = CocoEvaluator.from_dataset(val_dataset)
    for batch in val_loader:
        images = batch_images(batch)  # cvkit.data.batch_images: uint8 -> normalized float32
        evaluator.update(postprocessor(model(images), image_sizes, batch["orig_sizes"]), batch)
    metrics = evaluator.compute()   # {"AP": ..., "AP50": ..., ...}
    print(evaluator.report())       # per-class table

Metric values follow pycocotools (maxDets 100 for AP; area ranges small < 32^2 <= medium < 96^2 <= large);
a value pycocotools reports as -1 (no ground truth in that range) is ``nan`` here. Only images passed to
:meth:`CocoEvaluator.update` are evaluated.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from cvkit._arrays import as_numpy as _numpy

__all__ = ["CocoEvaluator", "COCO_METRICS", "coco_results"]

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _quiet() -> contextlib.redirect_stdout:
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints progress lines


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    out = boxes.astype(np.float64, copy=True).reshape(-1, 4)
    out[:, 2:] -= out[:, :2]
    return out


def coco_results(
    predictions: Sequence[Mapping[str, Any]], image_ids: Sequence[int], category_ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """Per-image detections as a COCO results list: ``{"image_id", "category_id", "bbox": [x, y, w, h],
    "score"}`` per box, in the order given.

    ``predictions[i]`` belongs to ``image_ids[i]`` and holds ``boxes`` xyxy ``[n, 4]`` in original-image
    pixels, ``scores [n]`` and ``labels [n]``; label ``l`` is written as ``category_ids[l]`` (default ``l``).
    This is the file format of ``--results`` files and of pycocotools' ``loadRes``.
    """
    out: list[dict[str, Any]] = []
    for image_id, pred in zip(image_ids, predictions, strict=True):
        boxes = _xyxy_to_xywh(_numpy(pred["boxes"], np.float64)).tolist()
        scores = _numpy(pred["scores"], np.float64).reshape(-1).tolist()
        labels = _numpy(pred["labels"], np.int64).reshape(-1).tolist()
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
        for box, score, label in zip(boxes, scores, labels):
            category = label if category_ids is None else int(category_ids[label])
            out.append({"image_id": int(image_id), "category_id": category, "bbox": box, "score": score})
    return out


class CocoEvaluator:
    """Accumulate detections per image and score them with ``pycocotools.cocoeval.COCOeval`` (bbox).

    ``images``: one entry per image with ``image_id``, ``size`` ``(height, width)``, ``boxes`` xyxy
    ``[M, 4]`` in those pixels and ``labels`` ``[M]`` in ``0..C-1`` (``cvkit.data.dataset.ImageAnnotation``).
    ``category_ids[l]`` is the id written for label ``l`` (default: ``l``).
    """

    table_metrics = ("AP", "AP50")  # the metrics fit's console table shows

    def __init__(
        self,
        images: Iterable[Any],
        class_names: Sequence[str],
        category_ids: Sequence[int] | None = None,
    ):
        from pycocotools.coco import COCO

        self.class_names = tuple(class_names)
        num_classes = len(self.class_names)
        ids = list(range(num_classes)) if category_ids is None else [int(c) for c in category_ids]
        if len(ids) != num_classes or len(set(ids)) != num_classes:
            raise ValueError(f"category_ids must be {num_classes} distinct ids, got {ids}")
        self.category_ids = tuple(ids)
        gt_images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        num_gt = np.zeros(num_classes, dtype=np.int64)
        for image in images:
            height, width = (int(v) for v in image.size)
            gt_images.append({"id": int(image.image_id), "height": height, "width": width})
            boxes = _xyxy_to_xywh(_numpy(image.boxes, np.float64))
            labels = _numpy(image.labels, np.int64).reshape(-1)
            for box, label in zip(boxes.tolist(), labels.tolist()):
                if not 0 <= label < num_classes:
                    raise ValueError(f"image {image.image_id}: label {label} outside 0..{num_classes - 1}")
                num_gt[label] += 1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": int(image.image_id),
                        "category_id": self.category_ids[label],
                        "bbox": box,
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                )
        self.num_gt = num_gt
        self.coco_gt = COCO()
        self.coco_gt.dataset = {
            "images": gt_images,
            "annotations": annotations,
            "categories": [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names)],
        }
        with _quiet():
            self.coco_gt.createIndex()
        self.per_class: list[dict[str, Any]] = []
        self.reset()

    @classmethod
    def from_dataset(cls, dataset: Any) -> CocoEvaluator:
        """The evaluator of a cvkit detection dataset (wrappers with a ``.dataset`` attribute are unwrapped)."""
        while not hasattr(dataset, "annotations") and hasattr(dataset, "dataset"):
            dataset = dataset.dataset
        if not hasattr(dataset, "annotations"):
            raise TypeError(f"{type(dataset).__name__} has no annotations(): not a cvkit detection dataset")
        return cls(dataset.annotations(), dataset.class_names, getattr(dataset, "category_ids", None))

    def reset(self) -> None:
        """Forget the detections seen so far."""
        self._image_ids: list[int] = []
        self._results: list[dict[str, Any]] = []

    def update(self, predictions: Sequence[Mapping[str, Any]], batch: Mapping[str, Any]) -> None:
        """Add one batch's detections (original-image xyxy boxes) for ``batch["image_ids"]``."""
        image_ids = _numpy(batch["image_ids"], np.int64).reshape(-1).tolist()
        if len(image_ids) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
        for image_id in image_ids:
            if image_id not in self.coco_gt.imgs:
                raise KeyError(f"image id {image_id} is not in the ground truth")
        self._image_ids.extend(image_ids)
        self._results.extend(coco_results(predictions, image_ids, self.category_ids))

    def results(self) -> list[dict[str, Any]]:
        """The detections seen so far as a COCO results list (see :func:`coco_results`)."""
        return [dict(r) for r in self._results]

    def _coco_dt(self) -> Any:
        from pycocotools.coco import COCO

        annotations: list[dict[str, Any]] = []
        for det in self.results():
            x, y, w, h = det["bbox"]
            det.update(id=len(annotations) + 1, area=w * h, iscrowd=0)
            annotations.append(det)
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(self.coco_gt.dataset["images"]),
            "annotations": annotations,
            "categories": list(self.coco_gt.dataset["categories"]),
        }
        with _quiet():
            coco_dt.createIndex()
        return coco_dt

    def compute(self) -> dict[str, float]:
        """Run COCOeval on the images seen since :meth:`reset`; fills :attr:`per_class`; returns the metrics."""
        from pycocotools.cocoeval import COCOeval

        if not self._image_ids:
            raise RuntimeError("CocoEvaluator.compute() before any update(): no images to evaluate")
        coco_eval = COCOeval(self.coco_gt, self._coco_dt(), iouType="bbox")
        coco_eval.params.imgIds = sorted(set(self._image_ids))
        with _quiet():
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        metrics = {name: (float(v) if v >= 0 else math.nan) for name, v in zip(COCO_METRICS, coco_eval.stats)}
        precision = coco_eval.eval["precision"]  # (T iou thresholds, R recall points, K classes, A areas, M maxDets)
        order = {cat: k for k, cat in enumerate(coco_eval.params.catIds)}
        self.per_class = []
        for label, (cat, name) in enumerate(zip(self.category_ids, self.class_names)):
            p = precision[:, :, order[cat], 0, -1]
            p50 = p[0]
            self.per_class.append(
                {
                    "label": label,
                    "category_id": cat,
                    "name": name,
                    "num_gt": int(self.num_gt[label]),
                    "AP": float(p[p > -1].mean()) if (p > -1).any() else math.nan,
                    "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else math.nan,
                }
            )
        return metrics

    def report(self) -> str:
        """The per-class AP table of the last :meth:`compute` as text."""
        if not self.per_class:
            return "(no evaluation yet)"
        width = max(8, *(len(row["name"]) for row in self.per_class))
        lines = [f"{'class':<{width}} {'id':>6} {'gt':>7} {'AP':>7} {'AP50':>7}"]
        for row in self.per_class:
            lines.append(
                f"{row['name']:<{width}} {row['category_id']:>6} {row['num_gt']:>7} "
                f"{row['AP']:>7.4f} {row['AP50']:>7.4f}"
            )
        return "\n".join(lines)
