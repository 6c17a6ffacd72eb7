"""The data: section (DataConfig), build_dataset and configs/default.yaml."""

from pathlib import Path

import pytest

from cvkit.config import ConfigError, apply_overrides, load_yaml
from cvkit.data import CocoDetection, DataConfig, ImageFolderDataset, build_dataset, data_config_from
from cvkit.data.synthetic import SyntheticConfig
from cvkit.transforms import TransformsConfig, transforms_config_from

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def test_default_yaml_states_the_defaults():
    raw = load_yaml(DEFAULT_YAML)
    # the 10-minute CPU recipe changes these (see tests/test_run_config.py); every other value is the default
    assert data_config_from(raw) == DataConfig(batch_size=8)
    assert transforms_config_from(raw) == TransformsConfig(photometric_p=0.2, zoom_out_p=0.0, hflip=False, mosaic_p=0.5)
    # every field of both sections is written out, so the file documents them all
    assert set(raw["data"]) == set(DataConfig.__dataclass_fields__)
    assert set(raw["data"]["synthetic"]) == set(SyntheticConfig.__dataclass_fields__)
    assert set(raw["transforms"]) == set(TransformsConfig.__dataclass_fields__)


def test_unknown_keys_get_a_suggestion():
    with pytest.raises(ConfigError, match=r"data\.on_eror.*did you mean 'on_error'"):
        data_config_from({"data": {"on_eror": "skip"}})
    with pytest.raises(ConfigError, match=r"data\.synthetic\.num_trian.*'num_train'"):
        data_config_from({"data": {"synthetic": {"num_trian": 3}}})
    with pytest.raises(ConfigError, match="not one of"):
        data_config_from({"data": {"on_error": "ignore"}})
    with pytest.raises(ConfigError, match="data.root"):
        data_config_from({"data": {"format": "coco"}})
    with pytest.raises(ConfigError, match="hflip_p"):
        transforms_config_from({"transforms": {"hflip_p": 2.0}})


def test_overrides_reach_the_dataclasses():
    raw = apply_overrides(load_yaml(DEFAULT_YAML), ["data.synthetic.num_train=7", "transforms.size=[128, 96]"])
    assert data_config_from(raw).synthetic.num_train == 7
    assert transforms_config_from(raw).size == (128, 96)


def test_build_dataset_for_synthetic_formats(synthetic_cache):
    small = SyntheticConfig(num_train=24, num_val=8)
    cfg = DataConfig(cache_dir=str(synthetic_cache), synthetic=small)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert isinstance(train, CocoDetection) and (len(train), len(val)) == (24, 8)
    cls = build_dataset(DataConfig(format="synthetic_cls", cache_dir=str(synthetic_cache), synthetic=small), "val")
    assert isinstance(cls, ImageFolderDataset) and len(cls) == 8
    with pytest.raises(ValueError):
        build_dataset(cfg, "test")


def test_build_dataset_for_coco_paths(synthetic_root):
    cfg = DataConfig(format="coco", root=str(synthetic_root))
    ds = build_dataset(cfg, "val")
    assert isinstance(ds, CocoDetection) and len(ds) == 8 and ds.report.on_error == "raise"
    skip = build_dataset(DataConfig(format="coco", root=str(synthetic_root), on_error="skip"), "train")
    assert skip.report.on_error == "skip"


def test_skipped_problems_are_reported_at_the_end_of_loading(tmp_path, caplog):
    from .helpers import write_coco

    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, -3, 4]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 1, 30, 4]},
    ]
    write_coco(tmp_path, images, anns, [{"id": 1, "name": "x"}], name="train.json")
    cfg = DataConfig(format="coco", root=str(tmp_path), coco_ann_file="{split}.json", coco_image_dir="images",
                     on_error="skip")
    with caplog.at_level("INFO", logger="cvkit.data"):
        ds = build_dataset(cfg, "train")
    assert len(ds) == 1 and ds[0]["class_names"] == ("x",)
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(messages) == 1 and "skipped bad_box" in messages[0] and "note    clipped" in messages[0]
