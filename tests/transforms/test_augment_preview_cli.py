"""cvkit augment-preview: a grid PNG and per-transform box statistics."""

import cv2

from cvkit.cli.main import main as cvkit_main


def test_preview_grid_and_statistics(tmp_path, synthetic_cache, capsys):
    out = tmp_path / "preview.png"
    args = ["augment-preview", "--num", "6", "--cols", "3", "--out", str(out),
            "--set", f"data.cache_dir={synthetic_cache}", "--set", "data.synthetic.num_train=24",
            "--set", "data.synthetic.num_val=8"]
    assert cvkit_main(args) == 0
    text = capsys.readouterr().out
    for step in ("input", "PhotometricDistort", "ZoomOut", "MinIoURandomCrop", "Resize", "HorizontalFlip"):
        assert step in text
    assert "clipped" in text and "dropped" in text and str(out) in text
    grid = cv2.imread(str(out))
    assert grid.shape[0] > 2 * 300 and grid.shape[1] > 3 * 300  # 2 rows x 3 columns of 300 px tiles
    assert cvkit_main(args + ["--originals", "--preset", "ssd_eval"]) == 0
    assert cv2.imread(str(out)).shape[1] > 6 * 300


def test_preview_classification_and_bad_config(tmp_path, synthetic_cache, capsys):
    out = tmp_path / "cls.png"
    args = ["augment-preview", "--num", "4", "--out", str(out), "--set", "data.format=synthetic_cls",
            "--set", f"data.cache_dir={synthetic_cache}", "--set", "data.synthetic.num_train=20",
            "--set", "data.synthetic.num_val=10", "--set", "transforms.train_preset=cls_train",
            "--set", "transforms.size=[48, 48]"]
    assert cvkit_main(args) == 0 and cv2.imread(str(out)) is not None
    assert cvkit_main(["augment-preview", "--set", "transforms.hflip_p=3"]) == 2
    assert "hflip_p" in capsys.readouterr().err
