"""``cvkit export --checkpoint CKPT [--format torchscript|onnx] [--with-postprocess] [--out FILE]``.

The exported graph takes **uint8** RGB images ``(B, 3, H, W)`` at the checkpoint's input size, pixel values as
a decoder gives them (resize to ``H x W`` and transpose ``(H, W, 3) -> (3, H, W)`` outside, as ``cvkit infer``
does), and normalizes them in its first module from the ``pixel_mean`` / ``pixel_std`` buffers the checkpoint
carries (:mod:`cvkit.models.preprocess`). The batch size is free. Outputs:

- by default the raw outputs ``(cls_logits (B, A, C + 1) or (B, A, C), bbox_deltas (B, A, 4), anchors (A, 4))``,
  for cvkit's :class:`cvkit.postprocess.DetectionPostprocessor` (or your own) to decode;
- with ``--with-postprocess`` the detections, decoded, score-filtered and NMS'd inside the graph
  (:class:`cvkit.postprocess.GraphPostprocessor`, the checkpoint's ``postprocess:`` settings unless
  ``--score-thresh`` / ``--iou-thresh`` / ``--max-det`` change them): ``boxes (B, D, 4)`` xyxy in input-tensor
  pixels (multiply x by ``width / W`` and y by ``height / H`` for the original image), ``scores (B, D)``,
  ``labels (B, D)`` int64 (``0..C-1``, the checkpoint's class order) and ``num_detections (B,)`` int64; rows
  past ``num_detections[b]`` are padding (score 0, label -1). In ONNX the NMS is ``NonMaxSuppression``; a
  TorchScript file needs torchvision's ops loaded (``import torchvision``), not cvkit.

Both formats carry the class names, category ids, input size and postprocess settings as JSON
(``cvkit.json``: a TorchScript extra file, an ONNX ``metadata_props`` entry), so ``cvkit infer --model FILE``
runs them with nothing else. BatchNorm is folded into the convolutions first. The file is written to a
temporary name, loaded back and run on two seeded random uint8 batches (two batch sizes) against the eager
model (raw outputs within ``--atol``; detections: the same count, labels and order as cvkit's postprocessor,
scores and boxes within ``--atol`` and 1000 ``--atol`` pixels), and renamed onto ``--out`` only when they agree.
ONNX needs the ``onnx``, ``onnxscript`` and ``onnxruntime`` packages (``pip install cvkit[onnx]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvkit.cli._errors import CliError, cli_errors

#: Name of the metadata entry in exported files (TorchScript extra file, ONNX metadata_props key).
METADATA_KEY = "cvkit.json"
RAW_OUTPUTS = ("cls_logits", "bbox_deltas", "anchors")
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")


class ExportWrapper(nn.Module):
    """The detector with a tuple output (tracing and ONNX want tensors, not dicts).

    The anchors of the export size are a buffer: the tracer rejects outputs with no data dependence. With a
    ``postprocess`` (a :class:`cvkit.postprocess.GraphPostprocessor`) the outputs are its detections.
    """

    anchors: torch.Tensor  # registered as a buffer in __init__

    def __init__(self, model: nn.Module, size: tuple[int, int], postprocess: nn.Module | None = None):
        super().__init__()
        self.model = model
        with torch.no_grad():
            anchors = model(torch.zeros(1, 3, *size, dtype=torch.uint8))["anchors"]
        self.register_buffer("anchors", anchors.clone())
        self.postprocess = postprocess

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        if self.postprocess is not None:
            return tuple(self.postprocess(out["cls_logits"], out["bbox_deltas"], self.anchors))
        return out["cls_logits"], out["bbox_deltas"], self.anchors


@dataclasses.dataclass
class Exportable:
    """What :func:`load_for_export` gives: the wrapper, its input size, metadata and the reference postprocessor."""

    wrapper: ExportWrapper
    size: tuple[int, int]
    metadata: dict[str, Any]
    postprocessor: Any  # cvkit.postprocess.DetectionPostprocessor with the exported settings


def load_for_export(checkpoint: Path, with_postprocess: bool = False, nms: str = "torchvision",
                    overrides: dict[str, Any] | None = None) -> Exportable:
    """The :class:`ExportWrapper` of a detection checkpoint (BatchNorm folded, eval mode) and what goes with it.

    ``nms``: the :class:`cvkit.postprocess.GraphPostprocessor` NMS ("torchvision" for TorchScript, "custom_op"
    for ONNX); ``overrides``: ``postprocess:`` fields to change (``score_thresh``, ``iou_thresh``,
    ``max_detections``)."""
    import cvkit
    from cvkit.engine.checkpoint import CheckpointError, checkpoint_weights, load_checkpoint
    from cvkit.models.fuse import fold_batchnorm
    from cvkit.postprocess import GraphPostprocessor
    from cvkit.run_config import run_config_from_dict
    from cvkit.tasks.detect import build_model

    state = load_checkpoint(checkpoint)
    extra = state.get("extra") or {}
    if extra.get("task", "detect") != "detect" or "config" not in extra:
        raise CheckpointError(f"{checkpoint}: not a cvkit detection checkpoint", "not_cvkit_checkpoint")
    cfg = run_config_from_dict(extra["config"], str(checkpoint))
    post_cfg = dataclasses.replace(cfg.postprocess, **(overrides or {}))
    num_classes = len(extra["class_names"])
    model, _, postprocessor = build_model(cfg, num_classes, post_cfg)
    model.load_state_dict(checkpoint_weights(state))  # the weights and the normalizer's mean/std
    height, width = (int(v) for v in extra["preprocess"]["size"])
    model = fold_batchnorm(model).eval()
    activation = getattr(model, "score_activation", "softmax")
    wrapper = ExportWrapper(model, (height, width)).eval()
    if with_postprocess:
        try:
            wrapper.postprocess = GraphPostprocessor(post_cfg, num_classes, int(wrapper.anchors.shape[0]),
                                                     (height, width), box_weights=cfg.loss.box_weights,
                                                     score_activation=activation, nms=nms)
        except ValueError as e:
            raise CliError(f"{checkpoint}: {e}", "bad_config") from None
    metadata = {
        "format": "cvkit-export", "version": 1, "cvkit_version": cvkit.__version__,
        "outputs": list(DETECTION_OUTPUTS if with_postprocess else RAW_OUTPUTS),
        "with_postprocess": with_postprocess,
        "class_names": list(extra["class_names"]), "category_ids": extra.get("category_ids"),
        "preprocess": {"size": [height, width], "interpolation": extra["preprocess"].get("interpolation", "linear")},
        "postprocess": dataclasses.asdict(post_cfg), "score_activation": activation,
        "box_weights": list(cfg.loss.box_weights),
        "max_detections": None if wrapper.postprocess is None else wrapper.postprocess.max_detections,
    }
    return Exportable(wrapper, (height, width), metadata, postprocessor)


def threshold_overrides(score_thresh: float | None, iou_thresh: float | None,
                        max_det: int | None) -> dict[str, Any]:
    """The ``postprocess:`` fields a command line sets (``None``: keep the stored value)."""
    given = (("score_thresh", score_thresh), ("iou_thresh", iou_thresh), ("max_detections", max_det))
    return {key: value for key, value in given if value is not None}


def random_images(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """A seeded uint8 ``(batch, 3, H, W)`` batch of pixel values 0..255 (the exported graph's input)."""
    return torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def export_torchscript(wrapper: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any]) -> None:
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape arithmetic of the postprocess, traced
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    traced.save(str(path), _extra_files={METADATA_KEY: json.dumps(metadata)})


