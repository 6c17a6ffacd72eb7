"""CocoEvaluator against pycocotools run on COCO files, and against hand-computed AP values."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cvkit.data.coco import CocoDetection
from cvkit.evaluation.coco import COCO_METRICS, CocoEvaluator, CocoResultsWriter, coco_results
from tests.data.helpers import write_coco

# 101 recall points; precision 1 up to recall 0.5 and 0 beyond: 51 of them count
HALF_RECALL_AP = 51 / 101


def _image(image_id, boxes, labels, size=(100, 100)):
    return SimpleNamespace(
        image_id=image_id,
        size=size,
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
    )


def _pred(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


GT = [
    _image(1, [[10, 10, 50, 60], [60, 20, 90, 90], [2, 2, 12, 12]], [0, 1, 1]),  # medium, medium, small
    _image(2, [[0, 0, 100, 100]], [0]),  # large
]


def test_perfect_detections_score_one():
    evaluator = CocoEvaluator(GT, ["cat", "dog"], category_ids=[3, 7])
    evaluator.update(
        [_pred(im.boxes.tolist(), [0.9] * len(im.labels), im.labels.tolist()) for im in GT],
        {"image_ids": torch.tensor([1, 2])},
    )
    metrics = evaluator.compute()
    assert set(metrics) == set(COCO_METRICS)
    for name in COCO_METRICS[:6] + ("AR100",):
        assert metrics[name] == pytest.approx(1.0), name
    assert [(r["name"], r["category_id"], r["num_gt"], r["AP"]) for r in evaluator.per_class] == [
        ("cat", 3, 2, pytest.approx(1.0)),
        ("dog", 7, 2, pytest.approx(1.0)),
    ]
    table = evaluator.report().splitlines()
    assert table[0].split() == ["class", "id", "gt", "AP", "AP50"] and table[1].split()[:3] == ["cat", "3", "2"]


def test_known_partial_cases():
    evaluator = CocoEvaluator(GT, ["cat", "dog"])
    # cat: one of two found -> AP = 51/101; dog: right box, wrong class -> 0 for dog, and a cat false
    # positive scored below the true cat detection (does not change cat's precision up to recall 0.5)
    evaluator.update([_pred([[10, 10, 50, 60], [60, 20, 90, 90]], [0.9, 0.8], [0, 0])], {"image_ids": [1]})
    evaluator.update([_pred([], [], [])], {"image_ids": [2]})
    metrics = evaluator.compute()
    cat, dog = evaluator.per_class
    assert cat["AP"] == pytest.approx(HALF_RECALL_AP) and cat["AP50"] == pytest.approx(HALF_RECALL_AP)
    assert dog["AP"] == 0.0
    assert metrics["AP"] == pytest.approx(HALF_RECALL_AP / 2)


def test_iou_between_thresholds_counts_only_at_the_lower_ones():
    # a box with IoU 0.62 with its ground truth is a hit for IoU thresholds 0.5, 0.55, 0.6 only (3 of 10)
    gt = [_image(1, [[0, 0, 100, 100]], [0], size=(200, 200))]
    evaluator = CocoEvaluator(gt, ["thing"])
    evaluator.update([_pred([[0, 0, 62, 100]], [0.5], [0])], {"image_ids": [1]})
    metrics = evaluator.compute()
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(0.0)
    assert metrics["AP"] == pytest.approx(0.3)
    assert math.isnan(metrics["APs"]) and math.isnan(metrics["APm"])  # no such ground truth: pycocotools says -1


def test_matches_pycocotools_on_coco_files(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    category_ids = [11, 4, 90]  # declared unsorted: cvkit labels follow the sorted ids 4, 11, 90
    images, annotations = [], []
    for image_id in range(1, 9):
        height, width = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        images.append({"id": image_id * 10, "file_name": f"{image_id}.png", "height": height, "width": width})
        for _ in range(int(rng.integers(0, 5))):
            w, h = float(rng.uniform(4, width / 2)), float(rng.uniform(4, height / 2))
            x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id * 10,
                    "category_id": int(rng.choice(category_ids)),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": f"class{c}"} for c in category_ids]
    ann_file = write_coco(tmp_path, images, annotations, categories)
    dataset = CocoDetection(tmp_path, "ann.json", "images")
    evaluator = CocoEvaluator.from_dataset(dataset)

    # detections: jittered ground truth (some with the wrong class) plus random false positives
    results = []
    for ann in annotations:
        if rng.random() < 0.8:
            x, y, w, h = (v + rng.normal(0, 3) for v in ann["bbox"])
            cat = ann["category_id"] if rng.random() < 0.85 else int(rng.choice(category_ids))
            results.append(
                {"image_id": ann["image_id"], "category_id": cat, "bbox": [x, y, w, h], "score": float(rng.random())}
            )
    for image in images:
        for _ in range(2):
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice(category_ids)),
                    "bbox": [float(rng.uniform(0, 50)), float(rng.uniform(0, 50)), 20.0, 15.0],
                    "score": float(rng.random() * 0.5),
                }
            )
    label_of = {c: dataset.category_ids.index(c) for c in category_ids}
    for first in range(0, len(images), 3):  # batches of up to 3 images, as a loader would give
        batch_images = images[first : first + 3]
        predictions = []
        for image in batch_images:
            own = [r for r in results if r["image_id"] == image["id"]]
            xywh = torch.tensor([r["bbox"] for r in own], dtype=torch.float64).reshape(-1, 4)
            predictions.append(
                {
                    "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
                    "scores": torch.tensor([r["score"] for r in own]),
                    "labels": torch.tensor([label_of[r["category_id"]] for r in own], dtype=torch.int64),
                }
            )
        evaluator.update(predictions, {"image_ids": torch.tensor([im["id"] for im in batch_images])})
    ours = evaluator.compute()

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        reference = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    for name, value in zip(COCO_METRICS, reference.stats):
        expected = math.nan if value < 0 else value
        assert ours[name] == pytest.approx(expected, abs=1e-6, nan_ok=True), name
    assert 0.2 < ours["AP50"] < 0.95  # a real partial case, not all-or-nothing
    precision = reference.eval["precision"]
    for row in evaluator.per_class:
        k = reference.params.catIds.index(row["category_id"])
        p = precision[:, :, k, 0, -1]
        assert row["AP"] == pytest.approx(p[p > -1].mean(), abs=1e-9)
    got_results = sorted((r["image_id"], r["category_id"], round(r["score"], 5)) for r in evaluator.results())
    assert got_results == sorted((r["image_id"], r["category_id"], round(r["score"], 5)) for r in results)


def test_coco_results_writes_xywh_and_category_ids():
    predictions = [_pred([[10, 20, 40, 60], [0, 0, 5, 5]], [0.9, 0.3], [1, 0]), _pred([], [], [])]
    assert coco_results(predictions, [7, 8], category_ids=[3, 9]) == [
        {"image_id": 7, "category_id": 9, "bbox": [10.0, 20.0, 30.0, 40.0], "score": pytest.approx(0.9)},
        {"image_id": 7, "category_id": 3, "bbox": [0.0, 0.0, 5.0, 5.0], "score": pytest.approx(0.3)},
    ]
    assert coco_results(predictions[:1], [2**40])[0]["category_id"] == 1 and coco_results([], []) == []
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        coco_results([{"boxes": torch.zeros(2, 4), "scores": torch.zeros(1), "labels": torch.zeros(2)}], [1])


def test_no_detections_and_misuse():
    evaluator = CocoEvaluator(GT, ["cat", "dog"])
    with pytest.raises(RuntimeError, match="before any update"):
        evaluator.compute()
    evaluator.update([_pred([], [], []), _pred([], [], [])], {"image_ids": [1, 2]})
    metrics = evaluator.compute()
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0
    with pytest.raises(KeyError, match="image id 99"):
        evaluator.update([_pred([], [], [])], {"image_ids": [99]})
    with pytest.raises(ValueError, match="2 predictions for 1 image ids"):
        evaluator.update([_pred([], [], []), _pred([], [], [])], {"image_ids": [1]})
    with pytest.raises(ValueError, match="distinct"):
        CocoEvaluator(GT, ["cat", "dog"], category_ids=[1, 1])
    evaluator.reset()
    with pytest.raises(RuntimeError):
        evaluator.compute()


def _random_predictions(rng, num_images, num_per_image, num_classes=2, size=100):
    predictions = []
    for _ in range(num_images):
        n = int(rng.integers(0, num_per_image + 1))
        xy = rng.uniform(0, size * 0.7, (n, 2))
        wh = rng.uniform(2, size * 0.3, (n, 2))
        predictions.append(
            {
                "boxes": torch.from_numpy(np.concatenate([xy, xy + wh], axis=1)).float(),
                "scores": torch.from_numpy(rng.random(n)).float(),
                "labels": torch.from_numpy(rng.integers(0, num_classes, n)),
            }
        )
    return predictions


def test_compact_storage_gives_the_results_and_metrics_of_the_plain_dicts(tmp_path):
    """The per-batch arrays give exactly the records of coco_results and exactly pycocotools' metrics on them
    (loadRes of those records), and write_results writes json.dumps of them, byte for byte."""
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    corners = [np.tile(rng.uniform(0, 50, (3, 2)), 2) + [0, 0, 30, 40] for _ in range(12)]
    gt = [_image(i + 1, boxes, rng.integers(0, 2, 3)) for i, boxes in enumerate(corners)]
    evaluator = CocoEvaluator(gt, ["cat", "dog"], category_ids=[3, 7])
    predictions = _random_predictions(rng, len(gt), 40)
    for first in range(0, len(gt), 5):
        ids = list(range(first + 1, min(first + 5, len(gt)) + 1))
        evaluator.update(predictions[first : first + 5], {"image_ids": torch.tensor(ids)})
    expected = coco_results(predictions, list(range(1, 13)), category_ids=[3, 7])
    assert evaluator.results() == expected and len(expected) > 100
    assert evaluator.write_results(tmp_path / "dets.json") == len(expected)
    assert (tmp_path / "dets.json").read_text() == json.dumps(expected)
    assert [p.name for p in tmp_path.iterdir()] == ["dets.json"]  # no temporary file left

    ours = evaluator.compute()
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCOeval(evaluator.coco_gt, evaluator.coco_gt.loadRes(expected), iouType="bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    expected_metrics = np.where(reference.stats >= 0, reference.stats, np.nan)
    np.testing.assert_array_equal([ours[name] for name in COCO_METRICS], expected_metrics)  # bit-identical
    assert 0 < ours["AP50"] < 1


def test_evaluator_keeps_detections_compactly():
    """Accumulated detections cost tens of bytes each (numpy arrays), not a dict per box (~500 bytes)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    gt = [_image(i, [[0, 0, 10, 10]], [0]) for i in range(1, 201)]
    evaluator = CocoEvaluator(gt, ["cat", "dog"])
    batches = [_random_predictions(rng, 20, 300) for _ in range(10)]
    num_detections = sum(len(p["scores"]) for batch in batches for p in batch)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for k, batch in enumerate(batches):
            evaluator.update(batch, {"image_ids": torch.arange(20 * k + 1, 20 * k + 21)})
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert num_detections > 20_000
    assert grown / num_detections < 64, f"{grown / num_detections:.0f} bytes per detection"


