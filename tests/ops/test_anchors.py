"""AnchorGenerator against torchvision's DefaultBoxGenerator / AnchorGenerator, its properties and cache."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from cvkit.config import ConfigError, from_dict
from cvkit.ops import AnchorConfig, AnchorGenerator
from cvkit.ops.anchors import SSD300_SETTINGS

SSD300_FEATURES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


def _tv_anchors(generator, feature_sizes, image_size, dtype=torch.float32):
    images = ImageList(torch.zeros(1, 3, *image_size, dtype=dtype), [tuple(image_size)])
    feats = [torch.zeros(1, 1, h, w, dtype=dtype) for h, w in feature_sizes]
    return generator(images, feats)[0]


def test_ssd300_equals_default_box_generator():
    tv = DefaultBoxGenerator(
        [list(r) for r in SSD300_SETTINGS["aspect_ratios"]],
        scales=list(SSD300_SETTINGS["scales"]),
        steps=list(SSD300_SETTINGS["steps"]),
    )
    ours = AnchorGenerator.ssd300()
    anchors = ours(SSD300_FEATURES, (300, 300))
    assert anchors.shape == (8732, 4) and anchors.dtype == torch.float32
    assert torch.equal(anchors, _tv_anchors(tv, SSD300_FEATURES, (300, 300)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_ssd300_other_dtypes_close_to_torchvision(dtype):
    ours = AnchorGenerator.ssd300()
    tv = DefaultBoxGenerator(
        [list(r) for r in SSD300_SETTINGS["aspect_ratios"]],
        scales=list(SSD300_SETTINGS["scales"]),
        steps=list(SSD300_SETTINGS["steps"]),
    )
    expected = _tv_anchors(tv, SSD300_FEATURES, (300, 300)).double()
    got = ours(SSD300_FEATURES, (300, 300), dtype=dtype)
    assert got.dtype == dtype
    tol = 1e-4 if dtype == torch.float64 else 0.25  # float16 holds ~3 digits of 300
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=tol)


@settings(max_examples=40, deadline=None)
@given(
    levels=st.lists(
        st.tuples(
            st.integers(1, 12),  # H
            st.integers(1, 12),  # W
            st.lists(st.sampled_from([2, 3, 4, 0.5, 1.5]), min_size=0, max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
    image=st.tuples(st.integers(16, 400), st.integers(16, 400)),
    use_steps=st.booleans(),
    clip=st.booleans(),
    min_ratio=st.floats(0.05, 0.4),
    max_ratio=st.floats(0.5, 1.2),
)
def test_ssd_mode_equals_default_box_generator_random(levels, image, use_steps, clip, min_ratio, max_ratio):
    ratios = [lv[2] for lv in levels]
    features = [(lv[0], lv[1]) for lv in levels]
    steps = [max(1, image[1] // w) for _, w in features] if use_steps else None
    tv = DefaultBoxGenerator(ratios, min_ratio=min_ratio, max_ratio=max_ratio, steps=steps, clip=clip)
    ours = AnchorGenerator.ssd(ratios, min_ratio=min_ratio, max_ratio=max_ratio, steps=steps, clip=clip)
    anchors = ours(features, image)
    assert torch.equal(anchors, _tv_anchors(tv, features, image))
    # property: count = sum H * W * K with K = 2 + 2 * len(ratios)
    assert anchors.shape[0] == sum(h * w * (2 + 2 * len(r)) for (h, w), r in zip(features, ratios, strict=True))
    assert ours.num_anchors_per_location() == tv.num_anchors_per_location()


def test_sizes_mode_reproduces_torchvision_anchor_generator():
    # torchvision: ratio = height / width, corner-anchored centres, rounded cells -> cvkit with 1 / r,
    # offset 0, round_cells and strides image // feature
    sizes = tuple((s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)) for s in (32, 64, 128, 256, 512))
    tv_ratios = ((0.5, 1.0, 2.0),) * 5
    tv = TVAnchorGenerator(sizes, tv_ratios)
    image = (640, 640)
    features = [(80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]
    ours = AnchorGenerator(
        sizes, [[1 / r for r in lv] for lv in tv_ratios], strides=[640 // f[0] for f in features], offset=0.0,
        round_cells=True,
    )
    expected = _tv_anchors(tv, features, image)
    got = ours(features, image)
    assert got.shape == expected.shape == (sum(h * w * 9 for h, w in features), 4)
    assert torch.equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(
    features=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4),
    sizes=st.lists(st.floats(4, 200), min_size=1, max_size=3),
    ratios=st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0]), min_size=1, max_size=3, unique=True),
    image=st.tuples(st.integers(32, 512), st.integers(32, 512)),
    offset=st.sampled_from([0.0, 0.5]),
)
def test_sizes_mode_properties(features, sizes, ratios, image, offset):
    levels = len(features)
    gen = AnchorGenerator([sizes] * levels, ratios, offset=offset)
    anchors = gen(features, image, dtype=torch.float64)
    k = len(sizes) * len(ratios)
    assert gen.num_anchors_per_location() == [k] * levels
    assert anchors.shape == (sum(h * w * k for h, w in features), 4)
    parts = gen.grid_anchors(features, image, dtype=torch.float64)
    for (fh, fw), part in zip(features, parts, strict=True):
        part = part.reshape(fh, fw, k, 4)
        centres_x = (part[..., 0] + part[..., 2]) / 2
        centres_y = (part[..., 1] + part[..., 3]) / 2
        stride_x, stride_y = image[1] / fw, image[0] / fh
        expect_x = (torch.arange(fw, dtype=torch.float64) + offset) * stride_x
        expect_y = (torch.arange(fh, dtype=torch.float64) + offset) * stride_y
        # centres on the stride grid, every shape at every location
        torch.testing.assert_close(centres_x, expect_x[None, :, None].expand(fh, fw, k), rtol=0, atol=1e-9)
        torch.testing.assert_close(centres_y, expect_y[:, None, None].expand(fh, fw, k), rtol=0, atol=1e-9)
        # shapes: w = s sqrt(r), h = s / sqrt(r); ratio = width / height
        w = part[0, 0, :, 2] - part[0, 0, :, 0]
        h = part[0, 0, :, 3] - part[0, 0, :, 1]
        expect_w = torch.tensor([s * math.sqrt(r) for r in ratios for s in sizes], dtype=torch.float64)
        torch.testing.assert_close(w, expect_w)
        torch.testing.assert_close(w / h, torch.tensor([r for r in ratios for _ in sizes], dtype=torch.float64))
    assert torch.equal(gen.level_index(features), torch.repeat_interleave(
        torch.arange(levels), torch.tensor([h * w * k for h, w in features])))


def test_wrong_number_of_feature_maps_says_what_was_expected():
    gen = AnchorGenerator.ssd300()
    with pytest.raises(ValueError, match="expects 6 feature maps") as err:
        gen(SSD300_FEATURES[:5], (300, 300))
    assert "got 5" in str(err.value)
    with pytest.raises(ValueError, match="steps has 2 entries but aspect_ratios has 3 levels"):
        AnchorGenerator.ssd([[2], [2], [2]], steps=[8, 16])
    with pytest.raises(ValueError, match="need 4"):
        AnchorGenerator.ssd([[2], [2], [2]], scales=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="aspect_ratios has 2 levels but sizes has 3"):
        AnchorGenerator([(32,), (64,), (128,)], [(1.0,), (2.0,)])
    with pytest.raises(ValueError, match="strides has 1 entries"):
        AnchorGenerator([(32,), (64,)], strides=[8])
    with pytest.raises(ValueError, match="positive"):
        AnchorGenerator([(32,), (64,)], (0.0, 1.0))
    with pytest.raises(ValueError, match="height, width"):
        gen(SSD300_FEATURES, 300)


def test_feature_tensors_and_devices_accepted():
    gen = AnchorGenerator.ssd300()
    feats = [torch.zeros(2, 8, h, w) for h, w in SSD300_FEATURES]
    image = torch.zeros(2, 3, 300, 300)
    assert torch.equal(gen(feats, image), gen(SSD300_FEATURES, (300, 300)))
    assert gen.num_anchors_per_level(feats) == [5776, 2166, 600, 150, 36, 4]


def test_cache_returns_same_tensor_and_detects_in_place_changes():
    gen = AnchorGenerator.ssd300()
    first = gen(SSD300_FEATURES, (300, 300))
    again = gen(SSD300_FEATURES, (300, 300))
    assert again is first
    reference = first.clone()
    first.mul_(2)  # a caller modifies the shared tensor in place
    rebuilt = gen(SSD300_FEATURES, (300, 300))
    assert rebuilt is not first and torch.equal(rebuilt, reference)
    # other keys are separate entries
    assert gen(SSD300_FEATURES, (300, 300), dtype=torch.float64).dtype == torch.float64
    other = gen(SSD300_FEATURES, (600, 600))  # same steps: same centres, sizes relative to the image
    torch.testing.assert_close(
        other[:, 2:] - other[:, :2], 2 * (reference[:, 2:] - reference[:, :2]), rtol=1e-5, atol=1e-3
    )
    torch.testing.assert_close(other[:, 2:] + other[:, :2], reference[:, 2:] + reference[:, :2], rtol=1e-5, atol=1e-3)
    gen.clear_cache()
    assert gen(SSD300_FEATURES, (300, 300)) is not rebuilt


def test_anchor_config_from_yaml_dict():
    cfg = from_dict(AnchorConfig, {"image_size": [300, 300], "matcher": {"pos_thresh": 0.5}})
    gen = cfg.build()
    assert cfg.resolved_feature_sizes() == SSD300_FEATURES
    assert gen(cfg.resolved_feature_sizes(), cfg.image_size).shape == (8732, 4)
    with pytest.raises(ConfigError, match="did you mean 'aspect_ratios'"):
        from_dict(AnchorConfig, {"aspect_ratio": [[2]]})
    with pytest.raises(ConfigError, match="low_quality"):
        from_dict(AnchorConfig, {"matcher": {"low_quality": "yes"}})
    sizes_cfg = from_dict(
        AnchorConfig,
        {"style": "sizes", "image_size": [640, 640], "sizes": [[32], [64], [128]], "aspect_ratios": [[0.5, 1, 2]],
         "steps": [8, 16, 32], "scales": None},
    )
    gen = sizes_cfg.build()
    assert sizes_cfg.resolved_feature_sizes() == [(80, 80), (40, 40), (20, 20)]
    assert gen.num_anchors_per_location() == [3, 3, 3]
    with pytest.raises(ValueError, match="sizes is required"):
        AnchorConfig(style="sizes").build()


def test_the_two_generators_share_one_base_and_the_ssd_aliases_build_default_boxes():
    from cvkit.ops.anchors import AnchorGrid, DefaultBoxGenerator

    ssd = AnchorGenerator.ssd300()
    sizes = AnchorGenerator([[32], [64]], [1.0, 2.0])
    assert type(ssd) is DefaultBoxGenerator and isinstance(sizes, AnchorGrid) and isinstance(ssd, AnchorGrid)
    assert torch.equal(ssd([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], (300, 300)),
                       DefaultBoxGenerator.ssd300()([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], (300, 300)))
    assert repr(ssd).startswith("DefaultBoxGenerator(") and repr(sizes).startswith("AnchorGenerator(")
    assert ssd.level_strides([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], (300, 300))[-1] == (300, 300)
    assert sizes.level_strides([(4, 4), (2, 2)], (64, 64)) == [(16.0, 16.0), (32.0, 32.0)]