def export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any]) -> None:
    """ONNX through ``torch.export`` (the dynamo exporter; needs onnxscript) with a dynamic batch dimension."""
    import contextlib
    import io
    import warnings

    import onnx

    from cvkit.ops.grouped_nms import onnx_translation

    batch = torch.export.Dim("batch", min=1, max=1024)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter prints its progress
        warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export, not ours
        torch.onnx.export(wrapper, (example,), str(path), input_names=["images"], output_names=metadata["outputs"],
                          dynamic_shapes={"images": {0: batch}}, dynamo=True, external_data=False,
                          custom_translation_table=onnx_translation())
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))


def max_difference(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))


def detection_difference(got: tuple[torch.Tensor, ...], want: list[dict[str, torch.Tensor]], atol: float,
                         score_thresh: float, max_detections: int) -> str | None:
    """Where exported detections ``(boxes, scores, labels, num)`` differ from cvkit's postprocessor's, or None.

    Each reference detection must have an exported one of the same label with its score within ``atol`` and its
    box within ``1000 * atol`` pixels, and no exported detection may be left over. Another runtime computes the
    network in another order of float operations, so scores move by ~1e-7: near-equal scores may swap places,
    and a detection whose score is within ``atol`` of a cut-off (``score_thresh``, or the last score of a full
    list of ``max_detections``) may be in one list only; those are not differences."""
    boxes, scores, labels, num = (torch.as_tensor(t) for t in got)
    box_tol = 1000 * atol
    for b, ref in enumerate(want):
        n = int(num[b])
        g_boxes, g_scores, g_labels = boxes[b, :n].double(), scores[b, :n].double(), labels[b, :n].long()
        cutoff = score_thresh
        if n >= max_detections or len(ref["scores"]) >= max_detections:
            cutoff = max(cutoff, float(min(g_scores.min() if n else 1.0, ref["scores"].min())))
        used = torch.zeros(n, dtype=torch.bool)
        for box, score, label in zip(ref["boxes"].double(), ref["scores"].double(), ref["labels"].tolist()):
            fits = (~used & (g_labels == label) & ((g_scores - score).abs() <= atol)
                    & ((g_boxes - box).abs().amax(dim=1) <= box_tol)).nonzero()
            if len(fits):
                used[fits[0, 0]] = True
            elif float(score) > cutoff + atol:
                return (f"image {b}: cvkit's detection (label {label}, score {float(score):.4f}, box "
                        f"{[round(v, 1) for v in box.tolist()]}) is not in the exported output")
        extra = g_scores[~used]
        if len(extra) and float(extra.max()) > cutoff + atol:
            return f"image {b}: an exported detection of score {float(extra.max()):.4f} is not in cvkit's output"
    return None


