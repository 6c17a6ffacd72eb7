"""ImageFolder classification reader."""

import os

from cvkit.data import ImageFolderDataset

from .helpers import write_image


def test_classes_sorted_labels_and_samples(tmp_path):
    for cls, n in (("zebra", 2), ("ant", 1), ("cat", 3)):
        for i in range(n):
            write_image(tmp_path / "train" / cls / f"{i}.png", 8, 10, seed=i)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, "train")
    assert ds.class_names == ("ant", "cat", "zebra")
    assert ds.targets == [0, 1, 1, 1, 2, 2]
    sample = ds[1]
    assert sample["label"] == 1 and sample["image"].shape == (8, 10, 3) and sample["file_name"] == "train/cat/0.png"


def test_symlinks_out_of_the_root_are_skipped(tmp_path):
    root = tmp_path / "root"
    write_image(root / "train" / "a" / "0.png", 8, 10)
    write_image(tmp_path / "outside" / "x.png", 8, 10)
    os.symlink(tmp_path / "outside" / "x.png", root / "train" / "a" / "1.png")
    os.symlink(tmp_path / "outside", root / "train" / "b")
    ds = ImageFolderDataset(root, "train", on_error="skip")
    assert ds.targets == [0] and ds.report.errors["path_escape"] == 2


def test_bad_image_skipped_as_none(tmp_path):
    write_image(tmp_path / "train" / "a" / "0.png", 8, 10)
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"garbage")
    ds = ImageFolderDataset(tmp_path, "train", on_error="skip")
    assert ds[1] is None and ds.report.errors["unreadable_image"] == 1
    assert ds.validate_images() == 1 and len(ds) == 1


def test_synthetic_classification_variant(synthetic_cls_root):
    ds = ImageFolderDataset(synthetic_cls_root, "train")
    assert ds.class_names == tuple(sorted(("circle", "square", "triangle", "star", "cross")))
    assert len(ds) == 20 and sorted(set(ds.targets)) == [0, 1, 2, 3, 4]
    assert all(ds.targets.count(k) == 4 for k in range(5))  # balanced
    assert ds[0]["image"].shape == (64, 64, 3)
