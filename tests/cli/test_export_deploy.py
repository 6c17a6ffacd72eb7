"""``cvkit export --with-postprocess`` and ``cvkit infer --model``: exported graphs that take uint8 images and
return detections, run by ``cvkit infer`` (TorchScript, and ONNX through onnxruntime) with the outputs of the
checkpoint itself. One small seeded dense detector (the default recipe's arch at 48x64) with spread-out class
biases, so that there are many detections of every class to compare."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cvkit.cli.main import main as cvkit

HEIGHT, WIDTH = 48, 64  # not square: the boxes' x and y scale differently back to the images
CLASSES = ("a", "b", "c")
OVERRIDES = [f"transforms.size=[{HEIGHT},{WIDTH}]", f"anchors.image_size=[{HEIGHT},{WIDTH}]", "model.neck_channels=16",
             "model.backbone_width=0.25", "train.amp=false"]


def dense_checkpoint(path: Path) -> Path:
    from cvkit.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from cvkit.run_config import load_run_config
    from cvkit.tasks.detect import build_model, checkpoint_extra

    cfg = load_run_config(Path(__file__).parents[2] / "configs" / "default.yaml", OVERRIDES)
    torch.manual_seed(0)
    model, _, _ = build_model(cfg, len(CLASSES))
    with torch.no_grad():  # class scores spread over 0..1 instead of all at the prior
        model.head.cls_out.bias.normal_(-1.0, 1.5)
        model.head.cls_out.weight.mul_(20)
    return save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "version": 3, "epoch": 1, "model": model.state_dict(),
                                  "ema": None, "extra": checkpoint_extra(cfg, CLASSES, [3, 5, 7])})


def _images(folder: Path) -> Path:
    """Three seeded smooth scenes of other sizes than the input (infer resizes, and scales the boxes back)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(((48, 80), (100, 70), (64, 64))):
        image = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        cv2.circle(image, (w // 3, h // 3), h // 5, (250, 40, 40), -1)
        assert cv2.imwrite(str(folder / f"im{i}.png"), image)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    checkpoint = dense_checkpoint(root / "best.pt")
    images = _images(root / "images")
    files = {"ts": root / "det.ts", "raw_ts": root / "raw.ts"}
    assert cvkit(["export", "--checkpoint", str(checkpoint), "--with-postprocess", "--out", str(files["ts"])]) == 0
    assert cvkit(["export", "--checkpoint", str(checkpoint), "--out", str(files["raw_ts"])]) == 0
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401

        files["onnx"] = root / "det.onnx"
        assert cvkit(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--with-postprocess",
                      "--out", str(files["onnx"])]) == 0
    except ImportError:
        pass
    return checkpoint, images, files


def _infer(source: list[str], images: Path, out: Path) -> dict[str, dict]:
    assert cvkit(["infer", *source, str(images), "--out", str(out), "--draw-thresh", "0.5"]) == 0
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("im*.json"))}


def _as_postprocess(record: dict) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(record["boxes_xyxy"]).reshape(-1, 4), "scores": torch.tensor(record["scores"]),
            "labels": torch.tensor(record["labels"], dtype=torch.int64)}


def _as_graph(record: dict, pad: int) -> tuple[torch.Tensor, ...]:
    n = len(record["scores"])
    boxes, scores, labels = torch.zeros(1, pad, 4), torch.zeros(1, pad), torch.full((1, pad), -1)
    boxes[0, :n], scores[0, :n] = torch.tensor(record["boxes_xyxy"]).reshape(-1, 4), torch.tensor(record["scores"])
    labels[0, :n] = torch.tensor(record["labels"])
    return boxes, scores, labels, torch.tensor([n])


