"""Collate, the DataLoader builder and reproducible per-sample augmentation."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cvkit.data import (
    AugmentedDataset,
    CocoDetection,
    EpochSampler,
    build_dataloader,
    collate_classification,
    collate_detection,
    sample_seed,
    set_epoch,
)
from cvkit.data.collate import Skipped
from cvkit.transforms import TransformsConfig, ssd_train


def fake(image_id, num_boxes, size=(8, 8)):
    return {
        "image": torch.zeros(3, *size),
        "boxes": torch.arange(num_boxes * 4, dtype=torch.float32).reshape(num_boxes, 4),
        "labels": torch.arange(num_boxes),
        "image_id": image_id,
        "orig_size": (20, 30),
        "file_name": f"{image_id}.jpg",
    }


def test_collate_detection_variable_boxes_and_skipped_samples():
    batch = collate_detection([fake(1, 2), None, fake(2, 0), fake(3, 5)])
    assert batch["images"].shape == (3, 3, 8, 8)
    assert [t["boxes"].shape for t in batch["targets"]] == [(2, 4), (0, 4), (5, 4)]
    assert [t["labels"].dtype for t in batch["targets"]] == [torch.int64] * 3
    assert batch["image_ids"].tolist() == [1, 2, 3] and batch["orig_sizes"].tolist() == [[20, 30]] * 3
    assert batch["num_skipped"] == 1 and batch["file_names"] == ["1.jpg", "2.jpg", "3.jpg"]


def test_collate_detection_different_sizes_and_raw_numpy_images():
    raw = fake(1, 1)
    raw["image"] = np.zeros((5, 7, 3), np.uint8)
    batch = collate_detection([raw, fake(2, 1, size=(4, 4))])
    assert isinstance(batch["images"], list) and [tuple(im.shape) for im in batch["images"]] == [(3, 5, 7), (3, 4, 4)]
    empty = collate_detection([None, None])
    assert empty["images"].shape[0] == 0 and empty["num_skipped"] == 2 and empty["orig_sizes"].shape == (0, 2)


def test_collate_classification():
    samples = [{"image": torch.ones(3, 4, 4), "label": 2, "file_name": "a"}, None]
    batch = collate_classification(samples)
    assert batch["images"].shape == (1, 3, 4, 4) and batch["labels"].tolist() == [2] and batch["num_skipped"] == 1


def test_epoch_sampler_is_a_seeded_permutation_per_epoch():
    sampler = EpochSampler(10, shuffle=True, seed=3)
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(10)) and {e for _, e in first} == {0}
    assert list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert {e for _, e in second} == {1} and [i for i, _ in second] != [i for i, _ in first]
    assert [i for i, _ in EpochSampler(4, shuffle=False)] == [0, 1, 2, 3]


def test_sample_seed_depends_on_all_three_inputs():
    seeds = {sample_seed(r, e, i) for r in range(3) for e in range(3) for i in range(3)}
    assert len(seeds) == 27 and sample_seed(1, 2, 3) == sample_seed(1, 2, 3)


@pytest.fixture(scope="module")
def train_set(synthetic_root):
    return CocoDetection(synthetic_root, "annotations/instances_train.json", "images/train")


def _epoch(loader, epoch):
    set_epoch(loader, epoch)
    out = {}
    for batch in loader:
        for k, image_id in enumerate(batch["image_ids"].tolist()):
            out[image_id] = (batch["images"][k], batch["targets"][k]["boxes"])
    return out


def test_augmentation_of_sample_i_in_epoch_e_is_reproducible_across_workers(train_set):
    transform = ssd_train(TransformsConfig())
    kwargs = dict(transform=transform, shuffle=True, seed=7, pin_memory=False)
    serial = build_dataloader(train_set, batch_size=4, num_workers=0, **kwargs)
    workers = build_dataloader(train_set, batch_size=5, num_workers=2, **kwargs)
    a, b = _epoch(serial, 1), _epoch(workers, 1)
    assert a.keys() == b.keys() and len(a) == len(train_set)
    for image_id in a:
        assert torch.equal(a[image_id][0], b[image_id][0]) and torch.equal(a[image_id][1], b[image_id][1])
    c = _epoch(serial, 2)
    assert sum(not torch.equal(a[k][0], c[k][0]) for k in a) > len(a) // 2  # another epoch, other augmentation
    with pytest.raises(TypeError):
        set_epoch(torch.utils.data.DataLoader(train_set), 1)


def test_augmented_dataset_keys(train_set):
    ds = AugmentedDataset(train_set, ssd_train(TransformsConfig()), seed=1)
    assert torch.equal(ds[3]["image"], ds[(3, 0)]["image"])
    assert not torch.equal(ds[(3, 0)]["image"], ds[(3, 1)]["image"])
    assert AugmentedDataset(train_set, None)[2]["image"].dtype == np.uint8


def test_loader_from_config(synthetic_cache, synthetic_root):
    from cvkit.data import DataConfig, build_dataset, loader_from_config
    from cvkit.data.synthetic import SyntheticConfig

    small = SyntheticConfig(num_train=24, num_val=8)
    cfg = DataConfig(cache_dir=str(synthetic_cache), synthetic=small, batch_size=5, num_workers=0, seed=3)
    train = loader_from_config(cfg, build_dataset(cfg, "train"), ssd_train(TransformsConfig()), train=True)
    batches = list(train)
    assert [len(b["targets"]) for b in batches] == [5, 5, 5, 5, 4]
    assert sorted(i for b in batches for i in b["image_ids"].tolist()) == list(range(1, 25))
    assert [i for b in batches for i in b["image_ids"].tolist()] != list(range(1, 25))  # shuffled
    images = batches[0]["images"]  # uint8 out of the workers, and nothing else: the model normalizes
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 300, 300)
    assert images.permute(0, 2, 3, 1).is_contiguous()  # a channel-last view of the batch buffer
    assert "normalize" not in batches[0]
    from cvkit.models.preprocess import ImageNormalizer

    x = ImageNormalizer(TransformsConfig().mean, TransformsConfig().std)(images)  # the model's first module
    expected = (images.double() / 255 - torch.tensor(TransformsConfig().mean).view(3, 1, 1)) / torch.tensor(
        TransformsConfig().std
    ).view(3, 1, 1)
    assert x.dtype == torch.float32 and torch.allclose(x.double(), expected, atol=1e-5)
    val = loader_from_config(cfg, build_dataset(cfg, "val"), None, train=False)
    assert [i for b in val for i in b["image_ids"].tolist()] == list(range(1, 9))  # in order
    raw = next(iter(val))
    assert raw["images"].dtype == torch.uint8 and "normalize" not in raw  # no transform: the decoded pixels
    cls_cfg = DataConfig(format="synthetic_cls", cache_dir=str(synthetic_cache), synthetic=small, num_workers=0)
    cls_batch = next(iter(loader_from_config(cls_cfg, build_dataset(cls_cfg, "val"), None, train=False)))
    assert cls_batch["labels"].dtype == torch.int64 and cls_batch["images"].shape[1:] == (3, 64, 64)


_FORK_SCRIPT = """
import cv2, numpy as np, torch
from cvkit.data.loader import build_dataloader
cv2.setNumThreads(2)
big = np.random.default_rng(0).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)
for _ in range(3):
    cv2.resize(big, (1500, 1500))  # starts OpenCV's thread pool in the parent
