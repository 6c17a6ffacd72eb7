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
        images = batch["images"]  # uint8 (B, 3, H, W): the model normalizes them
        evaluator.update(postprocessor(model(images), image_sizes, batch["orig_sizes"]), batch)
    metrics = evaluator.compute()   # {"AP": ..., "AP50": ..., ...}
    print(evaluator.report())       # per-class table

Memory: the evaluator keeps each batch's detections as numpy arrays (about 40 bytes a detection) and
builds pycocotools' per-detection dicts only inside :meth:`CocoEvaluator.compute`, once;
:meth:`CocoEvaluator.write_results` streams them to a results file a batch at a time
(:class:`CocoResultsWriter`), so a large val set never holds a second copy of them as Python objects.

Metric values follow pycocotools (maxDets 100 for AP; area ranges small < 32^2 <= medium < 96^2 <= large);
a value pycocotools reports as -1 (no ground truth in that range) is ``nan`` here. Only images passed to
:meth:`CocoEvaluator.update` are evaluated.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import secrets
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np

from cvkit._arrays import as_numpy as _numpy

__all__ = ["CocoEvaluator", "COCO_METRICS", "PrCurves", "CocoResultsWriter", "coco_results"]

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _quiet() -> contextlib.redirect_stdout:
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints progress lines


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    out = boxes.astype(np.float64, copy=True).reshape(-1, 4)
    out[:, 2:] -= out[:, :2]
    return out


def _records(
    image_ids: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
    category_ids: Sequence[int] | None,
) -> list[dict[str, Any]]:
    """One COCO results record per row: ``image_ids [n]``, ``boxes`` xyxy ``[n, 4]``, ``scores [n]``,
    ``labels [n]`` -> ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (Python ints and floats,
    boxes and scores through float64)."""
    xywh = _xyxy_to_xywh(boxes).tolist()
    categories = labels.tolist() if category_ids is None else np.asarray(category_ids, np.int64)[labels].tolist()
    return [
        {"image_id": image_id, "category_id": category, "bbox": box, "score": score}
        for image_id, category, box, score in zip(
            image_ids.tolist(), categories, xywh, scores.astype(np.float64).tolist()
        )
    ]


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
        boxes, scores, labels = _prediction_arrays(pred, image_id)
        out.extend(_records(np.full(len(scores), int(image_id), np.int64), boxes, scores, labels, category_ids))
    return out


