"""``cvkit infer --checkpoint CKPT INPUTS...`` (or ``--model EXPORTED``): detect objects in images and videos.

INPUTS are image files, video files, folders (searched recursively, always: their images and videos in
every sub-folder), glob patterns (``**`` for any depth) and ``.txt`` files listing one path per line
(relative to the list file's folder; blank lines and ``#`` comments ignored); see
:mod:`cvkit.cli._inputs`. The checkpoint carries the config, class names and preprocessing, so nothing
else is needed. Images are read with OpenCV (EXIF orientation applied, greyscale/RGBA/16-bit converted),
videos frame by frame with ``cv2.VideoCapture``; both are resized to the network input and run in uint8
batches of ``--batch-size`` (the model normalizes them itself, from the mean/std buffers in its
state_dict), and the detections are mapped back to original pixels.

Writes to ``--out``:

- per image: the annotated image (``<stem>.jpg``, the detections scoring at least ``--draw-thresh``) and
  ``<stem>.json`` (boxes xyxy in pixels, scores, labels, class names);
- per video: ``<stem>.jsonl``, one JSON line per frame read (``frame``: its index in the video, ``time_s``:
  index / the container's fps, or null when it declares none, ``height``, ``width`` and the fields of an
  image's JSON), and the annotated ``<stem>.mp4`` (mp4v codec, the input's frame size and fps, 25 when it
  declares none; the frames read, in order);
- ``detections_coco.json`` for the images (COCO results format with the dataset's original category ids;
  ``image_id`` is the image's position among the input images unless the file name is an integer; written
  image by image to a temporary file renamed onto that name at the end, so memory stays flat however many
  images). Video frames are not in it (a COCO results file refers to images by id): they are in the
  ``.jsonl`` files. With videos only, no COCO file is written.

Inputs sharing a stem (``a/x.jpg``, ``b/x.jpg``, ``b/x.mp4``) are named ``<folder>_<stem>``, then with their
position added, so that no output overwrites another. The ``.jsonl`` and ``.mp4`` files are written to
temporary files renamed onto their names when the video is done.

Nothing bad stops the run: an unreadable image or video, and a listed file that does not exist (named with
its list file and line, ``list.txt:6``), are reported and skipped; a video frame that fails to decode is
skipped and counted (the video goes on; frame indices stay positions in the video). The run ends with a
summary: images read, video frames read, the inputs skipped (listed) and the frames lost per video. Exit
status 2 when no input exists or nothing (no image, no video frame) could be read.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvkit.cli._errors import CliError, cli_errors
from cvkit.cli._inputs import VideoFrames, collect_inputs, missing_inputs, output_stems


class _ResizeToInput:
    """The preprocessing both predictors share: ``size`` (height, width) and the OpenCV ``interpolation``."""

    size: tuple[int, ...]
    interpolation: int

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``(H, W, 3)`` -> uint8 ``(3, h, w)`` at the network input size (the model normalizes it)."""
        import cv2

        from cvkit.transforms.pipeline import to_chw_tensor

        height, width = self.size
        return to_chw_tensor(cv2.resize(image, (width, height), interpolation=self.interpolation))


class Predictor(_ResizeToInput):
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
        from cvkit.cli.export import threshold_overrides

        post = dataclasses.replace(cfg.postprocess, **threshold_overrides(score_thresh, iou_thresh, max_det))
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

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)  # uint8 (B, 3, h, w)
        sizes = torch.tensor([list(self.size)] * len(images), dtype=torch.int64, device=self.device)
        orig = torch.tensor([list(im.shape[:2]) for im in images], dtype=torch.int64, device=self.device)
        outputs = self.model(batch)
        return [{k: v.cpu() for k, v in d.items()} for d in self.postprocessor(outputs, sizes, orig)]


