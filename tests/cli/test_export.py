"""`cvkit export` takes images as a decoder gives them, and checkpoints written before the models normalized
their own input (state_dicts without ``normalizer.pixel_mean`` / ``pixel_std``) still load everywhere.

One untrained 64x64 resnet18 SSD (a checkpoint made without training, so the file runs in seconds), with a
mean/std that is not ImageNet's: a model that normalized with the defaults instead would give other numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cvkit.checkpoint import CHECKPOINT_FORMAT, PIXEL_STAT_KEYS, load_checkpoint, save_checkpoint
from cvkit.cli.main import main as cvkit

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)
SIZE = 64
TINY = {
    "transforms": {"size": [SIZE, SIZE], "mean": list(MEAN), "std": list(STD)},
    "anchors": {"image_size": [SIZE, SIZE], "steps": [8, 16, 32, 64, 64, 64]},
    "model": {"num_valid_extras": 0},
    "train": {"amp": False},
}
CLASSES = ("a", "b")
MAX_DET = 1000  # above the 390 anchors: no top-k cut-off, only NMS decides what is kept


def _config():
    from cvkit.run_config import run_config_from_dict

    return run_config_from_dict(TINY, "tiny")


def _detection_checkpoint(path: Path, version: int = 3, drop_pixel_stats: bool = False) -> tuple[Path, dict]:
    """A checkpoint of a fresh detector (seeded: every call gives the same weights); ``drop_pixel_stats`` writes
    it as cvkit did before version 3 (no normalizer buffers in the state_dict)."""
    from cvkit.tasks.detect import build_model, checkpoint_extra

    cfg = _config()
    torch.manual_seed(0)
    model, _, _ = build_model(cfg, len(CLASSES))
    with torch.no_grad():  # a trained-looking head: most anchors background, scores spread out
        for conv in model.head.cls_convs:
            conv.bias.view(-1, len(CLASSES) + 1)[:, 0] += 2.0
    weights = model.state_dict()
    if drop_pixel_stats:
        weights = {k: v for k, v in weights.items() if k not in PIXEL_STAT_KEYS}
    return save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "version": version, "epoch": 1, "model": weights, "ema": None,
        "extra": checkpoint_extra(cfg, CLASSES, [1, 2]),
    }), model.state_dict()


def _jpeg(path: Path, size: tuple[int, int] = (SIZE, SIZE)) -> Path:
    """A seeded smooth RGB scene with two blobs, written by OpenCV as JPEG."""
    rng = np.random.default_rng(0)
    height, width = size
    image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.circle(image, (width // 3, height // 3), height // 6, (250, 40, 40), -1)
    cv2.rectangle(image, (width // 2, height // 2), (width - 6, height - 6), (30, 200, 60), -1)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def _decoded(path: Path) -> torch.Tensor:
    """The file as a decoder gives it, as the exported graph's input: uint8 RGB (1, 3, H, W)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def _infer_record(checkpoint: Path, image: Path, out: Path) -> dict:
    assert cvkit(["infer", "--checkpoint", str(checkpoint), str(image), "--out", str(out), "--score-thresh", "0.0",
                  "--max-det", str(MAX_DET), "--no-draw"]) == 0
    return json.loads((out / f"{image.stem}.json").read_text())


def _detections(checkpoint: Path, cls_logits, bbox_deltas, anchors, orig_size) -> dict:
    """The exported raw outputs decoded by cvkit's postprocessor with infer's settings (as infer decodes)."""
    from cvkit.cli.infer import Predictor

    post = Predictor(checkpoint, score_thresh=0.0, max_det=MAX_DET).postprocessor
    outputs = {"cls_logits": torch.as_tensor(cls_logits), "bbox_deltas": torch.as_tensor(bbox_deltas),
               "anchors": torch.as_tensor(anchors)}
    det = post(outputs, torch.tensor([[SIZE, SIZE]]), torch.tensor([list(orig_size)]))[0]
    return {"boxes_xyxy": det["boxes"].tolist(), "scores": det["scores"].tolist(), "labels": det["labels"].tolist()}


