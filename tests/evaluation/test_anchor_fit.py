"""anchor_fit: the proposal covers the boxes at least as well as the start, keeps the structure, and
``cvkit anchors --fit --write`` puts it into the config file."""

import numpy as np
import pytest
import yaml

from cvkit.cli.anchors import main as anchors_main
from cvkit.cli.anchors import write_anchor_value
from cvkit.evaluation.anchor_fit import coverage_score, fit_anchors
from cvkit.ops.anchors import AnchorConfig


def _small_boxes(num_images=24, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(num_images):
        wh = rng.uniform(8, 18, size=(4, 2))
        xy = rng.uniform(0, 280, size=(4, 2))
        samples.append(((300, 300), np.concatenate([xy, xy + wh], 1).astype(np.float32)))
    return samples


def test_fit_raises_the_matched_share_of_small_boxes_and_keeps_the_structure():
    cfg = AnchorConfig()  # SSD300: its smallest anchors (21 px) miss 8-18 px boxes
    fit = fit_anchors(_small_boxes(), cfg)
    assert coverage_score(fit.after) > coverage_score(fit.before) + 0.2
    assert fit.key == "scales" and len(fit.value) == len(cfg.scales)
    assert all(b > a for a, b in zip(fit.value, fit.value[1:]))
    assert fit.config.aspect_ratios == cfg.aspect_ratios and fit.config.steps == cfg.steps
    assert fit.value[0] < cfg.scales[0]


def test_fit_of_sizes_style_scales_the_pixel_sizes():
    cfg = AnchorConfig(style="sizes", sizes=((64,), (128,), (256,)), aspect_ratios=((1.0,),), steps=(8, 16, 32))
    fit = fit_anchors(_small_boxes(), cfg)
    assert fit.key == "sizes" and fit.value[0][0] < 64
    assert coverage_score(fit.after) >= coverage_score(fit.before)


def test_write_replaces_only_the_value_and_keeps_the_comment(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  scales: 3   # not this one\nanchors:\n  style: ssd\n  scales: [0.1, 0.2]   # keep me\n")
    write_anchor_value(path, "scales", [0.05, 0.15])
    text = path.read_text()
    assert "  scales: 3   # not this one" in text and "  scales: [0.05, 0.15]   # keep me" in text
    assert yaml.safe_load(text)["anchors"]["scales"] == [0.05, 0.15]
    with pytest.raises(Exception, match="no 'anchors.sizes:' line"):
        write_anchor_value(path, "sizes", [[1]])


def _coco_file(path, num_images):
    """A one-class COCO file of ``_small_boxes(num_images)``."""
    import json

    images, annotations = [], []
    for i, (size, boxes) in enumerate(_small_boxes(num_images)):
        images.append({"id": i + 1, "height": size[0], "width": size[1], "file_name": f"{i}.jpg"})
        for b in boxes.tolist():
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    return path


def test_cli_fit_and_write_on_a_coco_file(tmp_path, capsys):
    ann = _coco_file(tmp_path / "ann.json", 12)
    config = tmp_path / "cfg.yaml"
    config.write_text(open("configs/ssd_resnet18.yaml").read())  # the SSD style: relative scales
    assert anchors_main(["--config", str(config), "--ann-file", str(ann), "--fit", "--write", "--no-plot",
                         "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "matched before" in out and "proposed anchors.scales" in out
    written = yaml.safe_load(config.read_text())["anchors"]["scales"]
    assert written != [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05] and written[0] < 0.07
    assert (tmp_path / "out" / "anchor_fit.json").is_file()


def test_cli_fit_says_when_the_config_assigns_with_atss(tmp_path, capsys):
    ann = _coco_file(tmp_path / "ann.json", 6)
    for config, expected in (("configs/default.yaml", True), ("configs/ssd_resnet18.yaml", False)):
        assert anchors_main(["--config", config, "--ann-file", str(ann), "--fit", "--no-plot",
                             "--out", str(tmp_path / "out")]) == 0
        err = capsys.readouterr().err
        assert ("loss.assigner is atss" in err) is expected, (config, err)
