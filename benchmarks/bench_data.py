"""Data pipeline per worker: cvkit ``ssd_train`` vs an equivalent torchvision.transforms.v2 pipeline.

Each timed call loads ``--images`` JPEG files (seeded synthetic scenes, several boxes each) and does what
one DataLoader worker does with them:

- cvkit:       what a DataLoader worker runs per batch of 16: ``AugmentedDataset.__getitems__`` (per sample
               ``CocoDetection[i]``, read + OpenCV decode, then ``ssd_train``: photometric distortion, zoom-out,
               min-IoU crop, resize to 300x300, flip, rendered into the batch buffer; seed from
               ``(run seed, epoch, i)``), then ``collate_detection`` (uint8 ``(16, 3, 300, 300)``). The
               normalization to float32 is the model's first module, on the training device
               (:class:`cvkit.models.preprocess.ImageNormalizer`);
- torchvision: ``read_file`` + ``decode_jpeg`` -> v2 ``RandomPhotometricDistort``, ``RandomZoomOut``,
               ``RandomIoUCrop`` (same min-IoU choices and trials), ``Resize((300, 300), antialias=False)``
               (OpenCV's INTER_LINEAR does not antialias either), ``RandomHorizontalFlip``,
               ``SanitizeBoundingBoxes``, ``ToDtype(float32, scale=True)``; seed ``i``. Like torchvision's
               detection references it leaves the mean/std normalization to the model and does not stack;
- floor:       read + ``cv2.imdecode`` + ``cv2.resize`` to 300x300 (no augmentation, no tensor).

Targets (issue 4): cvkit >= 5x torchvision per core (threads=1), and cvkit within 2x of the floor
(reported as ``ratio = floor_ms / cvkit_ms``, target >= 0.5; those rows run each image through
``FLOOR_EPOCHS`` augmentation draws, since the cost of one pass depends on the draws). Rows also carry
samples/s per side. A third row, without a target, adds the model's normalizer on this CPU (one thread) to
cvkit's side: the whole CPU cost per sample when the model also trains on the CPU. A fourth (info) row adds
instead the normalizer's torch path (one transposing conversion to float32, then the multiply-add), which it
takes off the CPU or while tracing: the third row against the fourth says what its channel-last CPU path
(``cv2.split`` + numpy per plane) saves.
The process first takes the allocator settings every cvkit DataLoader worker takes
(:func:`cvkit.data.tune_worker_memory`: freed batch-sized blocks are reused, not unmapped); all three sides
run under them. Threads: 1 by default (one DataLoader worker = one core; loading scales with workers, not threads);
``--threads 1 2`` adds the 2-thread rows. Run: .venv/bin/python benchmarks/bench_data.py [--quick]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from _harness import Bench, parse_args
from torchvision import tv_tensors
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms import v2

from cvkit.data import AugmentedDataset, CocoDetection, collate_detection, tune_worker_memory
from cvkit.data.synthetic import SyntheticConfig, render_detection_image
from cvkit.models.preprocess import ImageNormalizer
from cvkit.transforms import TransformsConfig, ssd_train

OUT_SIZE = (300, 300)
BATCH = 16
#: the floor rows run every image through this many augmentation draws (epochs 0, 1, ...): the cost of
#: one pass depends on the draws (zoom-outs and small crops cost more), and 48 draws vary by +-10%
FLOOR_EPOCHS = 4


def write_dataset(folder: Path, height: int, width: int, count: int, seed: int = 0) -> Path:
    """``count`` seeded JPEG scenes of ``height x width`` in COCO layout (a crop of a square synthetic scene)."""
    cfg = SyntheticConfig(image_size=max(height, width), max_objects=8, max_object_size=max(height, width) // 2)
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        image, boxes, labels = render_detection_image(np.random.default_rng([seed, i]), cfg)
        image = np.ascontiguousarray(image[:height, :width])
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        (folder / "images" / f"{i:04d}.jpg").write_bytes(data.tobytes())
        images.append({"id": i, "file_name": f"{i:04d}.jpg", "height": height, "width": width})
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            x2, y2 = min(x2, width), min(y2, height)
            if x2 - x1 > 2 and y2 - y1 > 2:
                bbox = [x1, y1, x2 - x1, y2 - y1]
                annotations.append({"id": len(annotations), "image_id": i, "category_id": label, "bbox": bbox})
    categories = [{"id": k, "name": name} for k, name in enumerate(cfg.classes)]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (folder / "instances.json").write_text(json.dumps(doc))
    return folder


def torchvision_pipeline(cfg: TransformsConfig) -> v2.Compose:
    fill = {tv_tensors.Image: tuple(round(255 * m) for m in cfg.mean), "others": 0}
    return v2.Compose(
        [
            v2.RandomPhotometricDistort(p=cfg.photometric_p),
            v2.RandomZoomOut(fill=fill, side_range=(1.0, cfg.zoom_out_max), p=cfg.zoom_out_p),
            v2.RandomIoUCrop(
                min_scale=cfg.crop_min_scale, max_scale=1.0, min_aspect_ratio=1 / cfg.crop_max_aspect,
                max_aspect_ratio=cfg.crop_max_aspect, sampler_options=list(cfg.crop_min_ious), trials=cfg.crop_trials,
            ),
            v2.Resize(cfg.size, antialias=False),
            v2.RandomHorizontalFlip(p=cfg.hflip_p),
            v2.SanitizeBoundingBoxes(min_size=cfg.min_box_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def check_outputs(ours: list, theirs: list) -> bool:
    """Same number of samples; every image (3, 300, 300) (cvkit uint8, torchvision float32); every box finite
    and inside the image."""
    if len(ours) != len(theirs):
        return False
    for (image, boxes), dtype in [(o, torch.uint8) for o in ours] + [(t, torch.float32) for t in theirs]:
        if tuple(image.shape) != (3, *OUT_SIZE) or image.dtype != dtype:
            return False
        b = torch.as_tensor(boxes, dtype=torch.float32)
        if b.numel() and (not torch.isfinite(b).all() or b.min() < 0 or b[:, 0::2].max() > OUT_SIZE[1]):
            return False
    return True


def main() -> None:
    args = parse_args("data")
    tuned = tune_worker_memory()  # as in every DataLoader worker (seed_worker)
    print(f"worker allocator settings applied: {tuned}")
    if not args.threads:  # a DataLoader worker is one process on one core: measure per worker by default
        args.threads = [1]
    num_images = 16 if args.quick else 48
    bench = Bench("data", args)
    cfg = TransformsConfig(size=OUT_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        datasets = {}
        for height, width in ((300, 300), (480, 640)):
            root = write_dataset(Path(tmp) / f"{height}x{width}", height, width, num_images)
            datasets[(height, width)] = CocoDetection(root, "instances.json", "images")
        pipeline = ssd_train(cfg)
        tv = torchvision_pipeline(cfg)
        normalizer = ImageNormalizer(cfg.mean, cfg.std)  # the model's first module
        scale = normalizer.pixel_std.reciprocal()
        shift = -normalizer.pixel_mean * scale

        for threads in bench.thread_settings():
            cv2.setNumThreads(threads)
            for (height, width), ds in datasets.items():
                paths = [str(rec.path) for rec in ds.records]
                targets = [
                    (torch.from_numpy(rec.boxes.copy()), torch.from_numpy(rec.labels.copy())) for rec in ds.records
                ]

                def run_worker(ds=ds, epochs=1):
                    """What one worker hands over: uint8 batches of BATCH samples (``epochs`` draws per image),
                    fetched as the DataLoader fetches them (``AugmentedDataset.__getitems__``, then collate)."""
                    augmented = AugmentedDataset(ds, pipeline, seed=0)
                    batches = []
                    for epoch in range(epochs):
                        for start in range(0, len(ds), BATCH):
                            keys = [(i, epoch) for i in range(start, min(start + BATCH, len(ds)))]
                            batches.append(collate_detection(augmented.__getitems__(keys)))
                    return batches

                def run_cvkit(ds=ds, epochs=1):
                    out = []
                    for batch in run_worker(ds, epochs):
                        out += [(image, t["boxes"]) for image, t in zip(batch["images"], batch["targets"])]
                    return out

                def run_cvkit_cpu_normalize(ds=ds, epochs=FLOOR_EPOCHS):
                    return [normalizer(batch["images"]) for batch in run_worker(ds, epochs)]

                def run_cvkit_cpu_normalize_torch(ds=ds, epochs=FLOOR_EPOCHS):
                    """The normalizer's torch path (what it runs off the CPU or while tracing), on these batches."""
                    return [batch["images"].to(torch.float32, memory_format=torch.contiguous_format).mul_(scale)
                            .add_(shift) for batch in run_worker(ds, epochs)]

                def run_torchvision(paths=paths, targets=targets, size=(height, width)):
                    out = []
                    for i, path in enumerate(paths):
                        torch.manual_seed(i)
                        image = tv_tensors.Image(decode_jpeg(read_file(path)))
                        boxes = tv_tensors.BoundingBoxes(targets[i][0], format="XYXY", canvas_size=size)
                        image, target = tv(image, {"boxes": boxes, "labels": targets[i][1]})
                        out.append((image.as_subclass(torch.Tensor), target["boxes"].as_subclass(torch.Tensor)))
                    return out

                def run_floor(paths=paths, epochs=FLOOR_EPOCHS):
                    out = []
                    for path in paths * epochs:
                        with open(path, "rb") as fh:
                            data = np.frombuffer(fh.read(), dtype=np.uint8)
                        image = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB)
                        out.append(cv2.resize(image, (OUT_SIZE[1], OUT_SIZE[0]), interpolation=cv2.INTER_LINEAR))
                    return out

                case = {
                    "input": f"{width}x{height}", "output": "300x300", "images": len(ds), "pipeline": "ssd_train",
                    "worker": f"uint8 batches of {BATCH}",
                }
                row = bench.compare(
                    case={**case, "vs": "torchvision.v2"},
                    candidate=run_cvkit,
                    baseline=run_torchvision,
                    check=check_outputs,
                    target=5.0,
                )
                row["cvkit_samples_per_s"] = round(len(ds) / (row["cvkit_ms"] / 1e3), 1)
                row["torchvision_samples_per_s"] = round(len(ds) / (row["torchvision_ms"] / 1e3), 1)
                print(
                    f"    samples/s per worker: cvkit {row['cvkit_samples_per_s']}, "
                    f"torchvision {row['torchvision_samples_per_s']}"
                )
                case = {**case, "epochs": FLOOR_EPOCHS}
                row = bench.compare(
                    case={**case, "vs": "floor: decode+resize (ratio = floor/cvkit, need >= 0.5)"},
                    candidate=lambda: run_cvkit(epochs=FLOOR_EPOCHS),
                    baseline=run_floor,
                    check=lambda a, b: len(a) == len(b),
                    target=0.5,
                    baseline_name="floor",
                )
                n = len(ds) * FLOOR_EPOCHS
                row["cvkit_samples_per_s"] = round(n / (row["cvkit_ms"] / 1e3), 1)
                row["floor_samples_per_s"] = round(n / (row["floor_ms"] / 1e3), 1)
                print(
                    f"    samples/s per worker: cvkit {row['cvkit_samples_per_s']}, floor {row['floor_samples_per_s']}"
                    f"  (cvkit costs {1 / row['ratio']:.2f}x the floor; target <= 2x)"
                )
                for vs, candidate, label in (
                    ("the model's normalizer", run_cvkit_cpu_normalize, "with the normalization on the CPU"),
                    ("the normalizer's torch path", run_cvkit_cpu_normalize_torch, "with the torch path instead"),
                ):
                    row = bench.compare(
                        case={**case, "vs": f"floor, cvkit + {vs} on this CPU (info, no target)"},
                        candidate=candidate,
                        baseline=run_floor,
                        check=lambda a, b: sum(len(x) for x in a) == len(b),
                        baseline_name="floor",
                    )
                    print(f"    {label}: cvkit costs {1 / row['ratio']:.2f}x the floor")
    print(f"augmentation step statistics over all runs:\n{pipeline.format_stats()}")
    bench.finish()


if __name__ == "__main__":
    sys.exit(main())