def _assert_same_detections(got: dict, want: dict, score_tol: float, box_tol: float) -> None:
    assert len(want["scores"]) > 10  # something to compare
    assert len(got["scores"]) == len(want["scores"])
    assert got["labels"] == want["labels"]
    assert np.allclose(got["scores"], want["scores"], atol=score_tol, rtol=0)
    assert np.allclose(got["boxes_xyxy"], want["boxes_xyxy"], atol=box_tol, rtol=0)


def test_exported_model_on_a_decoded_jpeg_equals_cvkit_infer(tmp_path, capsys):
    checkpoint, _ = _detection_checkpoint(tmp_path / "last.pt")
    image = _jpeg(tmp_path / "scene.jpg")  # at the network input size: the decoded pixels are the input
    want = _infer_record(checkpoint, image, tmp_path / "infer")

    assert cvkit(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "model.ts")]) == 0
    assert "input uint8 (B, 3, 64, 64)" in capsys.readouterr().out
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    x = _decoded(image)
    assert x.dtype == torch.uint8
    with torch.no_grad():
        logits, deltas, anchors = exported(x)
    got = _detections(checkpoint, logits, deltas, anchors, (SIZE, SIZE))
    _assert_same_detections(got, want, score_tol=1e-5, box_tol=1e-3)

    # ONNX (dev extras install onnx, onnxscript, onnxruntime): the same on onnxruntime, input declared uint8
    ort = pytest.importorskip("onnxruntime")
    assert cvkit(["export", "--checkpoint", str(checkpoint), "--format", "onnx",
                  "--out", str(tmp_path / "model.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    logits, deltas, anchors = session.run(None, {"images": x.numpy()})
    got = _detections(checkpoint, logits, deltas, anchors, (SIZE, SIZE))
    _assert_same_detections(got, want, score_tol=1e-4, box_tol=1e-2)


def test_a_checkpoint_without_the_normalizer_buffers_loads_with_its_stored_mean_and_std(tmp_path, capsys):
    """Written as before version 3: the state_dict has no pixel_mean / pixel_std; they come from the stored
    preprocessing, and infer, export and eval give what a current checkpoint of the same weights gives."""
    old, weights = _detection_checkpoint(tmp_path / "old" / "last.pt", version=2, drop_pixel_stats=True)
    new, _ = _detection_checkpoint(tmp_path / "new" / "last.pt")
    assert not set(PIXEL_STAT_KEYS) & set(torch.load(old, weights_only=True)["model"])

    state = load_checkpoint(old)  # filled on reading
    for key in PIXEL_STAT_KEYS:
        assert torch.equal(state["model"][key], weights[key])
    assert torch.allclose(state["model"]["normalizer.pixel_mean"].flatten(), 255 * torch.tensor(MEAN))

    from cvkit.cli.infer import Predictor

    predictor = Predictor(old)
    assert torch.equal(predictor.model.normalizer.pixel_std, weights["normalizer.pixel_std"])
    image = _jpeg(tmp_path / "scene.jpg", size=(48, 80))  # not the input size: infer resizes
    old_record = _infer_record(old, image, tmp_path / "infer_old")
    new_record = _infer_record(new, image, tmp_path / "infer_new")
    assert old_record["scores"] == new_record["scores"] and old_record["boxes_xyxy"] == new_record["boxes_xyxy"]

    assert cvkit(["export", "--checkpoint", str(old), "--out", str(tmp_path / "old.ts")]) == 0
    capsys.readouterr()
    x = _decoded(_jpeg(tmp_path / "square.jpg"))
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / "old.ts"))(x)
        from cvkit.cli.export import load_for_export

        want = load_for_export(new).wrapper(x)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)


