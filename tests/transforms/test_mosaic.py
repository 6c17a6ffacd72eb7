"""Mosaic: pixels and boxes follow their tile exactly, cut boxes are clipped and filtered, the draws are seeded,
the sampler stops asking for mosaics late in the run, and the training loop tells it how far the run is."""

import numpy as np
import pytest
import torch

from cvkit.data.loader import AugmentedDataset, EpochSampler, build_dataloader
from cvkit.transforms.config import TransformsConfig
from cvkit.transforms.mosaic import Mosaic, mosaic4, mosaic_draws
from cvkit.transforms.presets import build_mosaic


def _sample(value: int, size=(40, 40), boxes=((4.0, 4.0, 12.0, 14.0),), label=0):
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = value
    image[..., 1] = np.arange(w, dtype=np.uint8)[None, :]  # x coordinate
    image[..., 2] = np.arange(h, dtype=np.uint8)[:, None]  # y coordinate
    return {"image": image, "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.full((len(boxes),), label, dtype=torch.int64), "image_id": value, "file_name": f"{value}",
            "orig_size": (h, w)}


def test_tiles_touch_the_centre_with_the_right_corner_and_pixels_come_from_their_image():
    samples = [_sample(10 * (k + 1), boxes=()) for k in range(4)]
    out = mosaic4(samples, (40, 40), (0.5, 0.25), fill=(1, 2, 3))
    image = out["image"]
    cx, cy = 20, 10
    assert image.shape == (40, 40, 3) and out["image_id"] == 10
    # top-left quadrant: image 0's bottom-right corner at the centre, so canvas (x, y) = image (x + 20, y + 30)
    assert image[0, 0, 0] == 10 and image[0, 0, 1] == 0 + (40 - cx) and image[0, 0, 2] == 0 + (40 - cy)
    assert image[cy - 1, cx - 1, 0] == 10 and image[cy - 1, cx - 1, 1] == 39 and image[cy - 1, cx - 1, 2] == 39
    # top-right: image 1's bottom-left corner; bottom-left: image 2's top-right; bottom-right: image 3's top-left
    assert image[cy - 1, cx, 0] == 20 and image[cy - 1, cx, 1] == 0 and image[cy - 1, cx, 2] == 39
    assert image[cy, cx - 1, 0] == 30 and image[cy, cx - 1, 1] == 39 and image[cy, cx - 1, 2] == 0
    assert image[cy, cx, 0] == 40 and image[cy, cx, 1] == 0 and image[cy, cx, 2] == 0
    assert image[39, 39, 0] == 40 and image[39, 39, 1] == 39 - cx and image[39, 39, 2] == 39 - cy
    assert len(out["boxes"]) == 0 and out["labels"].dtype == torch.int64


def test_uncovered_canvas_is_filled():
    samples = [_sample(10 * (k + 1), size=(10, 10), boxes=()) for k in range(4)]
    samples = [dict(s, image=s["image"][:5]) for s in samples]  # 5 x 10 images; long side 10 -> 40: 20 x 40
    out = mosaic4(samples, (40, 40), (0.5, 0.75), fill=(1, 2, 3))  # centre row 30; image 0 rows 10..29
    assert tuple(out["image"][9, 0]) == (1, 2, 3) and out["image"][10, 0, 0] == 10


def test_boxes_move_with_their_tile_are_clipped_and_filtered_by_visibility():
    inside = (24.0, 32.0, 34.0, 38.0)  # in image 0's bottom-right part: fully visible
    cut = (30.0, 10.0, 40.0, 39.0)  # x 30..40 of image 0 -> canvas 10..20, rows 10..39 -> canvas -20..9: cut
    samples = [_sample(10, boxes=(inside, cut), label=3)] + [_sample(20 + k, boxes=()) for k in range(3)]
    out = mosaic4(samples, (40, 40), (0.5, 0.25), min_visibility=0.0)
    # image 0 offset: (cx - 40, cy - 40) = (-20, -30)
    assert out["boxes"].tolist() == [[4.0, 2.0, 14.0, 8.0], [10.0, 0.0, 20.0, 9.0]]
    assert out["labels"].tolist() == [3, 3]
    strict = mosaic4(samples, (40, 40), (0.5, 0.25), min_visibility=0.5)  # cut keeps 9 / 29 of its height
    assert strict["boxes"].tolist() == [[4.0, 2.0, 14.0, 8.0]]
    gone = mosaic4(samples, (40, 40), (0.5, 0.25), min_box_size=7.0)  # the inside box is 6 px tall
    assert gone["boxes"].tolist() == [[10.0, 0.0, 20.0, 9.0]]