class Images(torch.utils.data.Dataset):
    def __len__(self):
        return 8
    def __getitem__(self, i):
        return torch.tensor(float(cv2.resize(big[:64, :64], (32, 32)).mean()))
loader = build_dataloader(Images(), None, batch_size=4, num_workers=2, collate_fn=torch.stack)
print(sum(len(batch) for batch in loader))
"""


def test_workers_do_not_deadlock_after_the_parent_used_opencv_threads():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "8"


def test_skipped_samples_are_reported_per_kind_by_batch_and_epoch(tmp_path, caplog):
    import logging

    from cvkit.engine.train import train_one_epoch

    from .helpers import write_coco

    images = [{"id": i, "file_name": f"{i}.png", "height": 20, "width": 20} for i in range(4)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 8, 8]} for i in range(4)]
    path = write_coco(tmp_path, images, anns, [{"id": 1, "name": "thing"}])
    (tmp_path / "images" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # decoded in a worker
    (tmp_path / "images" / "3.png").unlink()  # found when loading: dropped and reported then
    dataset = CocoDetection(tmp_path, path.name, "images", on_error="skip")
    assert len(dataset) == 3 and dataset.report.errors == {"missing_file": 1}
    loader = build_dataloader(dataset, None, batch_size=4, shuffle=False, num_workers=1)
    batch = next(iter(loader))
    assert batch["num_skipped"] == 1 and batch["file_names"] == ["0.png", "2.png"]
    assert batch["skipped_kinds"] == {"truncated_image": 1}

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x.float().mean() * self.w

    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.WARNING, logger="cvkit.engine"):
        stats = train_one_epoch(model, lambda out, targets: {"loss": out}, optimizer, loader, "cpu", epoch=2)
    assert stats["skipped"] == 1
    assert "epoch 3: skipped 1 bad sample(s)" in caplog.text and "truncated_image: 1" in caplog.text


_FAULTS_SCRIPT = """
import resource, sys
import numpy as np
from cvkit.data import tune_worker_memory
applied = tune_worker_memory() if sys.argv[1] == "tuned" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def batches():  # what a worker does per batch: 16 images of 300x300, stacked, all freed
    images = [np.full((300, 300, 3), k, np.uint8) for k in range(16)]
    return np.stack(images).sum(dtype=np.int64)
