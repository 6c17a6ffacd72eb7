"""cvkit check-data: the validation pass and its report."""

import json

import yaml

from cvkit.cli.main import main as cvkit_main

from .helpers import write_coco


def write_config(tmp_path, data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": data, "anchors": {"anything": 1}}))  # other sections are ignored
    return path


def test_clean_synthetic_data(tmp_path, synthetic_cache, capsys):
    cfg = write_config(tmp_path, {"cache_dir": str(synthetic_cache), "synthetic": {"num_train": 24, "num_val": 8}})
    assert cvkit_main(["check-data", "--config", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "[val]" in out and "images 24" in out and "no problems found" in out
    assert "circle" in out and "box size" in out


def test_every_problem_is_reported_per_kind(tmp_path, capsys):
    images = [
        {"id": 1, "file_name": "a.png", "height": 40, "width": 60},
        {"id": 2, "file_name": "b.png", "height": 40, "width": 60},
        {"id": 3, "file_name": "../outside.png", "height": 40, "width": 60},
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, -3, 4]},
        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [1, 1, 3, 4]},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [1, 1, 3, 4]},
    ]
    write_coco(tmp_path, images, anns, [{"id": 1, "name": "x"}], name="instances_train.json")
    (tmp_path / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cfg = write_config(tmp_path, {"format": "coco", "root": str(tmp_path), "coco_ann_file": "instances_{split}.json",
                                  "coco_image_dir": "images"})
    assert cvkit_main(["check-data", "--config", str(cfg), "--splits", "train", "--quiet"]) == 1
    out = capsys.readouterr().out
    for kind in ("bad_box", "unknown_category", "path_escape", "truncated_image"):
        assert f"skipped {kind}" in out
    assert "annotations[0] (id=1)" in out and "on_error=skip" in out
    assert cvkit_main(["check-data", "--config", str(cfg), "--splits", "train", "--no-decode", "--quiet"]) == 1
    assert "truncated_image" not in capsys.readouterr().out


def test_config_errors_exit_2(tmp_path, capsys):
    cfg = write_config(tmp_path, {"fromat": "coco"})
    assert cvkit_main(["check-data", "--config", str(cfg)]) == 2
    assert "did you mean 'format'" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"images": 3}))
    cfg = write_config(tmp_path, {"format": "coco", "root": str(tmp_path), "coco_ann_file": "bad.json"})
    assert cvkit_main(["check-data", "--config", str(cfg), "--quiet"]) == 2
    assert "bad.json" in capsys.readouterr().err
