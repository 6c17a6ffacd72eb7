"""SSD300 training step and inference: cvkit's resnet18 SSD vs torchvision's ``SSD`` class, same network.

Both detectors share one architecture and the same weights: the same resnet18 taps + SSD extra layers
(a copy of cvkit's modules handed to torchvision as its backbone), the same head weights (torchvision's
``SSDHead`` takes cvkit's per-level class/box convolutions; both order anchors (level, y, x, k)), the same
default boxes (``DefaultBoxGenerator`` with SSD300's ratios, scales and steps), the same loss settings
(IoU 0.5 SSD matching, BoxCoder weights 10, 10, 5, 5, 3:1 hard negatives, smooth-L1 with beta 1) and the
same postprocess settings (score > 0.01, top-400 per class, NMS 0.45, 200 per image), the same input
normalization (ImageNet's mean/std) and 300x300 inputs. Each side gets the batch as its training loop does:
cvkit the uint8 ``(B, 3, 300, 300)`` batch its loaders ship (its first module normalizes it,
:mod:`cvkit.models.preprocess`), torchvision float32 images in 0..1 (``ToDtype(float32, scale=True)`` in its
references' workers; its ``GeneralizedRCNNTransform`` normalizes them and, at 300x300, resizes nothing).

- train: forward + matching + loss + backward (``zero_grad`` included, no optimizer step), batch 16
  (``--batch``), 300x300, 20 classes; the check compares the two total losses.
- infer: forward + postprocess in eval mode (boxes in original pixels); the check compares detections.
- train_amp_vs_fp32: cvkit's training step under the autocast ``cvkit train`` uses by default (``train.amp``:
  bfloat16 on a CPU with native bf16 -- AVX512_BF16 / AMX --, float16 on CUDA) vs torchvision in float32, its
  CPU default; train_amp_both: both under that autocast. Loss check: within 3% (reduced precision).
- infer_folded_bn: the same with ``cvkit.models.fold_batchnorm(model)`` (an inference copy with every
  BatchNorm that follows a conv folded into it), against the same torchvision model.

cvkit runs with its default config (``model.channels_last: true``); torchvision with its defaults
(NCHW). Images are seeded uint8 noise; targets 1-6 boxes per image; the class convolutions' background bias is
raised by 4 in both models so that, as in a trained detector, most anchors score as background.
Targets (issue 5): train >= 1.3x, inference >= 1.5x images/s.

Run: .venv/bin/python benchmarks/bench_train_step.py [--quick] [--batch 16] [--threads 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections import OrderedDict

import torch
from _harness import Bench, parse_args
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead

from cvkit.engine.train import cpu_has_native_bf16
from cvkit.models import LossConfig, ModelConfig, PostprocessConfig, build_detector, fold_batchnorm
from cvkit.models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from cvkit.ops import AnchorConfig

NUM_CLASSES = 20
SIZE = 300


class _TorchvisionBackbone(nn.Module):
    """cvkit's backbone taps + extra layers (copied), returning the OrderedDict torchvision's SSD expects."""

    def __init__(self, backbone: nn.Module, extras: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.extras = extras

    def forward(self, x: torch.Tensor) -> OrderedDict:
        taps = self.backbone(x)
        features = taps + self.extras(taps[-1])
        return OrderedDict((str(i), f) for i, f in enumerate(features))


def build_pair(device: torch.device):
    anchor_cfg = AnchorConfig()
    model, criterion, postprocessor = build_detector(
        ModelConfig(backbone="resnet18"), LossConfig(), PostprocessConfig(), anchor_cfg, NUM_CLASSES
    )
    with torch.no_grad():
        for conv in model.head.cls_convs:
            conv.bias.view(-1, NUM_CLASSES + 1)[:, 0] += 4.0  # background first: (K*(C+1),) -> (K, C+1)
    tv_backbone = _TorchvisionBackbone(copy.deepcopy(model.backbone), copy.deepcopy(model.extras))
    tv_backbone.to(memory_format=torch.contiguous_format)
    channels = model.backbone.out_channels + model.extras.out_channels
    per_location = model.anchor_generator.num_anchors_per_location()
    head = SSDHead(channels, per_location, NUM_CLASSES + 1)
    for ours, theirs in zip(model.head.cls_convs, head.classification_head.module_list):
        theirs.load_state_dict(ours.state_dict())
    for ours, theirs in zip(model.head.box_convs, head.regression_head.module_list):
        theirs.load_state_dict(ours.state_dict())
    boxes = DefaultBoxGenerator(
        [list(r) for r in anchor_cfg.aspect_ratios], scales=list(anchor_cfg.scales), steps=list(anchor_cfg.steps)
    )
    tv = SSD(
        tv_backbone,
        boxes,
        (SIZE, SIZE),
        NUM_CLASSES + 1,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        head=head,
        score_thresh=0.01,
        nms_thresh=0.45,
        detections_per_img=200,
        iou_thresh=0.5,
        topk_candidates=400,
        positive_fraction=0.25,
    )
    tv.head.to(memory_format=torch.contiguous_format)
    return model.to(device), criterion, postprocessor, tv.to(device)


def make_batch(batch: int, device: torch.device, seed: int = 0):
    """uint8 ``(batch, 3, SIZE, SIZE)`` noise images and 1-6 random boxes per image, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    targets = []
    for _ in range(batch):
        n = int(torch.randint(1, 7, (1,), generator=g))
        wh = torch.rand(n, 2, generator=g) * 180 + 20
        xy = torch.rand(n, 2, generator=g) * (SIZE - wh)
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images.to(device), targets


