"""``cvkit infer --checkpoint CKPT INPUTS...``: detect objects in image files, folders and globs.

The checkpoint carries the config, class names and preprocessing, so nothing else is needed. Images
are read with OpenCV (EXIF orientation applied, greyscale/RGBA/16-bit converted), resized to the
network input and run in uint8 batches (the model normalizes them itself, from the mean/std buffers in
its state_dict), and the detections are mapped back to original pixels.
Writes to ``--out``: annotated images (``<stem>.jpg``, the detections scoring at least ``--draw-thresh``),
one JSON per image (``<stem>.json``: boxes xyxy in pixels, scores, labels, class names; inputs sharing a
stem are named ``<folder>_<stem>``), and
``detections_coco.json`` (COCO results format with the dataset's original category ids; ``image_id`` is
the image's position in the input order unless the file name is an integer; written image by image to a
temporary file renamed onto that name at the end, so memory stays flat however many images). Unreadable
images are reported and skipped; the run goes on. Exit status 2 when no input exists or none could be read.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvkit.cli._errors import CliError, cli_errors
from cvkit.cli._inputs import expand_inputs, missing_inputs, output_stems


class Predictor:
    """A detector rebuilt from a cvkit checkpoint, with the preprocessing it was trained with."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", score_thresh: float | None = None,
                 iou_thresh: float | None = None, max_det: int | None = None):
        import dataclasses

        from cvkit.engine.checkpoint import CheckpointError, checkpoint_weights, load_checkpoint
        from cvkit.run_config import run_config_from_dict
        from cvkit.tasks.detect import build_model

        state = load_checkpoint(checkpoint, map_location="cpu")
        extra = state.get("extra") or {}
        if "config" not in extra or "class_names" not in extra:
            raise CheckpointError(f"{checkpoint}: not a cvkit detection checkpoint (no config / class names inside)",
                                  "not_cvkit_checkpoint")
        cfg = run_config_from_dict(extra["config"], f"{checkpoint} (stored config)")
        post = cfg.postprocess
        changes: dict[str, Any] = {k: v for k, v in (("score_thresh", score_thresh), ("iou_thresh", iou_thresh),
                                     ("max_detections", max_det)) if v is not None}
        if changes:
            post = dataclasses.replace(post, **changes)
        self.class_names = list(extra["class_names"])
        self.category_ids = extra.get("category_ids")
        pre = extra["preprocess"]
        self.size = tuple(int(v) for v in pre["size"])
        from cvkit.transforms.presets import cv2_interpolation

        self.interpolation = cv2_interpolation(pre.get("interpolation", "linear"))  # as the eval preset resized
        self.device = torch.device(device)
        model, _, self.postprocessor = build_model(cfg, len(self.class_names), post)
        model.load_state_dict(checkpoint_weights(state))  # EMA weights (and the normalizer's mean/std)
        from cvkit.models.fuse import fold_batchnorm

        self.model = fold_batchnorm(model).to(self.device).eval()  # Conv+BN folded: same outputs, faster

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``(H, W, 3)`` -> uint8 ``(3, h, w)`` at the network input size (the model normalizes it)."""
        import cv2

        from cvkit.transforms.pipeline import to_chw_tensor

        height, width = self.size
        return to_chw_tensor(cv2.resize(image, (width, height), interpolation=self.interpolation))

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)  # uint8 (B, 3, h, w)
        sizes = torch.tensor([list(self.size)] * len(images), dtype=torch.int64, device=self.device)
        orig = torch.tensor([list(im.shape[:2]) for im in images], dtype=torch.int64, device=self.device)
        outputs = self.model(batch)
        return [{k: v.cpu() for k, v in d.items()} for d in self.postprocessor(outputs, sizes, orig)]


def _checkpoint_task(path: Path) -> str:
    from cvkit.engine.checkpoint import load_checkpoint

    return str((load_checkpoint(path).get("extra") or {}).get("task", "detect"))


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(paths), size):
        yield paths[i : i + size]


@cli_errors("cvkit infer")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvkit infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--checkpoint", required=True, type=Path, help="a cvkit checkpoint (best.pt / last.pt)")
    parser.add_argument("--out", type=Path, default=Path("runs/infer"), help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--score-thresh", type=float, default=None, help="override the checkpoint's threshold")
    parser.add_argument("--iou-thresh", type=float, default=None, help="override the NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=None, help="override detections per image")
    parser.add_argument("--no-draw", action="store_true", help="skip the annotated images")
    parser.add_argument("--draw-thresh", type=float, default=0.3,
                        help="draw only detections scoring at least this (default 0.3; the JSON files keep all)")
    args, _ = parser.parse_known_args(argv)
    if _checkpoint_task(args.checkpoint) == "classify":
        from cvkit.cli.infer_classify import main as infer_classify

        return int(infer_classify(argv) or 0)
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from cvkit.data.errors import DataError
    from cvkit.data.io import read_image
    from cvkit.viz.draw import draw_boxes, save_image

    paths = expand_inputs(args.inputs)
    failure = missing_inputs(args.inputs, paths)
    if failure is not None:
        raise failure
    predictor = Predictor(args.checkpoint, args.device, args.score_thresh, args.iou_thresh, args.max_det)
    args.out.mkdir(parents=True, exist_ok=True)
    from cvkit.evaluation.coco import CocoResultsWriter

    coco_file = CocoResultsWriter(args.out / "detections_coco.json")  # streamed per image, renamed on close
    skipped: list[tuple[Path, str]] = []
    done = 0
    position = {p: i for i, p in enumerate(paths)}
    stems = output_stems(paths)
    for chunk in tqdm(list(_batches(paths, args.batch_size)), desc="infer", unit="batch"):
        images, kept = [], []
        for p in chunk:
            try:
                images.append(read_image(p))
                kept.append(p)
            except (DataError, OSError, ValueError) as exc:
                skipped.append((p, str(exc).splitlines()[0]))
        if not images:
            continue
        for p, image, det in zip(kept, images, predictor(images)):
            image_id = int(p.stem) if p.stem.isdigit() else position[p]
            boxes = det["boxes"].tolist()
            scores = det["scores"].tolist()
            labels = det["labels"].tolist()
            names = [predictor.class_names[lab] for lab in labels]
            record = {"file": str(p), "image_id": image_id, "height": image.shape[0], "width": image.shape[1],
                      "boxes_xyxy": boxes, "scores": scores, "labels": labels, "class_names": names}
            (args.out / f"{stems[p]}.json").write_text(json.dumps(record, indent=1))
            coco_records = []
            for box, score, lab in zip(boxes, scores, labels):
                cat = predictor.category_ids[lab] if predictor.category_ids else lab
                coco_records.append({"image_id": image_id, "category_id": int(cat), "score": round(score, 5),
                                     "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
            coco_file.write(coco_records)
            if not args.no_draw:
                shown = det["scores"] >= args.draw_thresh
                drawn = draw_boxes(image, det["boxes"][shown], det["labels"][shown], predictor.class_names,
                                   det["scores"][shown])
                save_image(args.out / f"{stems[p]}.jpg", drawn)
            done += 1
    coco_file.close()
    print(f"{done} images -> {args.out} ({coco_file.num_records} detections; COCO results: {coco_file.path})")
    if skipped:
        print(f"skipped {len(skipped)} unreadable images:")
        for p, why in skipped:
            print(f"  {p}: {why}")
    if not done:  # nothing processed: a non-zero status, so that scripts can tell
        raise CliError(f"none of the {len(paths)} input images could be read (listed above)", "unreadable_image")
    return 0