@pytest.mark.parametrize("seed", range(20))
def test_random_mosaics_keep_box_contents_and_stay_in_their_quadrant(seed):
    rng = np.random.default_rng(seed)
    samples = []
    for k in range(4):
        h, w = rng.integers(20, 80, size=2)
        xy = rng.uniform(0, [w - 2, h - 2], size=(5, 2))
        wh = rng.uniform(1, 30, size=(5, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
        samples.append({"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "boxes": torch.from_numpy(boxes),
                        "labels": torch.arange(5) + 10 * k})
    draws = mosaic_draws(rng, 4)
    out = mosaic4(samples, (64, 48), draws.center, min_visibility=0.3)
    cx, cy = round(draws.center[0] * 48), round(draws.center[1] * 64)
    boxes, labels = out["boxes"], out["labels"]
    assert boxes.shape[0] == labels.shape[0] and boxes.dtype == torch.float32
    assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 48).all() and (boxes[:, 3] <= 64).all())
    assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
    for box, label in zip(boxes.tolist(), labels.tolist()):
        k = label // 10
        x_ok = box[2] <= cx if k in (0, 2) else box[0] >= cx
        y_ok = box[3] <= cy if k in (0, 1) else box[1] >= cy
        assert x_ok and y_ok, (box, k, cx, cy)


def test_mosaic_draws_are_seeded_and_p_decides():
    cfg = TransformsConfig(size=(32, 32), mosaic_p=0.5, mosaic_off_fraction=0.25)
    mosaic = build_mosaic(cfg)
    assert mosaic is not None and mosaic.until == 0.75 and mosaic.fill == (124, 116, 104)
    assert build_mosaic(TransformsConfig()) is None
    data = [_sample(k, boxes=((2.0, 2.0, 30.0, 30.0),), label=k) for k in range(8)]
    made = 0
    for seed in range(40):
        a = mosaic.maybe_apply(data[0], seed, data.__getitem__, len(data))
        b = mosaic.maybe_apply(data[0], seed, data.__getitem__, len(data))
        assert np.array_equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
        made += a is not data[0]
    assert 10 < made < 30  # p = 0.5
    never = Mosaic(p=0.0, until=1.0, size=(32, 32), fill=(0, 0, 0))
    assert never.maybe_apply(data[0], 1, data.__getitem__, len(data)) is data[0]
    skipped = [None] * 8
    assert Mosaic(1.0, 1.0, (32, 32), (0, 0, 0)).maybe_apply(data[0], 1, skipped.__getitem__, 8) is data[0]


def test_sampler_flags_keys_until_the_fraction_and_the_dataset_obeys():
    sampler = EpochSampler(4, shuffle=False, mosaic_until=0.5)
    keys = iter(sampler)
    assert next(keys) == (0, 0, True)
    sampler.set_fraction(0.6)
    assert next(keys) == (1, 0)  # keys are made lazily: the change applies to the next one
    assert list(EpochSampler(2, shuffle=False)) == [(0, 0), (1, 0)]
    data = [_sample(k, boxes=((2.0, 2.0, 30.0, 30.0),), label=k) for k in range(4)]
    dataset = AugmentedDataset(data, None, seed=3, mosaic=Mosaic(1.0, 0.5, (40, 40), (0, 0, 0)))
    mixed, plain = dataset[(1, 0, True)], dataset[(1, 0)]
    assert plain is data[1]
    assert mixed is not data[1] and mixed["image_id"] == 1 and np.array_equal(mixed["image"],
                                                                                dataset[(1, 0, True)]["image"])


def test_train_one_epoch_reports_the_fraction_to_the_sampler():
    from cvkit.engine.stopping import RunBudget
    from cvkit.engine.train import train_one_epoch

    data = [_sample(k, boxes=((2.0, 2.0, 30.0, 30.0),), label=0) for k in range(8)]
    loader = build_dataloader(data, None, batch_size=2, shuffle=False, num_workers=0,
                              mosaic=Mosaic(1.0, 0.5, (40, 40), (0, 0, 0)))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, images):
            return self.w.sum() * 0 + images.float().mean() * 0

    model = Model()
    budget = RunBudget(max_iters=4)
    seen = []
    original = loader.sampler.set_fraction
    loader.sampler.set_fraction = lambda f: (seen.append(f), original(f))  # type: ignore[method-assign]
    budget.start()
    train_one_epoch(model, lambda out, targets: {"loss": out}, torch.optim.SGD(model.parameters(), lr=0.1),
                    loader, "cpu", epoch=0, budget=budget)
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert loader.sampler.fraction == 1.0