class ExportedRunner:
    """Run an exported file (TorchScript ``.ts``/``.pt`` or ``.onnx``): ``runner(uint8 (B, 3, H, W)) -> tuple``.

    onnxruntime gets torch's thread count (``torch.get_num_threads()`` when the file is opened) for its pool."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.suffix.lower() == ".onnx":
            try:
                import onnxruntime as ort
            except ImportError:
                raise CliError(f"{path}: running ONNX needs onnxruntime", "missing_package",
                               hint="pip install cvkit[onnx]") from None
            try:
                options = ort.SessionOptions()
                options.intra_op_num_threads = torch.get_num_threads()  # torch's thread count, not every core
                self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own types for files it cannot parse
                raise CliError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})",
                               "bad_file") from None
            raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
            self.module = None
        else:
            import torchvision  # noqa: F401  (registers torchvision::nms for graphs with a postprocess)

            files = {METADATA_KEY: ""}
            try:
                self.module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=files)
            except RuntimeError as e:
                raise CliError(f"{path}: not a TorchScript file ({str(e).splitlines()[0]})", "bad_file") from None
            raw = files[METADATA_KEY] or None
        if not raw:
            raise CliError(f"{path}: no cvkit metadata inside (not written by `cvkit export`)", "not_cvkit_export")
        self.metadata: dict[str, Any] = json.loads(raw)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.module is not None:
            with torch.no_grad():
                return tuple(self.module(images))
        return tuple(torch.from_numpy(v) for v in self.session.run(None, {"images": images.numpy()}))


def _check(runner: ExportedRunner, exp: Exportable, batches: list[torch.Tensor], atol: float) -> str | None:
    """None when the written file agrees with the eager model on every batch, else what differs."""
    for images in batches:
        got = runner(images)
        with torch.no_grad():
            if exp.wrapper.postprocess is None:
                want = exp.wrapper(images)
                diff = max_difference(got, want)
                if diff > atol:
                    return f"with batch {len(images)} the outputs differ from the eager model's by {diff:.2e}"
                continue
            out = exp.wrapper.model(images)
            sizes = [list(exp.size)] * len(images)
            want_dets = exp.postprocessor(out, sizes, sizes)
        post = exp.postprocessor.cfg
        problem = detection_difference(got, want_dets, atol, post.score_thresh, exp.metadata["max_detections"])
        if problem:
            return f"with batch {len(images)}, {problem}"
    return None


@cli_errors("cvkit export")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvkit export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    parser.add_argument("--out", type=Path, default=None,
                        help="output file (default: next to the checkpoint, .ts or .onnx)")
    parser.add_argument("--with-postprocess", action="store_true",
                        help="decode, score filter and NMS inside the graph: outputs are detections")
    parser.add_argument("--score-thresh", type=float, default=None, help="with --with-postprocess: baked threshold")
    parser.add_argument("--iou-thresh", type=float, default=None, help="with --with-postprocess: baked NMS IoU")
    parser.add_argument("--max-det", type=int, default=None, help="with --with-postprocess: detections per image")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the check (and ONNX example)")
    parser.add_argument("--atol", type=float, default=1e-4, help="allowed difference to the eager model")
    args = parser.parse_args(argv)

    overrides = threshold_overrides(args.score_thresh, args.iou_thresh, args.max_det)
    if overrides and not args.with_postprocess:
        raise CliError("--score-thresh / --iou-thresh / --max-det need --with-postprocess "
                       "(a raw export leaves them to the decoder)", "bad_argument")
    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}", "bad_argument")
    onnx_format = args.format == "onnx"
    if onnx_format:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise CliError("ONNX export needs the `onnx`, `onnxscript` and `onnxruntime` packages", "missing_package",
                           hint="pip install cvkit[onnx]") from None
    exp = load_for_export(args.checkpoint, args.with_postprocess, "custom_op" if onnx_format else "torchvision",
                          overrides)
    height, width = exp.size
    example = random_images(args.batch, exp.size, seed=0)
    out = args.out or args.checkpoint.with_suffix(".onnx" if onnx_format else ".ts")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{secrets.token_hex(6)}{out.suffix}")  # same folder: the rename is atomic
    try:
        if onnx_format:
            export_onnx(exp.wrapper, example, tmp, exp.metadata)
        else:
            export_torchscript(exp.wrapper, example, tmp, exp.metadata)
        runner = ExportedRunner(tmp)
        problem = _check(runner, exp, [example, random_images(args.batch + 1, exp.size, seed=1)], args.atol)
        if problem:
            print(f"cvkit export: {problem}; nothing written", file=sys.stderr)
            return 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    what = "detections (boxes, scores, labels, num_detections)" if args.with_postprocess else "raw outputs"
    print(f"wrote {out} ({args.format}); input uint8 (B, 3, {height}, {width}); outputs: {what}; "
          f"checked against the eager model at batch {args.batch} and {args.batch + 1} (atol {args.atol:g})")
    return 0