def test_labels_outside_the_classes_are_refused():
    evaluator = CocoEvaluator(GT, ["cat", "dog"])
    for label in (2, -1):
        with pytest.raises(ValueError, match=r"labels outside 0\.\.1"):
            evaluator.update([_pred([[0, 0, 5, 5]], [0.5], [label]), _pred([], [], [])], {"image_ids": [1, 2]})
    with pytest.raises(RuntimeError, match="before any update"):  # nothing was kept from the refused batches
        evaluator.compute()


def test_results_writer_streams_valid_json_atomically(tmp_path):
    records = [{"image_id": i, "category_id": i % 3, "bbox": [0.5 * i, 1.0, 2.0, 3.25], "score": 1 / (i + 1)}
               for i in range(7)]
    path = tmp_path / "dets.json"
    for chunks in ([], [[]], [records], [records[:1], [], records[1:4], records[4:]], [[r] for r in records]):
        with CocoResultsWriter(path) as writer:
            for chunk in chunks:
                writer.write(chunk)
            assert not path.exists()  # renamed onto its name only at close
        expected = [r for chunk in chunks for r in chunk]
        assert path.read_text() == json.dumps(expected) and writer.num_records == len(expected)
        path.unlink()
    # a failure leaves the previous file as it was and no temporary file
    path.write_text("previous")
    with pytest.raises(RuntimeError, match="boom"):
        with CocoResultsWriter(path) as writer:
            writer.write(records)
            raise RuntimeError("boom")
    assert path.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["dets.json"]
    # a writer dropped without close() removes its temporary file too
    writer = CocoResultsWriter(tmp_path / "other.json")
    writer.write(records)
    assert len(list(tmp_path.iterdir())) == 2
    del writer
    gc.collect()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dets.json"]
    writer = CocoResultsWriter(path)
    writer.close()
    with pytest.raises(ValueError, match="already closed"):
        writer.close()
    assert path.read_text() == "[]"