def main(argv: list[str] | None = None) -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--batch", type=int, default=16, help="images per step (default 16)")
    known, rest = extra.parse_known_args(sys.argv[1:] if argv is None else argv)
    args = parse_args("train_step", rest)
    if args.quick:
        args.repeat = min(args.repeat, 3)
    batch = 4 if args.quick and known.batch == 16 else known.batch
    device = torch.device(args.device)
    if device.type == "cuda":
        # full float32 on both sides, so that the outputs can be compared (TF32 convolutions of the two
        # models round differently); the amp rows show the fast path
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    bench = Bench("train_step", args)
    torch.manual_seed(0)
    model, criterion, postprocessor, tv = build_pair(device)
    images, targets = make_batch(batch, device)  # uint8: cvkit's input
    tv_images = list(images.float() / 255.0)  # float 0..1: torchvision's input (it normalizes them)
    tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]  # torchvision: 0 = background
    sizes = torch.tensor([[SIZE, SIZE]] * batch)

    def cvkit_train():
        model.zero_grad(set_to_none=True)
        losses = criterion(model(images), targets)
        losses["loss"].backward()
        return float(losses["loss"].detach())

    def tv_train():
        tv.zero_grad(set_to_none=True)
        losses = tv(tv_images, tv_targets)
        loss = losses["bbox_regression"] + losses["classification"]
        loss.backward()
        return float(loss.detach())

    @torch.no_grad()
    def cvkit_infer():
        return postprocessor(model(images), sizes, sizes)

    @torch.no_grad()
    def cvkit_infer_folded():
        return postprocessor(folded(images), sizes, sizes)

    @torch.no_grad()
    def tv_infer():
        return tv(tv_images)

    def same_loss(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-3 * max(1.0, abs(b))

    # mixed precision as `cvkit train` runs it by default (train.amp): bfloat16 autocast on a CPU with native
    # bf16, float16 on CUDA; torchvision's SSD under the same autocast, and in float32 (its CPU default)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    with_amp = device.type == "cuda" or cpu_has_native_bf16()

    def cvkit_train_amp():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype):
            losses = criterion(model(images), targets)
        losses["loss"].backward()
        return float(losses["loss"].detach())

    def tv_train_amp():
        tv.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype):
            losses = tv(tv_images, tv_targets)
            loss = losses["bbox_regression"] + losses["classification"]
        loss.backward()
        return float(loss.detach())

    def close_loss(a: float, b: float) -> bool:  # reduced precision: a few bf16 ulps of a sum of many terms
        return abs(a - b) <= 3e-2 * max(1.0, abs(b))

    def same_detections(ours, theirs) -> bool:
        for a, b in zip(ours, theirs):
            if a["boxes"].shape != b["boxes"].shape:
                return False
            if not torch.allclose(a["scores"], b["scores"], atol=1e-4):
                return False
            # equal scores may be ordered differently: compare the top detections only
            k = min(20, a["boxes"].shape[0])
            if not torch.allclose(a["boxes"][:k].cpu(), b["boxes"][:k].cpu(), atol=1e-2):
                return False
        return True

    for _ in bench.thread_settings():
        # both sides run the same batches equally often, so their BatchNorm statistics stay equal
        model.eval()
        tv.eval()
        row = bench.compare(
            case={"step": "infer", "model": "ssd300_resnet18", "batch": batch, "classes": NUM_CLASSES},
            candidate=cvkit_infer,
            baseline=tv_infer,
            check=same_detections,
            target=1.5,
            baseline_name="torchvision",
        )
        _images_per_second(row, batch)
        folded = fold_batchnorm(model)  # from the current (eval) statistics
        row = bench.compare(
            case={"step": "infer_folded_bn", "model": "ssd300_resnet18", "batch": batch, "classes": NUM_CLASSES},
            candidate=cvkit_infer_folded,
            baseline=tv_infer,
            check=same_detections,
            target=1.5,
            baseline_name="torchvision",
        )
        _images_per_second(row, batch)
        model.train()
        tv.train()
        row = bench.compare(
            case={"step": "train", "model": "ssd300_resnet18", "batch": batch, "classes": NUM_CLASSES},
            candidate=cvkit_train,
            baseline=tv_train,
            check=same_loss,
            target=1.3,
            baseline_name="torchvision",
        )
        _images_per_second(row, batch)
        if not with_amp:
            continue
        for step, baseline in (("train_amp_vs_fp32", tv_train), ("train_amp_both", tv_train_amp)):
            row = bench.compare(
                case={"step": step, "model": "ssd300_resnet18", "batch": batch, "classes": NUM_CLASSES,
                      "amp_dtype": str(amp_dtype).replace("torch.", "")},
                candidate=cvkit_train_amp,
                baseline=baseline,
                check=close_loss,
                target=1.3,
                baseline_name="torchvision",
            )
            _images_per_second(row, batch)
    bench.finish()


def _images_per_second(row: dict, batch: int) -> None:
    row["cvkit_images_per_s"] = round(batch / (row["cvkit_ms"] / 1e3), 2)
    row["torchvision_images_per_s"] = round(batch / (row["torchvision_ms"] / 1e3), 2)
    print(
        f"[train_step] {row['case']['step']}: cvkit {row['cvkit_images_per_s']:.2f} images/s, "
        f"torchvision {row['torchvision_images_per_s']:.2f} images/s, ratio {row['ratio']:.2f}x "
        f"(target {row['target']}x: {'met' if row['met'] else 'NOT met'})",
        flush=True,
    )


if __name__ == "__main__":
    main()
