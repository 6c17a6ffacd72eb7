"""ClassificationEvaluator against hand-computed cases."""

import math

import pytest
import torch

from cvkit.evaluation.classification import ClassificationEvaluator, confusion_matrix, topk_correct


def test_hand_computed_metrics_and_confusion():
    # scores (4 samples, 3 classes), labels 0, 2, 2, 1
    scores = torch.tensor([[3.0, 2, 1], [1, 3, 2], [1, 2, 3], [3, 1, 2]])
    labels = torch.tensor([0, 2, 2, 1])
    ev = ClassificationEvaluator(["a", "b", "c"], topk=2)
    ev.update(scores[:2], {"labels": labels[:2]})
    ev.update(scores[2:], {"labels": labels[2:]})
    metrics = ev.compute()
    # top-1 predictions 0, 1, 2, 0 -> hits: sample 0 and 2 -> 2/4
    assert metrics["accuracy"] == pytest.approx(0.5)
    # top-2 sets {0,1}, {1,2}, {2,1}, {0,2} -> label in set for samples 0, 1, 2 -> 3/4
    assert metrics["top2"] == pytest.approx(0.75)
    # per class: a 1/1, b 0/1, c 1/2 -> mean 0.5
    assert [r["accuracy"] for r in ev.per_class] == [1.0, 0.0, 0.5]
    assert metrics["accuracy_class_mean"] == pytest.approx(0.5)
    assert ev.confusion.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert ev.confusion.trace().item() / ev.confusion.sum().item() == metrics["accuracy"]
    text = ev.report()
    assert "true\\pred" in text and "0.5000" in text
    assert ev.table_metrics == ("accuracy", "top2")


def test_topk_larger_than_classes_is_one_and_ties_go_to_lower_index():
    ev = ClassificationEvaluator(["a", "b"], topk=5)
    ev.update(torch.zeros(3, 2), torch.tensor([0, 1, 1]))  # all tied: argmax picks class 0
    metrics = ev.compute()
    assert metrics["top5"] == 1.0
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert ev.confusion.tolist() == [[1, 0], [2, 0]]


def test_class_without_samples_is_nan_and_left_out_of_the_mean():
    ev = ClassificationEvaluator(["a", "b", "c"])
    ev.update(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), torch.tensor([0, 0]))
    metrics = ev.compute()
    assert math.isnan(ev.per_class[2]["accuracy"]) and math.isnan(ev.per_class[1]["accuracy"])
    assert metrics["accuracy_class_mean"] == pytest.approx(0.5)


def test_reset_and_errors():
    ev = ClassificationEvaluator(["a", "b"])
    with pytest.raises(RuntimeError):
        ev.compute()
    with pytest.raises(ValueError):
        ev.update(torch.zeros(2, 3), torch.tensor([0, 1]))  # wrong number of classes
    with pytest.raises(ValueError):
        ev.update(torch.zeros(2, 2), torch.tensor([0, 2]))  # label outside 0..C-1
    ev.update(torch.eye(2), torch.tensor([0, 1]))
    ev.reset()
    assert ev.num_samples == 0 and ev.confusion.sum() == 0


def test_helpers():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert topk_correct(scores, torch.tensor([2, 1]), 2).tolist() == [True, True]
    assert topk_correct(scores, torch.tensor([2, 1]), 1).tolist() == [False, False]
    assert confusion_matrix(torch.tensor([1, 0]), torch.tensor([2, 1]), 3).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
