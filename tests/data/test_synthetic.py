"""The built-in shapes dataset: deterministic, idempotent, objects of the advertised sizes."""

import json
import os

import numpy as np
import pytest

from cvkit.data.synthetic import (
    SyntheticConfig,
    default_cache_dir,
    generate_detection,
    render_detection_image,
    resolve_cache_dir,
)

TINY = SyntheticConfig(num_train=6, num_val=2)


def test_render_is_deterministic_and_seed_dependent():
    a = render_detection_image(np.random.default_rng([0, 0, 5]), TINY)
    b = render_detection_image(np.random.default_rng([0, 0, 5]), TINY)
    c = render_detection_image(np.random.default_rng([1, 0, 5]), TINY)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_objects_are_inside_in_size_range_with_limited_overlap():
    cfg = SyntheticConfig()
    sides, counts, empty = [], [], 0
    for i in range(200):
        image, boxes, labels = render_detection_image(np.random.default_rng([0, 0, i]), cfg)
        assert image.shape == (300, 300, 3) and image.dtype == np.uint8
        assert len(boxes) == len(labels) <= cfg.max_objects
        empty += not boxes
        counts.append(len(boxes))
        b = np.asarray(boxes).reshape(-1, 4)
        assert ((b >= 0) & (b <= 300)).all() and (b[:, 2:] > b[:, :2]).all()
        sides += (b[:, 2:] - b[:, :2]).max(axis=1).tolist()
        assert set(labels) <= set(range(len(cfg.classes)))
    sides = np.asarray(sides)
    assert 0.7 * cfg.min_object_size <= sides.min() and sides.max() <= cfg.max_object_size
    assert (sides < 16).mean() > 0.1 and (sides > 100).mean() > 0.03  # small and large objects both occur
    assert 2 <= empty <= 25 and max(counts) == cfg.max_objects  # some negatives, several objects per image


def test_generation_is_idempotent_and_keyed_by_parameters(tmp_path):
    root = generate_detection(TINY, tmp_path, progress=False)
    marker = root / "COMPLETE"
    stamp = marker.stat().st_mtime_ns
    files = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert generate_detection(TINY, tmp_path, progress=False) == root
    assert marker.stat().st_mtime_ns == stamp  # reused, not rewritten
    other = generate_detection(SyntheticConfig(num_train=6, num_val=2, seed=1), tmp_path, progress=False)
    assert other != root
    doc = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert len(doc["images"]) == 6 and [c["id"] for c in doc["categories"]] == [1, 2, 3, 4, 5]
    assert len(files) == 6 + 2 + 2 + 4 + 1  # images, two JSON files, four folders, the marker
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_same_parameters_give_identical_bytes(tmp_path):
    a = generate_detection(TINY, tmp_path / "a", progress=False)
    b = generate_detection(TINY, tmp_path / "b", progress=False)
    for path in sorted((a / "images" / "train").iterdir()):
        assert path.read_bytes() == (b / "images" / "train" / path.name).read_bytes()


def test_invalid_parameters_are_rejected(tmp_path):
    for cfg in (SyntheticConfig(classes=("hexagon",)), SyntheticConfig(min_object_size=50, max_object_size=10)):
        with pytest.raises(ValueError):
            generate_detection(cfg, tmp_path, progress=False)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("CVKIT_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir("") == tmp_path / "env"
    assert resolve_cache_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.delenv("CVKIT_CACHE_DIR")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert default_cache_dir() == __import__("pathlib").Path(repo) / ".cache"  # a source checkout