def _prediction_arrays(pred: Mapping[str, Any], image_id: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``boxes [n, 4]``, ``scores [n]``, ``labels`` int64 ``[n]`` of one prediction; floating boxes and scores
    keep their dtype (float64 later gives the same values), others become float64."""
    boxes = _floating(pred["boxes"]).reshape(-1, 4)
    scores = _floating(pred["scores"]).reshape(-1)
    labels = _numpy(pred["labels"], np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    return boxes, scores, labels


def _floating(values: Any) -> np.ndarray:
    array = _numpy(values, None)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def _discard(file: Any, tmp: Path) -> None:
    file.close()
    tmp.unlink(missing_ok=True)


class CocoResultsWriter:
    """Write a COCO results file (a JSON list of records) a chunk of records at a time, atomically.

    The records go to a temporary file beside ``path`` (``.<name>.<random>.tmp``); :meth:`close` ends the
    list, flushes it to disk and renames it onto ``path``, so ``path`` is either absent (or the previous
    file) or complete, never half written. :meth:`discard` (or leaving a ``with`` block by an exception, or
    a writer dropped without :meth:`close`) deletes the temporary file. The bytes equal
    ``json.dumps(all_records)``::

        with CocoResultsWriter(out / "detections_coco.json") as writer:
            for records in per_image_records:
                writer.write(records)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.num_records = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        self._file = open(self._tmp, "x", encoding="utf-8")  # noqa: SIM115 (closed by close / discard)
        self._file.write("[")
        self._finalizer = weakref.finalize(self, _discard, self._file, self._tmp)

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append ``records`` (JSON-able dicts) to the list."""
        if not records:
            return
        text = json.dumps(records if isinstance(records, list) else list(records))[1:-1]  # "[a, b]" -> "a, b"
        self._file.write(f", {text}" if self.num_records else text)
        self.num_records += len(records)

    def close(self) -> Path:
        """End the list and move the file onto ``path``; returns ``path``."""
        if not self._finalizer.alive:
            raise ValueError(f"{self.path}: the writer is already closed or discarded")
        self._file.write("]")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        self._finalizer.detach()
        return self.path

    def discard(self) -> None:
        """Delete the temporary file; ``path`` is left as it was."""
        self._finalizer()

    def __enter__(self) -> CocoResultsWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


class _Detections(NamedTuple):
    """One :meth:`CocoEvaluator.update` call's detections, concatenated over its images."""

    image_ids: np.ndarray  # int64 [n]: each detection's image id
    boxes: np.ndarray  # [n, 4] xyxy original-image pixels, as given (float32 from the postprocessor)
    scores: np.ndarray  # [n]
    labels: np.ndarray  # int64 [n] in 0..C-1


class PrCurves(NamedTuple):
    """Per-class precision-recall curves as pycocotools accumulated them (``COCOeval.eval["precision"]`` at one
    IoU threshold, all areas, the largest maxDets): precision interpolated to be non-increasing in recall, 0 at
    recall points not reached, -1 for a class without ground truth."""

    recall: np.ndarray  # float64 [R]: COCOeval's recall points (0, 0.01, ..., 1)
    precision: np.ndarray  # float64 [C, R], classes in label order
    iou_thresh: float
    max_dets: int


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
        self.ground_truth: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # image id -> (xyxy [M, 4], labels [M])
        for image in images:
            height, width = (int(v) for v in image.size)
            gt_images.append({"id": int(image.image_id), "height": height, "width": width})
            boxes = _xyxy_to_xywh(_numpy(image.boxes, np.float64))
            labels = _numpy(image.labels, np.int64).reshape(-1)
            self.ground_truth[int(image.image_id)] = (_numpy(image.boxes, np.float64).reshape(-1, 4), labels)
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
        self.pr_curves: PrCurves | None = None
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
        self._detections: list[_Detections] = []

    def update(self, predictions: Sequence[Mapping[str, Any]], batch: Mapping[str, Any]) -> None:
        """Add one batch's detections (original-image xyxy boxes) for ``batch["image_ids"]``."""
        image_ids = _numpy(batch["image_ids"], np.int64).reshape(-1).tolist()
        if len(image_ids) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
        for image_id in image_ids:
            if image_id not in self.coco_gt.imgs:
                raise KeyError(f"image id {image_id} is not in the ground truth")
        arrays = [_prediction_arrays(pred, image_id) for image_id, pred in zip(image_ids, predictions)]
        num_per_image = [len(scores) for _, scores, _ in arrays]
        if sum(num_per_image):
            boxes, scores, labels = (np.concatenate(column) for column in zip(*arrays))
            outside = labels[(labels < 0) | (labels >= len(self.class_names))]
            if outside.size:
                raise ValueError(f"labels outside 0..{len(self.class_names) - 1}: {np.unique(outside)[:10].tolist()}")
            ids = np.repeat(np.asarray(image_ids, np.int64), num_per_image)
            self._detections.append(_Detections(ids, boxes, scores, labels))
        self._image_ids.extend(image_ids)

    def detections(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The detections seen since :meth:`reset` per image id: ``(boxes [n, 4] xyxy original pixels, scores [n],
        labels [n])`` in the order given (every updated image has an entry, possibly empty)."""
        per_image: dict[int, list[_Detections]] = {image_id: [] for image_id in self._image_ids}
        for det in self._detections:
            for image_id in np.unique(det.image_ids).tolist():
                keep = det.image_ids == image_id
                per_image[image_id].append(_Detections(det.image_ids[keep], det.boxes[keep], det.scores[keep],
                                                       det.labels[keep]))
        out = {}
        for image_id, parts in per_image.items():
            if parts:
                out[image_id] = (np.concatenate([p.boxes for p in parts]).reshape(-1, 4),
                                 np.concatenate([p.scores for p in parts]), np.concatenate([p.labels for p in parts]))
            else:
                out[image_id] = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return out

    def _record_chunks(self) -> Iterator[list[dict[str, Any]]]:
        """The detections seen so far as COCO results records (see :func:`coco_results`), one list per batch."""
        for det in self._detections:
            yield _records(det.image_ids, det.boxes, det.scores, det.labels, self.category_ids)

    def results(self) -> list[dict[str, Any]]:
        """The detections seen so far as a COCO results list (see :func:`coco_results`); a large set is better
        streamed to a file with :meth:`write_results`."""
        return [record for chunk in self._record_chunks() for record in chunk]

    def write_results(self, path: str | os.PathLike) -> int:
        """Write :meth:`results` to the JSON file ``path``, a batch at a time and atomically (see
        :class:`CocoResultsWriter`); returns the number of detections written."""
        with CocoResultsWriter(path) as writer:
            for chunk in self._record_chunks():
                writer.write(chunk)
        return writer.num_records

    def _coco_dt(self) -> Any:
        from pycocotools.coco import COCO

        annotations: list[dict[str, Any]] = []
        for chunk in self._record_chunks():
            for det in chunk:
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
        at50 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
        self.pr_curves = PrCurves(
            recall=np.asarray(coco_eval.params.recThrs, np.float64),
            precision=np.stack([precision[at50, :, order[cat], 0, -1] for cat in self.category_ids]).astype(np.float64),
            iou_thresh=float(coco_eval.params.iouThrs[at50]),
            max_dets=int(coco_eval.params.maxDets[-1]),
        )
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
