"""``grouped_nms_mask``: per-group greedy NMS as a fixed-shape mask, against a plain loop over ``nms`` per group,
in its three forms (the custom op, the torchvision form for TorchScript, and the ONNX translation on
onnxruntime), on boxes built to sit just above and just below the IoU threshold."""

import pytest
import torch

from cvkit.ops import nms
from cvkit.ops.grouped_nms import grouped_nms_mask, grouped_nms_mask_torchvision

IOU = 0.5


SCORE = 0.2


def reference_mask(boxes: torch.Tensor, scores: torch.Tensor, iou: float, score: float = SCORE) -> torch.Tensor:
    """A loop over the groups, each through cvkit's ``nms`` on the boxes scoring above ``score``."""
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    for g in range(scores.shape[0]):
        above = (scores[g] > score).nonzero().flatten()
        mask[g, above[nms(boxes[g, above], scores[g, above], iou)]] = True
    return mask


def _groups(num_groups: int = 6, k: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes, plus in every group pairs whose IoU is just above and just below ``IOU``."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_groups, k, 2, generator=gen) * 80
    wh = torch.rand(num_groups, k, 2, generator=gen) * 30 + 4
    boxes = torch.cat([xy, xy + wh], dim=-1)
    # box 1 is box 0 shifted right by s: IoU = (10 - s) / (10 + s) = 0.5 at s = 10/3
    for g in range(num_groups):
        shift = 10 / 3 + (0.01 if g % 2 else -0.01)  # odd groups: IoU just below 0.5 (kept), even: above
        boxes[g, 0] = torch.tensor([100.0, 100.0, 110.0, 110.0])
        boxes[g, 1] = boxes[g, 0] + torch.tensor([shift, 0.0, shift, 0.0])
    scores = torch.rand(num_groups, k, generator=gen)
    scores[:, 0], scores[:, 1] = 1.0, 0.99
    return boxes, scores


def test_custom_op_equals_a_loop_over_nms_per_group():
    boxes, scores = _groups()
    mask = grouped_nms_mask(boxes, scores, IOU, SCORE)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert torch.equal(mask, reference_mask(boxes, scores, IOU))
    assert mask[1::2, 1].all() and not mask[0::2, 1].any()  # the pairs on either side of the threshold
    assert 0 < mask.sum() < mask.numel()  # NMS suppressed something and kept something


def test_boxes_at_or_under_the_score_threshold_are_dropped_and_suppress_nothing():
    box = torch.tensor([10.0, 10.0, 50.0, 50.0])
    boxes = torch.stack([box, box, box + 1])[None]  # three heavily overlapping boxes
    scores = torch.tensor([[SCORE, SCORE - 0.1, SCORE + 0.1]])  # only the last is above the threshold
    for fn in (lambda: grouped_nms_mask(boxes, scores, IOU, SCORE),
               lambda: grouped_nms_mask_torchvision(boxes, scores, IOU, SCORE)):
        assert fn().tolist() == [[False, False, True]]
    scores = torch.tensor([[SCORE + 0.3, SCORE - 0.1, SCORE + 0.1]])  # the best suppresses the other one above
    assert grouped_nms_mask(boxes, scores, IOU, SCORE).tolist() == [[True, False, False]]


def test_groups_do_not_suppress_each_other():
    box = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    boxes = box.expand(4, 1, 4).clone()  # the same box in four groups
    assert grouped_nms_mask(boxes, torch.rand(4, 1) + SCORE, IOU, SCORE).all()


def test_torchvision_form_equals_the_custom_op():
    boxes, scores = _groups(seed=1)
    got = grouped_nms_mask_torchvision(boxes, scores, IOU, SCORE)
    assert torch.equal(got, grouped_nms_mask(boxes, scores, IOU, SCORE))


def test_empty_groups():
    assert grouped_nms_mask(torch.zeros(0, 5, 4), torch.zeros(0, 5), IOU, SCORE).shape == (0, 5)
    assert grouped_nms_mask(torch.zeros(3, 0, 4), torch.zeros(3, 0), IOU, SCORE).shape == (3, 0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\[G, K, 4\]"):
        grouped_nms_mask(torch.zeros(2, 5, 4), torch.zeros(2, 4), IOU, SCORE)


def test_onnx_translation_on_onnxruntime_equals_the_custom_op(tmp_path):
    """The op inside an exported graph becomes NonMaxSuppression; onnxruntime gives the same mask, also for
    a number of groups other than the example's (a dynamic axis)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import contextlib
    import io
    import warnings

    from cvkit.ops.grouped_nms import onnx_translation

    class Module(torch.nn.Module):
        def forward(self, boxes, scores):
            return torch.ops.cvkit.grouped_nms_mask(boxes, scores, IOU, SCORE)

    boxes, scores = _groups()
    groups = torch.export.Dim("groups", min=1, max=64)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Module(), (boxes, scores), str(tmp_path / "nms.onnx"), input_names=["boxes", "scores"],
                          dynamic_shapes={"boxes": {0: groups}, "scores": {0: groups}}, dynamo=True,
                          custom_translation_table=onnx_translation())
    session = ort.InferenceSession(str(tmp_path / "nms.onnx"), providers=["CPUExecutionProvider"])
    for b, s in (_groups(), _groups(num_groups=9, seed=3)):
        (got,) = session.run(None, {"boxes": b.numpy(), "scores": s.numpy()})
        assert got.dtype == bool
        assert torch.equal(torch.from_numpy(got), reference_mask(b, s, IOU))
