"""End to end: `cvkit train` on a tiny synthetic set, then `cvkit infer` with the checkpoint alone."""

import json

import pytest
import torch

from cvkit.cli.main import main as cvkit
from cvkit.engine.checkpoint import load_checkpoint


def test_train_then_infer(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "train", "configs/default.yaml", "--run-dir", str(run_dir),
        "--set", "data.synthetic.num_train=4", "--set", "data.synthetic.num_val=2",
        "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.batch_size=4",
        "--set", "data.num_workers=0", "--set", "train.epochs=1", "--set", "train.progress=false",
        "--set", "train.tensorboard=false",
    ]
    assert cvkit(args) == 0
    out = capsys.readouterr().out
    assert "done: 1 epochs" in out
    for name in ("config.yaml", "metrics.csv", "losses.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run_dir / name).exists(), name
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    extra = state["extra"]
    assert extra["class_names"] == ["circle", "square", "triangle", "star", "cross"]
    assert extra["preprocess"]["size"] == [300, 300]
    assert extra["config"]["data"]["synthetic"]["num_train"] == 4

    images = sorted((tmp_path / "cache").rglob("*.jpg"))[:3]
    assert images
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    out_dir = tmp_path / "infer"
    assert cvkit(["infer", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), *map(str, images), str(bad),
                  "--out", str(out_dir), "--score-thresh", "0.0", "--max-det", "5"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 unreadable" in printed and "broken.jpg" in printed
    record = json.loads((out_dir / f"{images[0].stem}.json").read_text())
    assert len(record["boxes_xyxy"]) == len(record["scores"]) == len(record["labels"]) <= 5
    assert all(0 <= b[0] <= b[2] <= record["width"] and 0 <= b[1] <= b[3] <= record["height"]
               for b in record["boxes_xyxy"])
    assert (out_dir / f"{images[0].stem}.jpg").exists()
    # --draw-thresh: only detections scoring at least it are drawn (the JSON keeps them all)
    from cvkit.data.io import read_image
    from cvkit.viz.draw import save_image

    assert cvkit(["infer", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), str(images[0]),
                  "--out", str(tmp_path / "none"), "--score-thresh", "0.0", "--draw-thresh", "2.0"]) == 0
    plain = save_image(tmp_path / "plain.jpg", read_image(images[0]))
    assert (tmp_path / "none" / f"{images[0].stem}.jpg").read_bytes() == plain.read_bytes()  # nothing drawn
    assert json.loads((tmp_path / "none" / f"{images[0].stem}.json").read_text())["scores"]
    assert cvkit(["infer", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), str(images[0]),
                  "--out", str(tmp_path / "all"), "--score-thresh", "0.0", "--draw-thresh", "0.0"]) == 0
    assert (tmp_path / "all" / f"{images[0].stem}.jpg").read_bytes() != plain.read_bytes()  # boxes drawn
    capsys.readouterr()
    # two inputs with the same file name in different folders both get their outputs
    for folder in ("twin1", "twin2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.jpg").write_bytes(images[0].read_bytes())
    assert cvkit(["infer", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), str(tmp_path / "twin1"),
                  str(tmp_path / "twin2" / "a.jpg"), "--out", str(tmp_path / "twins")]) == 0
    assert sorted(p.name for p in (tmp_path / "twins").glob("*.json") if p.name.startswith("twin")) == [
        "twin1_a.json", "twin2_a.json"]
    capsys.readouterr()
    coco = json.loads((out_dir / "detections_coco.json").read_text())
    assert {d["category_id"] for d in coco} <= {1, 2, 3, 4, 5}  # the synthetic COCO file's category ids
    assert torch.is_tensor(state["model"][next(iter(state["model"]))])

    # eval from the checkpoint alone, then export to TorchScript (checked against the eager model)
    ckpt = str(run_dir / "checkpoints" / "last.pt")
    assert cvkit(["eval", "--checkpoint", ckpt, "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "val_loss"} <= set(metrics)
    assert cvkit(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "model.ts")]) == 0
    assert "checked against the eager model" in capsys.readouterr().out
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    logits, deltas, anchors = exported(torch.zeros(1, 3, 300, 300, dtype=torch.uint8))  # uint8, as decoded
    # the default detector is dense: one sigmoid logit per class (5 shapes), no background logit
    assert logits.shape == (1, anchors.shape[0], 5) and deltas.shape == (1, anchors.shape[0], 4)

    # ONNX (dev extras install onnx, onnxscript, onnxruntime): the command itself compares onnxruntime's
    # outputs with the eager model's on two batch sizes; check the file once more from here
    ort = pytest.importorskip("onnxruntime")
    assert cvkit(["export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(tmp_path / "model.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randint(0, 256, (3, 3, 300, 300), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    got = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = exported(x)
    for a, b in zip(got, want):
        assert a.shape == tuple(b.shape)
        assert float((torch.from_numpy(a) - b).abs().max()) < 1e-4