@pytest.mark.parametrize("kind", ["ts", "raw_ts", "onnx"])
def test_infer_with_an_exported_model_equals_infer_with_the_checkpoint(setup, tmp_path, kind, capsys):
    from cvkit.cli.export import detection_difference

    checkpoint, images, files = setup
    if kind not in files:
        pytest.skip("onnxruntime / onnxscript not installed")
    want = _infer(["--checkpoint", str(checkpoint)], images, tmp_path / "ckpt")
    got = _infer(["--model", str(files[kind])], images, tmp_path / kind)
    assert set(got) == set(want) == {"im0", "im1", "im2"}
    for stem, record in want.items():
        assert len(record["scores"]) > 20 and len(set(record["labels"])) == len(CLASSES)  # enough to compare
        assert got[stem]["class_names"] == [CLASSES[i] for i in got[stem]["labels"]]
        assert (got[stem]["height"], got[stem]["width"]) == (record["height"], record["width"])
        if kind != "onnx":  # the same torch kernels: the same numbers
            assert got[stem]["labels"] == record["labels"]
            assert np.allclose(got[stem]["scores"], record["scores"], atol=1e-6)
            assert np.allclose(got[stem]["boxes_xyxy"], record["boxes_xyxy"], atol=1e-3)
        else:  # onnxruntime's float order moves scores by ~1e-7: near-equal scores may swap places
            assert detection_difference(_as_graph(got[stem], 200), [_as_postprocess(record)], 1e-4, 0.01, 200) is None
        assert (tmp_path / kind / f"{stem}.jpg").stat().st_size > 0  # the annotated picture
    coco = json.loads((tmp_path / kind / "detections_coco.json").read_text())
    assert {r["category_id"] for r in coco} == {3, 5, 7}  # the dataset's ids, from the file's metadata


def test_exported_files_carry_their_metadata(setup):
    from cvkit.cli.export import ExportedRunner

    _, _, files = setup
    for kind, path in files.items():
        meta = ExportedRunner(path).metadata
        assert meta["class_names"] == list(CLASSES) and meta["category_ids"] == [3, 5, 7]
        assert meta["preprocess"]["size"] == [HEIGHT, WIDTH]
        assert meta["with_postprocess"] == (kind != "raw_ts")
        assert meta["outputs"][0] == ("cls_logits" if kind == "raw_ts" else "boxes")


def test_the_graph_takes_uint8_at_any_batch_size_and_pads(setup):
    from cvkit.cli.export import ExportedRunner

    _, _, files = setup
    for kind in ("ts", "onnx"):
        if kind not in files:
            continue
        runner = ExportedRunner(files[kind])
        gen = torch.Generator().manual_seed(2)
        images = torch.randint(0, 256, (5, 3, HEIGHT, WIDTH), dtype=torch.uint8, generator=gen)
        boxes, scores, labels, num = runner(images)
        pad = runner.metadata["max_detections"]  # max_det 200, but 64 anchors x 3 classes are fewer candidates
        assert pad == 192
        assert boxes.shape == (5, pad, 4) and scores.shape == labels.shape == (5, pad) and num.shape == (5,)
        for b in range(5):
            n = int(num[b])
            assert (scores[b, :n] > 0.01).all() and (scores[b, n:] == 0).all() and (labels[b, n:] == -1).all()
            assert (scores[b, :n].diff() <= 0).all()  # decreasing
            assert (boxes[b, :n] >= 0).all()  # input-tensor pixels
            assert (boxes[b, :n, 0::2] <= WIDTH).all() and (boxes[b, :n, 1::2] <= HEIGHT).all()


