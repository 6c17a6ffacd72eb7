"""``cvkit infer --checkpoint CKPT INPUTS...`` for classification checkpoints: top-k labels and scores.

The checkpoint's ``extra`` (task ``classify``) carries the config (its ``classifier`` section), the class
names and the preprocessing, so nothing else is needed. Images (files, folders, globs) are read as RGB,
resized and centre-cropped exactly as ``cls_eval`` did in training, and run in uint8 batches (the model
normalizes them itself, from the mean/std buffers in its state_dict).
Writes to ``--out``: ``predictions.json`` (one entry per image: ``file`` and ``topk``, a list of
``{"label", "name", "score"}`` with softmax probabilities, best first) and, unless ``--no-draw``, each image
with its top-k labels drawn (``<stem>.jpg``; ``<folder>_<stem>.jpg`` where inputs share a stem). Unreadable
images are reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvkit.cli._errors import CliError, cli_errors

__all__ = ["ClassifierPredictor", "build_parser", "main"]


class ClassifierPredictor:
    """A classifier rebuilt from a cvkit classification checkpoint, with its training preprocessing."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu"):
        from cvkit.config import from_dict
        from cvkit.engine.checkpoint import CheckpointError, checkpoint_weights, load_checkpoint
        from cvkit.models.classification import ClassifierConfig, build_classifier
        from cvkit.transforms.config import TransformsConfig
        from cvkit.transforms.presets import cls_eval

        state = load_checkpoint(checkpoint, map_location="cpu")
        extra = state.get("extra") or {}
        if extra.get("task") != "classify" or "class_names" not in extra:
            raise CheckpointError(f"{checkpoint}: not a cvkit classification checkpoint (extra.task != 'classify')",
                                  "not_cvkit_checkpoint")
        self.class_names = tuple(extra["class_names"])
        section = dict((extra.get("config") or {}).get("classifier") or {})
        section["pretrained"] = ""  # the checkpoint's own weights are loaded below
        classifier = from_dict(ClassifierConfig, section, "classifier")
        pre = extra["preprocess"]
        self.size = tuple(pre["size"])
        self.model = build_classifier(classifier, len(self.class_names), image_size=self.size, mean=tuple(pre["mean"]),
                                      std=tuple(pre["std"]))
        self.model.load_state_dict(checkpoint_weights(state))  # the weights and the normalizer's mean/std
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.transform = cls_eval(TransformsConfig(
            size=self.size, interpolation=pre.get("interpolation", "linear"),
            cls_resize_ratio=pre.get("cls_resize_ratio", 0.875),
        ))

    @torch.no_grad()
    def predict(self, images: list[np.ndarray], topk: int = 5) -> list[list[dict[str, Any]]]:
        """Top-k ``{"label", "name", "score"}`` per RGB uint8 image (H, W, 3), best first."""
        if not images:
            return []
        # uint8 (B, 3, H, W) to the device, as the training batches: the model normalizes them there
        batch = torch.stack([self.transform({"image": im})["image"] for im in images]).to(self.device)
        probs = self.model(batch).float().softmax(dim=1).cpu()
        k = min(topk, len(self.class_names))
        scores, labels = probs.topk(k, dim=1)
        return [
            [{"label": int(c), "name": self.class_names[int(c)], "score": float(s)} for s, c in zip(srow, crow)]
            for srow, crow in zip(scores, labels)
        ]


def draw_labels(image: np.ndarray, topk: list[dict[str, Any]]) -> np.ndarray:
    """A copy of the RGB image with one ``name score`` line per prediction in the top-left corner."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    scale = max(out.shape[0], out.shape[1]) / 640.0
    font_scale = max(0.35, 0.6 * scale)
    thickness = max(1, round(scale))
    y = 0
    for i, pred in enumerate(topk):
        text = f"{pred['name']} {pred['score']:.2f}"
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        cv2.rectangle(out, (0, y), (w + 4, y + h + base + 4), (0, 0, 0), -1)
        color = (255, 255, 0) if i == 0 else (255, 255, 255)
        cv2.putText(out, text, (2, y + h + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, thickness, cv2.LINE_AA)
        y += h + base + 4
    return out


def build_parser(prog: str = "cvkit infer") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--checkpoint", required=True, type=Path, help="a classification last.pt / best.pt")
    parser.add_argument("--out", type=Path, default=Path("runs/infer_classify"), help="output folder")
    parser.add_argument("--topk", type=int, default=5, help="labels per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-draw", action="store_true", help="write predictions.json only")
    for name in ("--score-thresh", "--iou-thresh", "--max-det"):  # detection options: accepted, unused here
        parser.add_argument(name, default=None, help=argparse.SUPPRESS)
    return parser


@cli_errors("cvkit infer")
def main(argv: list[str] | None = None) -> int:
    from cvkit.cli._inputs import expand_inputs, missing_inputs, output_stems
    from cvkit.data.errors import DataError
    from cvkit.data.io import read_image
    from cvkit.viz.draw import save_image

    args = build_parser().parse_args(argv)
    paths = expand_inputs(args.inputs)
    failure = missing_inputs(args.inputs, paths)
    if failure is not None:
        raise failure
    predictor = ClassifierPredictor(args.checkpoint, args.device)
    stems = output_stems(paths)
    results: list[dict[str, Any]] = []
    failed = 0
    for start in range(0, len(paths), args.batch_size):
        chunk, images = [], []
        for path in paths[start : start + args.batch_size]:
            try:
                images.append(read_image(path))
                chunk.append(path)
            except DataError as exc:
                print(f"skipped {path}: {exc}", file=sys.stderr)
                failed += 1
        for path, image, topk in zip(chunk, images, predictor.predict(images, args.topk)):
            results.append({"file": str(path), "topk": topk})
            if not args.no_draw:
                save_image(args.out / f"{stems[path]}.jpg", draw_labels(image, topk))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "predictions.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"{len(results)} images classified ({failed} unreadable); results in {args.out}")
    if not results:  # nothing processed: a non-zero status, so that scripts can tell
        raise CliError(f"none of the {len(paths)} input images could be read (listed above)", "unreadable_image")
    return 0