class ExportedPredictor(_ResizeToInput):
    """A file of ``cvkit export`` (TorchScript, or ONNX through onnxruntime) with :class:`Predictor`'s interface.

    Raw exports are decoded by cvkit's postprocessor with the settings stored in the file (the overrides
    apply); exports with the postprocess inside return detections, whose settings are fixed in the graph: a
    higher ``score_thresh`` or a lower ``max_det`` filters its output, anything else needs a new export."""

    def __init__(self, path: str | Path, device: str = "cpu", score_thresh: float | None = None,
                 iou_thresh: float | None = None, max_det: int | None = None):
        from cvkit.cli.export import ExportedRunner, threshold_overrides
        from cvkit.postprocess import DetectionPostprocessor, PostprocessConfig
        from cvkit.transforms.presets import cv2_interpolation

        if torch.device(device).type != "cpu":
            raise CliError(f"--model runs on the CPU (got --device {device}); use --checkpoint for {device}",
                           "bad_argument")
        self.runner = ExportedRunner(Path(path))
        meta = self.runner.metadata
        self.class_names = list(meta["class_names"])
        self.category_ids = meta.get("category_ids")
        self.size = tuple(int(v) for v in meta["preprocess"]["size"])
        self.interpolation = cv2_interpolation(meta["preprocess"].get("interpolation", "linear"))
        baked = PostprocessConfig(**meta["postprocess"])
        self.score_thresh, self.max_det = score_thresh, max_det
        self.postprocessor: DetectionPostprocessor | None = None  # the graph's detections are final
        if meta["with_postprocess"]:
            if iou_thresh is not None and iou_thresh != baked.iou_thresh:
                raise CliError(f"{path}: NMS at IoU {baked.iou_thresh} is inside the exported graph; "
                               "export again with --iou-thresh to change it", "bad_argument")
            if score_thresh is not None and score_thresh < baked.score_thresh:
                raise CliError(f"{path}: the exported graph already drops scores <= {baked.score_thresh}; "
                               "export again with a lower --score-thresh", "bad_argument")
        else:
            import dataclasses

            changes = threshold_overrides(score_thresh, iou_thresh, max_det)
            self.postprocessor = DetectionPostprocessor(dataclasses.replace(baked, **changes), meta["box_weights"],
                                                        meta["score_activation"])

    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        batch = torch.stack([self.preprocess(im) for im in images])  # uint8 (B, 3, h, w)
        outputs = self.runner(batch)
        orig = torch.tensor([list(im.shape[:2]) for im in images], dtype=torch.float32)
        if self.postprocessor is not None:
            raw = dict(zip(("cls_logits", "bbox_deltas", "anchors"), outputs))
            sizes = torch.tensor([list(self.size)] * len(images))
            return self.postprocessor(raw, sizes, orig.long())
        boxes, scores, labels, num = outputs
        height, width = self.size
        out = []
        for b, n in enumerate(num.tolist()):
            keep = torch.ones(int(n), dtype=torch.bool)
            if self.score_thresh is not None:
                keep &= scores[b, :n] > self.score_thresh
            if self.max_det is not None:
                keep &= torch.arange(int(n)) < self.max_det  # sorted by decreasing score
            orig_whwh = orig[b].flip(0).repeat(2)
            scale = orig_whwh / torch.tensor([width, height, width, height], dtype=torch.float32)
            box = torch.minimum((boxes[b, :n][keep].float() * scale).clamp(min=0), orig_whwh)
            out.append({"boxes": box.contiguous(), "scores": scores[b, :n][keep].float(),
                        "labels": labels[b, :n][keep].to(torch.int64)})
        return out


def _checkpoint_task(path: Path) -> str:
    from cvkit.engine.checkpoint import load_checkpoint

    return str((load_checkpoint(path).get("extra") or {}).get("task", "detect"))


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(paths), size):
        yield paths[i : i + size]


def _detection_fields(det: dict[str, torch.Tensor], class_names: Sequence[str]) -> dict[str, Any]:
    """The JSON fields of one image's (or frame's) detections: boxes xyxy in pixels, scores, labels, names."""
    labels = det["labels"].tolist()
    return {"boxes_xyxy": det["boxes"].tolist(), "scores": det["scores"].tolist(), "labels": labels,
            "class_names": [class_names[lab] for lab in labels]}