def test_a_video_through_an_exported_onnx_model(setup, tmp_path):
    _, _, files = setup
    if "onnx" not in files:
        pytest.skip("onnxruntime / onnxscript not installed")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (80, 48))
    for i in range(6):
        frame = np.full((48, 80, 3), 40, np.uint8)
        frame[:, 8 * i : 8 * i + 10] = 255
        writer.write(frame)
    writer.release()
    assert cvkit(["infer", "--model", str(files["onnx"]), str(video), "--out", str(tmp_path / "out")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    assert all(line["scores"] for line in lines)
    assert (tmp_path / "out" / "clip.mp4").stat().st_size > 0


def test_thresholds_baked_into_the_graph(setup, tmp_path, capsys):
    checkpoint, images, files = setup
    # a higher threshold and fewer detections filter the graph's output
    base = _infer(["--model", str(files["ts"])], images, tmp_path / "base")
    high = _infer(["--model", str(files["ts"]), "--score-thresh", "0.5", "--max-det", "5"], images, tmp_path / "hi")
    for stem, record in base.items():
        want = [s for s in record["scores"] if s > 0.5][:5]
        assert high[stem]["scores"] == want
    capsys.readouterr()
    # a lower threshold or another NMS IoU cannot be had from the graph: one line, exit 2
    for extra in (["--score-thresh", "0.001"], ["--iou-thresh", "0.7"]):
        assert cvkit(["infer", "--model", str(files["ts"]), str(images), "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("cvkit infer:") and "export again" in err
    # baked at export time instead
    assert cvkit(["export", "--checkpoint", str(checkpoint), "--with-postprocess", "--score-thresh", "0.5",
                  "--max-det", "5", "--out", str(tmp_path / "strict.ts")]) == 0
    strict = _infer(["--model", str(tmp_path / "strict.ts")], images, tmp_path / "strict")
    for stem, record in strict.items():
        assert record["labels"] == high[stem]["labels"]
        assert np.allclose(record["scores"], high[stem]["scores"], atol=1e-6)


def test_detection_difference_finds_a_missing_an_extra_or_a_relabelled_detection():
    from cvkit.cli.export import detection_difference

    gen = torch.Generator().manual_seed(0)
    boxes = torch.rand(1, 10, 4, generator=gen) * 50
    scores = torch.linspace(0.9, 0.2, 10)[None]
    labels = torch.arange(10)[None] % 3
    ref = [{"boxes": boxes[0], "scores": scores[0], "labels": labels[0]}]
    same = (boxes, scores, labels, torch.tensor([10]))
    assert detection_difference(same, ref, 1e-4, 0.01, 100) is None
    assert "not in the exported output" in detection_difference((boxes, scores, labels, torch.tensor([9])), ref, 1e-4,
                                                                0.01, 100)
    relabelled = labels.clone()
    relabelled[0, 3] = 2 if labels[0, 3] != 2 else 1
    assert detection_difference((boxes, scores, relabelled, torch.tensor([10])), ref, 1e-4, 0.01, 100) is not None
    shorter = [{k: v[:9] for k, v in ref[0].items()}]
    assert "not in cvkit's output" in detection_difference(same, shorter, 1e-4, 0.01, 100)
    moved = boxes.clone()
    moved[0, 2] += 1.0
    assert detection_difference((moved, scores, labels, torch.tensor([10])), ref, 1e-4, 0.01, 100) is not None
    # a detection within atol of the cut-off may be in one list only (another runtime's last bits)
    near = [{"boxes": boxes[0], "scores": torch.cat([scores[0, :9], torch.tensor([0.01 + 5e-5])]),
             "labels": labels[0]}]
    assert detection_difference((boxes, scores, labels, torch.tensor([9])), near, 1e-4, 0.01, 100) is None


def test_export_and_model_errors_are_one_line(setup, tmp_path, capsys, monkeypatch):
    checkpoint, images, files = setup
    cases = [
        ["export", "--checkpoint", str(checkpoint), "--score-thresh", "0.5"],  # needs --with-postprocess
        ["infer", "--model", str(tmp_path / "missing.onnx"), str(images)],
        ["infer", "--model", str(checkpoint), str(images), "--out", str(tmp_path / "o")],  # a checkpoint, not a graph
    ]
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    cases.append(["infer", "--model", str(tmp_path / "junk.onnx"), str(images), "--out", str(tmp_path / "o")])
    for argv in cases:
        assert cvkit(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith(f"cvkit {argv[0]}:") and "Traceback" not in "\n".join(err), err
    # a file that disagrees with the eager model is not written
    import cvkit.cli.export as export

    monkeypatch.setattr(export, "detection_difference", lambda *a, **k: "image 0: made to differ")
    out = tmp_path / "bad.ts"
    assert cvkit(["export", "--checkpoint", str(checkpoint), "--with-postprocess", "--out", str(out)]) == 1
    assert "made to differ; nothing written" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".bad.*"))
