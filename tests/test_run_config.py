from pathlib import Path

import pytest

from cvkit.config import ConfigError
from cvkit.run_config import load_run_config, run_config_from_dict, to_dict

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


def test_there_are_configs():
    names = {p.stem for p in CONFIGS}
    assert {"default", "ssd300_vgg16", "voc", "yolo"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_builds_its_model(path):
    from cvkit.models.build import build_detector
    from cvkit.models.classification.build import build_classifier

    cfg = load_run_config(path)
    assert to_dict(run_config_from_dict(to_dict(cfg))) == to_dict(cfg)  # resolved form round-trips
    if cfg.task == "classify":
        model = build_classifier(cfg.classifier, num_classes=3, image_size=cfg.transforms.size)
    else:
        model, criterion, postprocessor = build_detector(cfg.model, cfg.loss, cfg.postprocess, cfg.anchors,
                                                         num_classes=3)
        assert callable(criterion) and callable(postprocessor)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_unknown_keys_are_rejected_with_a_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epocs.*did you mean 'epochs'"):
        load_run_config(path)
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_run_config(path)


def test_overrides_and_type_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    cfg = load_run_config(path, ["train.epochs=7", "data.batch_size=4", "model.backbone=resnet34"])
    assert (cfg.train.epochs, cfg.data.batch_size, cfg.model.backbone) == (7, 4, "resnet34")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_run_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_run_config(path, ["train.epochs"])


def test_anchor_and_input_sizes_must_agree(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("transforms:\n  size: [320, 320]\n")
    with pytest.raises(ConfigError, match="anchors.image_size"):
        load_run_config(path)


def test_dataset_root_required_for_file_formats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  format: coco\n")
    with pytest.raises(ConfigError, match="data.root"):
        load_run_config(path)


# configs/default.yaml is the 10-minute CPU recipe: it differs from the library defaults in these keys only,
# each marked "(library default: X)" in the file
DEFAULT_RECIPE = {
    ("data", "batch_size"): 8,
    ("transforms", "photometric_p"): 0.2,
    ("transforms", "zoom_out_p"): 0.0,
    ("transforms", "hflip"): False,
    ("transforms", "mosaic_p"): 0.5,
    ("anchors", "style"): "sizes",
    ("anchors", "aspect_ratios"): [[1.0], [1.0], [1.0]],
    ("anchors", "steps"): [8, 16, 32],
    ("anchors", "sizes"): [[32.0], [64.0], [128.0]],
    ("model", "arch"): "dense",
    ("model", "backbone_width"): 0.5,
    ("model", "neck_channels"): 48,
    ("loss", "cls_loss"): "qfl",
    ("loss", "box_loss"): "giou",
    ("loss", "box_weight"): 2.0,
    ("loss", "assigner"): "atss",
    ("train", "epochs"): 13,
    ("train", "optimizer"): "adamw",
    ("train", "lr"): 0.001,
    ("train", "weight_decay"): 0.05,
    ("train", "warmup_epochs"): 0.5,
    ("train", "eval_every"): 2,
}


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def test_default_config_is_complete_and_differs_from_the_defaults_only_in_its_recipe():
    from cvkit.config import load_yaml
    from cvkit.run_config import RunConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    raw = load_yaml(path)
    assert set(raw) == {f for f in RunConfig.__dataclass_fields__}  # every section spelled out
    ours, library = dict(_flatten(to_dict(load_run_config(path)))), dict(_flatten(to_dict(RunConfig())))
    assert set(ours) == set(library)
    assert {k: v for k, v in ours.items() if v != library[k]} == DEFAULT_RECIPE
    text = path.read_text()
    for section, key in DEFAULT_RECIPE:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:"))
        assert f"(library default: {library[(section, key)]})" in line