def _draw(image: np.ndarray, det: dict[str, torch.Tensor], class_names: Sequence[str], thresh: float) -> np.ndarray:
    from cvkit.viz.draw import draw_boxes

    shown = det["scores"] >= thresh
    return draw_boxes(image, det["boxes"][shown], det["labels"][shown], list(class_names), det["scores"][shown])


def _infer_video(predictor: Predictor | ExportedPredictor, frames: VideoFrames, stem: Path,
                 args: argparse.Namespace) -> int:
    """Detect in every frame of ``frames``, in batches: ``<stem>.jsonl`` (one line per frame read) and, unless
    ``--no-draw``, the annotated ``<stem>.mp4`` (mp4v, the input's fps and frame size); each is written to a
    temporary file renamed onto its name at the end. Returns the number of frames read."""
    import secrets

    import cv2
    from tqdm import tqdm

    token = secrets.token_hex(6)
    tmp_jsonl = stem.with_name(f".{stem.name}.{token}.jsonl")
    tmp_video = stem.with_name(f".{stem.name}.{token}.mp4")  # VideoWriter picks the container by suffix
    fps = frames.fps or 25.0  # the writer needs a rate; times use the container's only
    writer: Any = None
    try:
        with open(tmp_jsonl, "x", encoding="utf-8") as jsonl, tqdm(total=frames.num_frames, desc=frames.path.name,
                                                                  unit="frame") as progress:
            batch: list[tuple[int, np.ndarray]] = []
            for item in itertools.chain(frames, [None]):
                if item is not None:
                    batch.append(item)
                if not batch or (item is not None and len(batch) < args.batch_size):
                    continue
                for (index, image), det in zip(batch, predictor([im for _, im in batch])):
                    time_s = round(index / frames.fps, 6) if frames.fps else None
                    line = {"frame": index, "time_s": time_s, "height": image.shape[0], "width": image.shape[1],
                            **_detection_fields(det, predictor.class_names)}
                    jsonl.write(json.dumps(line) + "\n")
                    if args.no_draw:
                        continue
                    if writer is None:
                        size = (image.shape[1], image.shape[0])
                        writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
                        if not writer.isOpened():
                            raise OSError(f"could not write the annotated video {stem}.mp4 (OpenCV mp4v writer)")
                    drawn = _draw(image, det, predictor.class_names, args.draw_thresh)
                    if (drawn.shape[1], drawn.shape[0]) != size:  # a frame of another size: fit the video's
                        drawn = cv2.resize(drawn, size, interpolation=cv2.INTER_AREA)
                    writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                progress.update(len(batch))
                batch = []
        if not frames.num_read:
            return 0
        os.replace(tmp_jsonl, stem.with_name(f"{stem.name}.jsonl"))
        if writer is not None:
            writer.release()
            writer = None
            os.replace(tmp_video, stem.with_name(f"{stem.name}.mp4"))
        return frames.num_read
    finally:
        frames.close()
        if writer is not None:
            writer.release()
        for tmp in (tmp_jsonl, tmp_video):
            tmp.unlink(missing_ok=True)


