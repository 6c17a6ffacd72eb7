"""``GraphPostprocessor`` (the postprocess inside exported graphs) gives :class:`DetectionPostprocessor`'s
detections: both score activations, per-class and class-agnostic NMS, both NMS forms, fewer candidates than
``max_detections``, none at all, and traced by TorchScript at another batch size than the example's."""

import pytest
import torch

from cvkit.postprocess import DetectionPostprocessor, GraphPostprocessor, PostprocessConfig

SIZE = (90, 120)  # (height, width): boxes are clipped to it
NUM_CLASSES = 4
NUM_ANCHORS = 600


def _outputs(batch: int, activation: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, NUM_ANCHORS, NUM_CLASSES + (activation == "softmax"), generator=gen) * 2 - 1.5
    xy = torch.rand(NUM_ANCHORS, 2, generator=gen) * torch.tensor([110.0, 80.0])
    anchors = torch.cat([xy, xy + torch.rand(NUM_ANCHORS, 2, generator=gen) * 40 + 6], dim=1)
    deltas = torch.randn(batch, NUM_ANCHORS, 4, generator=gen) * 0.5
    return {"cls_logits": logits, "bbox_deltas": deltas, "anchors": anchors}


def _assert_same(graph_out, reference: list[dict[str, torch.Tensor]], max_detections: int) -> None:
    boxes, scores, labels, num = graph_out
    assert boxes.shape[1] == scores.shape[1] == labels.shape[1] == max_detections
    assert labels.dtype == num.dtype == torch.int64
    for b, ref in enumerate(reference):
        n = int(num[b])
        assert n == len(ref["scores"])
        assert torch.equal(labels[b, :n], ref["labels"])
        assert torch.allclose(scores[b, :n], ref["scores"])
        assert torch.allclose(boxes[b, :n], ref["boxes"], atol=1e-4)
        # padding: zero boxes and scores, label -1
        assert not boxes[b, n:].any() and not scores[b, n:].any() and (labels[b, n:] == -1).all()


CASES = [
    ("sigmoid", dict(score_thresh=0.05, iou_thresh=0.45, pre_nms_topk=100, max_detections=50)),
    ("softmax", dict(score_thresh=0.05, iou_thresh=0.45, pre_nms_topk=100, max_detections=50)),
    ("sigmoid", dict(score_thresh=0.05, iou_thresh=0.5, pre_nms_topk=80, max_detections=40, class_agnostic=True)),
    ("softmax", dict(score_thresh=0.3, iou_thresh=0.6, pre_nms_topk=0, max_detections=1000)),  # fewer than D
]


@pytest.mark.parametrize("nms", ["torchvision", "custom_op"])
@pytest.mark.parametrize("activation,fields", CASES)
def test_same_detections_as_the_postprocessor(activation, fields, nms):
    cfg = PostprocessConfig(**fields)
    outputs = _outputs(3, activation)
    want = DetectionPostprocessor(cfg, score_activation=activation)(outputs, [SIZE] * 3)
    graph = GraphPostprocessor(cfg, NUM_CLASSES, NUM_ANCHORS, SIZE, score_activation=activation, nms=nms)
    got = graph(outputs["cls_logits"], outputs["bbox_deltas"], outputs["anchors"])
    pool = NUM_ANCHORS * NUM_CLASSES if cfg.class_agnostic else NUM_CLASSES * (cfg.pre_nms_topk or NUM_ANCHORS)
    _assert_same(got, want, min(cfg.max_detections, pool))
    assert all(0 < len(w["scores"]) for w in want)
    if fields["max_detections"] == 1000:
        assert all(len(w["scores"]) < graph.max_detections for w in want)  # the padding case is exercised


def test_no_detection_above_the_threshold_gives_only_padding():
    outputs = _outputs(2, "sigmoid")
    graph = GraphPostprocessor(PostprocessConfig(score_thresh=0.999999), NUM_CLASSES, NUM_ANCHORS, SIZE,
                               score_activation="sigmoid")
    boxes, scores, labels, num = graph(outputs["cls_logits"] - 30, outputs["bbox_deltas"], outputs["anchors"])
    assert num.tolist() == [0, 0] and (labels == -1).all() and not scores.any() and not boxes.any()


def test_traced_graph_runs_other_batch_sizes():
    cfg = PostprocessConfig(score_thresh=0.05, max_detections=60)
    graph = GraphPostprocessor(cfg, NUM_CLASSES, NUM_ANCHORS, SIZE, score_activation="sigmoid")
    example = _outputs(2, "sigmoid")
    with torch.no_grad():
        traced = torch.jit.trace(graph, tuple(example.values()), check_trace=False)
    for batch in (1, 5):
        outputs = _outputs(batch, "sigmoid", seed=batch)
        want = DetectionPostprocessor(cfg, score_activation="sigmoid")(outputs, [SIZE] * batch)
        _assert_same(traced(*outputs.values()), want, 60)


def test_soft_nms_and_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="hard NMS only"):
        GraphPostprocessor(PostprocessConfig(soft_nms="linear"), NUM_CLASSES, NUM_ANCHORS, SIZE)
    with pytest.raises(ValueError, match="nms must be"):
        GraphPostprocessor(PostprocessConfig(), NUM_CLASSES, NUM_ANCHORS, SIZE, nms="numba")