def test_resuming_from_a_checkpoint_without_the_buffers_fills_them(tmp_path):
    """The training state of a version-2 file (model and EMA weights) gets the buffers too."""
    from cvkit.checkpoint import TrainingState

    _, weights = _detection_checkpoint(tmp_path / "unused.pt")
    bare = {k: v for k, v in weights.items() if k not in PIXEL_STAT_KEYS}
    from cvkit.tasks.detect import checkpoint_extra

    path = save_checkpoint(tmp_path / "v2.pt", {
        "format": CHECKPOINT_FORMAT, "version": 2, "epoch": 1, "model": dict(bare), "optimizer": {},
        "scheduler": {}, "ema": {"module": dict(bare), "updates": 3},
        "extra": checkpoint_extra(_config(), CLASSES, [1, 2]),
    })
    state = TrainingState.from_dict(load_checkpoint(path), path)
    for key in PIXEL_STAT_KEYS:
        assert torch.equal(state.model[key], weights[key])
        assert state.ema is not None and torch.equal(state.ema["module"][key], weights[key])
    from cvkit.tasks.detect import build_model

    model, _, _ = build_model(_config(), len(CLASSES))
    model.load_state_dict(state.model)  # strict: every key present


def test_files_without_stored_preprocessing_or_of_the_current_version_are_left_alone(tmp_path):
    bare = {"layer.weight": torch.zeros(2)}
    for version, extra in ((2, {}), (3, {"preprocess": {"mean": list(MEAN), "std": list(STD)}})):
        path = save_checkpoint(tmp_path / f"v{version}.pt", {"format": CHECKPOINT_FORMAT, "version": version,
                                                             "model": dict(bare), "extra": extra})
        assert set(load_checkpoint(path)["model"]) == {"layer.weight"}
    # an old file whose preprocessing lives only in the stored config is filled from there
    path = save_checkpoint(tmp_path / "config_only.pt", {
        "format": CHECKPOINT_FORMAT, "version": 1, "model": dict(bare),
        "extra": {"config": {"transforms": {"mean": list(MEAN), "std": list(STD)}}}})
    filled = load_checkpoint(path)["model"]
    assert torch.allclose(filled["normalizer.pixel_std"].flatten(), 255 * torch.tensor(STD))


def test_classification_checkpoint_without_the_buffers_loads_in_infer(tmp_path):
    from cvkit.cli.infer_classify import ClassifierPredictor
    from cvkit.models.classification import ClassifierConfig
    from cvkit.run_config import run_config_from_dict
    from cvkit.tasks.classify import build_model, checkpoint_extra

    raw = {"task": "classify", "data": {"format": "synthetic_cls"},
           "transforms": {"size": [32, 32], "mean": list(MEAN), "std": list(STD), "train_preset": "cls_train",
                          "eval_preset": "cls_eval"},
           "classifier": {"name": "resnet_mini"}}
    cfg = run_config_from_dict(raw, "tiny classify")
    classifier = ClassifierConfig(name="resnet_mini")
    model, _ = build_model(cfg, classifier, 3)
    weights = model.eval().state_dict()
    extra = checkpoint_extra(cfg, classifier, ("x", "y", "z"))
    paths = {}
    for version, state in ((2, {k: v for k, v in weights.items() if k not in PIXEL_STAT_KEYS}), (3, weights)):
        paths[version] = save_checkpoint(tmp_path / f"v{version}.pt", {
            "format": CHECKPOINT_FORMAT, "version": version, "model": state, "ema": None, "extra": extra})
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    old, new = ClassifierPredictor(paths[2]), ClassifierPredictor(paths[3])
    assert torch.equal(old.model.normalizer.pixel_mean, weights["normalizer.pixel_mean"])
    assert old.predict([image]) == new.predict([image])
    # and the model normalizes: uint8 in gives what the old pipeline's normalized floats gave
    batch = torch.stack([new.transform({"image": image})["image"]])
    from tests.models.test_preprocess import old_normalized

    with torch.no_grad():
        assert torch.allclose(new.model(batch), new.model(old_normalized(batch)), atol=1e-4)