for _ in range(3):
    batches()
before = faults()
for _ in range(20):
    batches()
print(applied, (faults() - before) / 20)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc allocator settings")
def test_tune_worker_memory_stops_fresh_page_faults_per_batch():
    """Default glibc maps and unmaps every batch-sized block (~1000 page faults per batch of 16 300x300
    images); tuned, the freed blocks are reused."""
    runs = {}
    for mode in ("default", "tuned"):
        result = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], capture_output=True, text=True,
                                check=True, cwd=Path(__file__).resolve().parents[2])
        applied, faults = result.stdout.split()
        runs[mode] = (applied == "True", float(faults))
    if not runs["tuned"][0]:
        pytest.skip("not glibc: mallopt unavailable")
    assert runs["default"][1] > 500  # a stacked 4 MB batch alone is ~1000 fresh pages
    assert runs["tuned"][1] < 50


def test_getitems_renders_a_batch_into_one_buffer(train_set):
    """``__getitems__`` (what a DataLoader worker calls) gives the values of one-by-one ``__getitem__``, with
    the images in one buffer that the collate function hands over without a copy."""
    ds = AugmentedDataset(train_set, ssd_train(TransformsConfig()), seed=3)
    keys = [(k, 2) for k in (5, 0, 7, 3)]
    one_by_one, together = [ds[key] for key in keys], ds.__getitems__(keys)
    for a, b in zip(one_by_one, together):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
        assert torch.equal(a["labels"], b["labels"])
    batch = collate_detection(together)
    pointer = together[0]["image"].untyped_storage().data_ptr()
    assert batch["images"].untyped_storage().data_ptr() == pointer  # the buffer itself: no stacking copy
    assert torch.equal(batch["images"], torch.stack([s["image"] for s in one_by_one]))
    # a sample the dataset skips leaves its slot empty: the batch is stacked as usual, same values
    skipping = AugmentedDataset(_SkipSome(train_set, {0}), ssd_train(TransformsConfig()), seed=3)
    mixed = skipping.__getitems__(keys)
    assert isinstance(mixed[1], Skipped)
    batch = collate_detection(mixed)
    assert batch["num_skipped"] == 1 and batch["images"].untyped_storage().data_ptr() != pointer
    assert torch.equal(batch["images"], torch.stack([one_by_one[k]["image"] for k in (0, 2, 3)]))
    # decoded a few at a time (groups of at most 2 images here): the same samples, one buffer again
    ds.DECODE_GROUP_BYTES = 2 * 300 * 300 * 3 - 1
    small_groups = ds.__getitems__(keys)
    for a, b in zip(one_by_one, small_groups):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    assert collate_detection(small_groups)["images"].untyped_storage().data_ptr() == (
        small_groups[0]["image"].untyped_storage().data_ptr()
    )


class _SkipSome:
    """A dataset whose ``skip`` indices come out as ``None`` (a bad sample under on_error="skip")."""

    def __init__(self, dataset, skip):
        self.dataset, self.skip = dataset, skip

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return None if index in self.skip else self.dataset[index]
