"""The detection confusion matrix: greedy matching by score on hand-made boxes, and the row/column sums."""

from __future__ import annotations

import numpy as np

from cvkit.evaluation.detection_confusion import UNMATCHED, DetectionConfusion, match_detections

GT = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], np.float32)


def test_the_higher_score_takes_the_ground_truth_first():
    # both detections overlap gt 0 (IoU 1.0 and 0.81); the 0.9 one wins though its IoU is lower
    pred = np.array([[0, 0, 10, 10], [0, 0, 9, 9]], np.float32)
    assert match_detections(GT, pred, [0.5, 0.9]).tolist() == [UNMATCHED, 0]


def test_iou_and_score_thresholds():
    pred = np.array([[0, 0, 10, 5], [20, 20, 30, 30], [50, 50, 60, 60]], np.float32)  # IoU 0.5, 1, 1
    assert match_detections(GT, pred, [0.9, 0.9, 0.1]).tolist() == [0, 1, UNMATCHED]  # 0.1 < score 0.25
    assert match_detections(GT, pred, [0.9, 0.9, 0.9], iou_thresh=0.6).tolist() == [UNMATCHED, 1, 2]
    assert match_detections(GT[:0], pred, [0.9] * 3).tolist() == [UNMATCHED] * 3
    assert match_detections(GT, pred[:0], []).tolist() == []


def test_a_detection_takes_the_best_unmatched_ground_truth():
    gt = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], np.float32)
    pred = np.array([[1, 0, 11, 10], [0, 0, 10, 10]], np.float32)  # pred 0 ties on both (IoU 9/11)
    # pred 0 first: the tie goes to the lower index, so pred 1 (IoU 1 with gt 0) is left gt 1 (IoU 2/3)
    assert match_detections(gt, pred, [0.9, 0.8]).tolist() == [0, 1]
    assert match_detections(gt, pred, [0.8, 0.9]).tolist() == [1, 0]


def test_the_matrix_rows_are_ground_truth_and_columns_predictions():
    confusion = DetectionConfusion(num_classes=3, iou_thresh=0.5, score_thresh=0.25)
    pred = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [70, 70, 80, 80], [0, 0, 10, 10], [50, 50, 60, 60]])
    confusion.update(GT, [0, 1, 2], pred, [0.9, 0.8, 0.7, 0.6, 0.1], [0, 2, 1, 0, 2])
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = 1  # gt 0 (class 0) found as class 0
    expected[1, 2] = 1  # gt 1 (class 1) found as class 2: a confusion
    expected[3, 1] = 1  # the box at 70..80 matches nothing: false positive of class 1
    expected[3, 0] = 1  # the second box on gt 0: a duplicate, false positive of class 0
    expected[2, 3] = 1  # gt 2 (class 2): its only detection scores 0.1 < 0.25, so missed
    assert confusion.matrix.tolist() == expected.tolist()
    assert confusion.matrix[:-1].sum() == 3 and confusion.matrix[:, :-1].sum() == 4  # gts; kept detections
    assert "IoU >= 0.5" in confusion.title() and "score >= 0.25" in confusion.title()