@cli_errors("cvkit infer")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvkit infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+",
                        help="images, videos, folders (recursive), glob patterns or .txt files listing paths")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a cvkit checkpoint (best.pt / last.pt)")
    source.add_argument("--model", type=Path,
                        help="a file of `cvkit export`: TorchScript (.ts/.pt) or ONNX (.onnx, needs onnxruntime)")
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
    if args.checkpoint is not None and _checkpoint_task(args.checkpoint) == "classify":
        from cvkit.cli.infer_classify import main as infer_classify

        return int(infer_classify(argv) or 0)
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from cvkit.data.errors import DataError
    from cvkit.data.io import read_image
    from cvkit.viz.draw import save_image

    inputs = collect_inputs(args.inputs)
    failure = missing_inputs(args.inputs, inputs.files, inputs.skipped)
    if failure is not None:
        raise failure
    predictor: Predictor | ExportedPredictor
    if args.model is not None:
        if not args.model.is_file():
            raise CliError(f"{args.model}: no such file", "missing_file")
        predictor = ExportedPredictor(args.model, args.device, args.score_thresh, args.iou_thresh, args.max_det)
    else:
        predictor = Predictor(args.checkpoint, args.device, args.score_thresh, args.iou_thresh, args.max_det)
    args.out.mkdir(parents=True, exist_ok=True)
    from cvkit.evaluation.coco import CocoResultsWriter

    paths, videos = inputs.images, inputs.videos
    skipped: list[tuple[str, str]] = [(s.where, s.why) for s in inputs.skipped]
    stems = output_stems(inputs.files)  # images and videos together: one name space in --out
    done = 0
    coco_file = CocoResultsWriter(args.out / "detections_coco.json") if paths or not videos else None
    position = {p: i for i, p in enumerate(paths)}
    for chunk in tqdm(list(_batches(paths, args.batch_size)), desc="infer", unit="batch", disable=not paths):
        images, kept = [], []
        for p in chunk:
            try:
                images.append(read_image(p))
                kept.append(p)
            except (DataError, OSError, ValueError) as exc:
                skipped.append((str(p), str(exc).splitlines()[0]))
        if not images:
            continue
        for p, image, det in zip(kept, images, predictor(images)):
            image_id = int(p.stem) if p.stem.isdigit() else position[p]
            record = {"file": str(p), "image_id": image_id, "height": image.shape[0], "width": image.shape[1],
                      **_detection_fields(det, predictor.class_names)}
            (args.out / f"{stems[p]}.json").write_text(json.dumps(record, indent=1))
            coco_records = []
            for box, score, lab in zip(record["boxes_xyxy"], record["scores"], record["labels"]):
                cat = predictor.category_ids[lab] if predictor.category_ids else lab
                coco_records.append({"image_id": image_id, "category_id": int(cat), "score": round(score, 5),
                                     "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
            assert coco_file is not None
            coco_file.write(coco_records)
            if not args.no_draw:
                save_image(args.out / f"{stems[p]}.jpg", _draw(image, det, predictor.class_names, args.draw_thresh))
            done += 1
    num_frames = num_videos = 0
    lost_frames: list[tuple[Path, VideoFrames]] = []  # videos read, with frames that failed to decode
    for video in videos:
        frames = VideoFrames(video)
        if not frames.opened:
            skipped.append((str(video), "not a readable video (OpenCV cannot open it)"))
            continue
        if not args.no_draw and (args.out / f"{stems[video]}.mp4").resolve() == video.resolve():
            frames.close()
            skipped.append((str(video), "its annotated video would overwrite it (choose another --out)"))
            continue
        read = _infer_video(predictor, frames, args.out / stems[video], args)
        if not read:
            skipped.append((str(video), "no frame could be decoded"))
            continue
        num_frames += read
        num_videos += 1
        if frames.num_lost:
            lost_frames.append((video, frames))
    if coco_file is not None:
        coco_file.close()
        print(f"{done} images -> {args.out} ({coco_file.num_records} detections; COCO results: {coco_file.path})")
    if videos:
        print(f"{num_frames} video frames from {num_videos} of {len(videos)} videos -> {args.out} "
              f"(per video: <name>.jsonl{'' if args.no_draw else ' and the annotated <name>.mp4'})")
    noun = "inputs" if videos else "images"
    if skipped:
        print(f"skipped {len(skipped)} unreadable {noun}:")
        for where, why in skipped:
            print(f"  {where}: {why}")
    if lost_frames:
        print(f"skipped {sum(f.num_lost for _, f in lost_frames)} video frames that could not be decoded:")
        for video, frames in lost_frames:
            of = f" of {frames.num_frames}" if frames.num_frames is not None else ""
            print(f"  {video}: {frames.num_lost}{of} frames")
    if not done and not num_frames:  # nothing processed: a non-zero status, so that scripts can tell
        what = "inputs" if videos else "input images"
        raise CliError(f"none of the {len(inputs.files)} {what} could be read (listed above)", "unreadable_image")
    return 0