def test_pr_curves_are_cocoevals_precision_at_iou_half_per_class():
    # cat: both found (precision 1 at every recall point); dog: one of two found, behind a higher-scored miss
    evaluator = CocoEvaluator(GT, ["cat", "dog"], category_ids=[3, 7])
    assert evaluator.pr_curves is None
    evaluator.update(
        [_pred([[10, 10, 50, 60], [70, 70, 80, 80], [60, 20, 90, 90]], [0.9, 0.8, 0.7], [0, 1, 1]),
         _pred([[0, 0, 100, 100]], [0.6], [0])],
        {"image_ids": torch.tensor([1, 2])},
    )
    evaluator.compute()
    curves = evaluator.pr_curves
    assert curves.iou_thresh == 0.5 and curves.max_dets == 100
    assert curves.recall.shape == (101,) and curves.recall[0] == 0 and curves.recall[-1] == 1
    assert curves.precision.shape == (2, 101)
    assert np.allclose(curves.precision[0], 1.0)
    # dog: recall 0.5 reached at precision 1/2, never more: 0.5 up to recall 0.5, 0 beyond
    assert np.allclose(curves.precision[1], np.where(curves.recall <= 0.5, 0.5, 0.0))
    for k, row in enumerate(evaluator.per_class):  # the curve's mean is the class's AP50
        assert curves.precision[k].mean() == pytest.approx(row["AP50"])
    per_image = evaluator.detections()
    assert sorted(per_image) == [1, 2]
    boxes, scores, labels = per_image[1]
    assert boxes.shape == (3, 4) and scores.tolist() == pytest.approx([0.9, 0.8, 0.7]) and labels.tolist() == [0, 1, 1]
    assert evaluator.ground_truth[2][1].tolist() == [0]
