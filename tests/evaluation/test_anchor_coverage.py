"""Anchor coverage report: statuses against an independent per-image torchvision computation, tables, plot."""

import json

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import SSDMatcher
from torchvision.ops import box_iou as tv_box_iou

from cvkit.evaluation import SIZE_BUCKETS, STATUSES, CoverageReport, anchor_coverage
from cvkit.ops import AnchorGenerator, MatcherConfig

SSD300_FEATURES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


@pytest.fixture(scope="module")
def generator():
    return AnchorGenerator.ssd300()


@pytest.fixture(scope="module")
def anchors(generator):
    return generator(SSD300_FEATURES, (300, 300)).clone()


def coverage(samples, generator, matcher=None, **kwargs):
    return anchor_coverage(samples, generator, SSD300_FEATURES, (300, 300), matcher, **kwargs)


def random_samples(num_images, seed, image=(300, 300)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num_images):
        m = int(torch.randint(0, 8, (1,), generator=g))
        size = torch.exp(torch.empty(m, 2).uniform_(np.log(3), np.log(250), generator=g))
        xy = torch.rand(m, 2, generator=g) * (torch.tensor([image[1], image[0]]) - size).clamp(min=1)
        out.append((image, torch.cat((xy, xy + size), 1).numpy()))
    return out


def expected_statuses(samples, anchors, pos_thresh):
    """Per box: 0 matched (a positive with IoU >= t), 1 low-quality only, 2 no positive with IoU > 0."""
    statuses, best = [], []
    for _, boxes in samples:
        boxes = torch.as_tensor(boxes)
        if boxes.shape[0] == 0:
            continue
        iou = tv_box_iou(boxes, anchors)  # [M, A]
        matches = SSDMatcher(pos_thresh)(iou)
        for m in range(boxes.shape[0]):
            mine = matches == m
            ious = iou[m, mine]
            statuses.append(0 if (ious >= pos_thresh).any() else (1 if (ious > 0).any() else 2))
        best.append(iou.max(1).values)
    return np.array(statuses), torch.cat(best).numpy() if best else np.zeros(0)


def test_statuses_equal_an_independent_per_image_computation(generator, anchors):
    samples = random_samples(40, seed=0)
    report = coverage(samples, generator, batch_size=7)
    statuses, best = expected_statuses(samples, anchors, 0.5)
    assert report.num_boxes == len(statuses) > 100
    assert np.array_equal(report.status, statuses)
    assert np.array_equal(report.best_iou, best)
    # all three outcomes occur on this data (tiny boxes are only low-quality matches)
    assert set(report.status.tolist()) >= {0, 1}
    # batching does not change anything
    again = coverage(samples, generator, batch_size=64)
    for name in ("best_iou", "best_level", "bucket", "status", "num_positives"):
        assert np.array_equal(getattr(report, name), getattr(again, name))


def test_hand_made_cases(generator, anchors):
    exact = anchors[100].tolist()  # an anchor of level 0 (38x38)
    big = anchors[-1].tolist()  # the last anchor: level 5
    tiny = [150.0, 150.0, 152.0, 152.0]
    samples = [
        ((300, 300), [exact, big]),
        ((300, 300), [tiny]),
        ((300, 300), [tiny, tiny]),  # duplicates: the later box takes the shared best anchor
        ((300, 300), np.zeros((0, 4), np.float32)),
    ]
    report = coverage(samples, generator)
    assert report.num_images == 4 and report.num_boxes == 5
    assert report.best_iou[0] == pytest.approx(1.0) and report.best_level[0] == 0
    assert report.best_iou[1] == pytest.approx(1.0) and report.best_level[1] == 5
    assert report.status.tolist() == [0, 0, 1, 2, 1]
    assert report.num_positives[3] == 0 and report.num_positives[4] >= 1
    none = coverage(samples, generator, MatcherConfig(low_quality="none"))
    assert none.status.tolist() == [0, 0, 2, 2, 2]


def test_resize_and_size_buckets(generator):
    boxes = np.array([[10, 10, 30, 30], [50, 50, 100, 100], [0, 0, 200, 150]], dtype=np.float32)
    at_input = coverage([((300, 300), boxes)], generator)
    # the same objects in a 600x900 (HxW) image: boxes are stretched back onto the 300x300 input
    scaled = boxes * np.array([3, 2, 3, 2], dtype=np.float32)
    original = coverage([((600, 900), scaled)], generator)
    assert np.allclose(original.best_iou, at_input.best_iou, atol=1e-5)
    assert np.array_equal(original.status, at_input.status)
    # buckets use the original pixels: 20x20 -> small, 50x50 -> medium, 200x150 -> large at 300x300 ...
    assert at_input.bucket.tolist() == [0, 1, 2]
    # ... and 60x40 (medium), 150x100 (large), 600x300 (large) in the 600x900 image
    assert original.bucket.tolist() == [1, 2, 2]
    not_resized = coverage([((600, 900), scaled)], generator, resize=False)
    assert not np.allclose(not_resized.best_iou, at_input.best_iou)


def test_degenerate_boxes_and_limits(generator):
    samples = [((300, 300), [[10, 10, 10, 40], [5, 5, 50, 60], [20, 20, 10, 30], [0, 0, float("nan"), 3]])] * 5
    report = coverage(samples, generator, max_images=3)
    assert report.num_images == 3
    assert report.num_degenerate == 9 and report.num_boxes == 3


def test_tables_text_json_and_plot(generator, tmp_path):
    report = coverage(random_samples(20, seed=1), generator)
    by_size = report.by_size()
    assert list(by_size) == [name for name, _, _ in SIZE_BUCKETS] + ["all"]
    assert sum(row["boxes"] for name, row in by_size.items() if name != "all") == by_size["all"]["boxes"]
    for row in list(by_size.values()) + list(report.by_level().values()):
        if row["boxes"]:
            assert sum(row[s] for s in STATUSES) == pytest.approx(1.0, abs=1e-3)
    assert sum(row["boxes"] for row in report.by_level().values()) == report.num_boxes
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["num_boxes"] == report.num_boxes
    assert sum(summary["best_iou_histogram"]["counts"]) == report.num_boxes
    text = report.format()
    assert "by object size" in text and "L0 38x38 /8" in text and "L5 1x1 /300" in text
    assert any("small objects" in w for w in report.warnings())
    png = report.save_plot(tmp_path / "sub" / "coverage.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_dataset(generator, tmp_path):
    report = coverage([], generator)
    assert report.num_images == 0 and report.num_boxes == 0
    assert report.by_size()["all"]["boxes"] == 0
    assert "0 boxes" in report.format()
    assert isinstance(report, CoverageReport)
    report.save_plot(tmp_path / "empty.png")
