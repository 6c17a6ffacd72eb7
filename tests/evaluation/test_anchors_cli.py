"""``cvkit anchors``: config handling, the COCO reader, and the report files it writes."""

import json
import sys

import pytest
import yaml

from cvkit.cli import anchors as cli
from cvkit.cli.main import main as cvkit_main


def write_coco(path, num_images=6):
    images, annotations = [], []
    for i in range(num_images):
        images.append({"id": 10 + i, "file_name": f"img{i}.jpg", "height": 300, "width": 400})
        annotations.append({"id": 2 * i, "image_id": 10 + i, "category_id": 1, "bbox": [20, 30, 80, 60], "iscrowd": 0})
        annotations.append({"id": 2 * i + 1, "image_id": 10 + i, "category_id": 1, "bbox": [150, 90, 6, 5]})
    annotations.append({"id": 99, "image_id": 10, "category_id": 1, "bbox": [0, 0, 300, 300], "iscrowd": 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    return path


def write_config(path, data, anchors=None, transforms=None):
    raw = {"data": data}
    if anchors is not None:
        raw["anchors"] = anchors
    if transforms is not None:
        raw["transforms"] = transforms
    path.write_text(yaml.safe_dump(raw))
    return path


def test_read_coco_boxes(tmp_path):
    ann = write_coco(tmp_path / "a.json", 2)
    samples = cli.read_coco_boxes(ann)
    assert [size for size, _ in samples] == [(300, 400), (300, 400)]
    assert samples[0][1].tolist() == [[20, 30, 100, 90], [150, 90, 156, 95]]  # xywh -> xyxy, crowd skipped
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "height": 3, "width": 4}], "annotations": [{"image_id": 2}]}))
    with pytest.raises(cli.ConfigError, match="unknown image_id 2"):
        cli.read_coco_boxes(bad)
    bad.write_text(json.dumps({"images": [{"id": 1, "height": 3, "width": 4}], "annotations": [{"image_id": 1}]}))
    with pytest.raises(cli.ConfigError, match=r"annotations\[0\].bbox"):
        cli.read_coco_boxes(bad)
    with pytest.raises(cli.ConfigError, match="cannot read"):
        cli.read_coco_boxes(tmp_path / "missing.json")


def test_ann_file_run_writes_json_and_png(tmp_path, capsys):
    ann = write_coco(tmp_path / "ann.json")
    cfg = write_config(tmp_path / "c.yaml", {"format": "coco", "root": str(tmp_path)}, {"image_size": [300, 300]})
    out = tmp_path / "out"
    code = cli.main(["--config", str(cfg), "--ann-file", str(ann), "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "anchor coverage: 6 images, 12 boxes" in text
    summary = json.loads((out / "anchor_coverage.json").read_text())
    assert summary["num_boxes"] == 12 and summary["num_images"] == 6
    assert summary["by_size"]["small"]["boxes"] == 6  # the 6x5 boxes
    assert (out / "anchor_coverage.png").read_bytes()[:4] == b"\x89PNG"


def test_coco_section_without_cvkit_data(tmp_path, monkeypatch, capsys):
    # the fallback reader: data.root + data.coco_ann_file with {split}
    write_coco(tmp_path / "annotations" / "instances_val.json", 3)
    cfg = write_config(tmp_path / "c.yaml", {"format": "coco", "root": str(tmp_path)})
    monkeypatch.setitem(sys.modules, "cvkit.data", None)  # `import cvkit.data` now raises ImportError
    code = cli.main(["--config", str(cfg), "--split", "val", "--out", str(tmp_path / "o"), "--no-plot", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_images"] == 3 and summary["num_anchors"] == 8732  # no anchors section: SSD300
    assert not (tmp_path / "o" / "anchor_coverage.png").exists()


def test_synthetic_dataset_through_cvkit_data(tmp_path, capsys):
    pytest.importorskip("cvkit.data")
    data = {"format": "synthetic", "cache_dir": str(tmp_path / "cache"), "synthetic": {"num_train": 6, "num_val": 2}}
    cfg = write_config(tmp_path / "c.yaml", data, {"matcher": {"pos_thresh": 0.5}}, transforms={"size": [320, 320]})
    code = cli.main(["--config", str(cfg), "--out", str(tmp_path / "o"), "--no-plot"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "anchor coverage: 6 images" in captured.out
    assert "transforms.size is [320, 320]" in captured.err


@pytest.mark.parametrize(
    ("anchors", "overrides", "message"),
    [
        ({"aspect_ratio": [[2]]}, [], "did you mean 'aspect_ratios'"),
        ({"feature_sizes": [[38, 38]] * 5}, [], "expects 6 feature maps"),
        ({}, ["anchors.matcher.low_quality=sometimes"], "low_quality"),
        ({}, ["anchors.style=sizes"], "sizes is required"),
    ],
)
def test_config_errors_exit_2_with_a_message(tmp_path, capsys, anchors, overrides, message):
    ann = write_coco(tmp_path / "ann.json", 1)
    cfg = write_config(tmp_path / "c.yaml", {"format": "coco", "root": str(tmp_path)}, anchors)
    args = ["--config", str(cfg), "--ann-file", str(ann), "--out", str(tmp_path / "o")]
    for item in overrides:
        args += ["--set", item]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_dispatcher_and_usage(tmp_path, capsys):
    ann = write_coco(tmp_path / "ann.json", 2)
    assert cvkit_main(["anchors", "--ann-file", str(ann), "--out", str(tmp_path / "o"), "--no-plot"]) == 0
    assert "anchor coverage: 2 images" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert "--config" in capsys.readouterr().err


def test_ssd_reference_config_anchor_section_is_ssd300():
    from pathlib import Path

    from cvkit.config import load_yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "ssd_resnet18.yaml"
    cfg = cli.load_anchor_config(load_yaml(path), str(path))
    generator = cfg.build()
    assert sum(generator.num_anchors_per_level(cfg.resolved_feature_sizes())) == 8732
    assert cfg.matcher.low_quality == "ssd" and cfg.matcher.pos_thresh == 0.5


def test_classification_data_is_rejected(tmp_path, capsys):
    pytest.importorskip("cvkit.data")
    cfg = write_config(tmp_path / "c.yaml", {"format": "image_folder", "root": str(tmp_path)})
    assert cli.main(["--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "classification dataset" in capsys.readouterr().err
