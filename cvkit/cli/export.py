"""``cvkit export --checkpoint CKPT [--format torchscript|onnx] [--out FILE]``: export a detector.

The exported graph takes **uint8** RGB images ``(B, 3, H, W)`` at the checkpoint's input size, pixel values as
a decoder gives them (resize to ``H x W`` and transpose ``(H, W, 3) -> (3, H, W)`` outside, as ``cvkit infer``
does), and normalizes them in its first module from the ``pixel_mean`` / ``pixel_std`` buffers the checkpoint
carries (:mod:`cvkit.models.preprocess`). It returns the raw outputs ``(cls_logits (B, A, C + 1),
bbox_deltas (B, A, 4), anchors (A, 4))`` (background is logit 0); decoding and NMS stay in cvkit
(:class:`cvkit.postprocess.DetectionPostprocessor`) because they depend on the score/NMS settings. The graph
is traced with a uint8 example, so it takes uint8 only (ONNX declares its ``images`` input uint8; a traced
TorchScript module does not check, and would normalize float input a second time). BatchNorm is folded into
the convolutions first. After writing, the file is loaded back and its outputs are compared with the eager
model's on a random uint8 batch; the command fails when they differ by more than ``--atol``. ONNX needs the
``onnx`` package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from cvkit.cli._errors import CliError, cli_errors


class ExportWrapper(nn.Module):
    """The detector with a tuple output (tracing and ONNX want tensors, not dicts).

    The anchors of the export size are a buffer: the tracer rejects outputs with no data dependence.
    """

    anchors: torch.Tensor  # registered as a buffer in __init__

    def __init__(self, model: nn.Module, size: tuple[int, int]):
        super().__init__()
        self.model = model
        with torch.no_grad():
            anchors = model(torch.zeros(1, 3, *size, dtype=torch.uint8))["anchors"]
        self.register_buffer("anchors", anchors.clone())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(images)
        return out["cls_logits"], out["bbox_deltas"], self.anchors


def load_for_export(checkpoint: Path) -> tuple[nn.Module, tuple[int, int]]:
    """The :class:`ExportWrapper` of a detection checkpoint (BatchNorm folded, eval mode) and its input size."""
    from cvkit.engine.checkpoint import CheckpointError, checkpoint_weights, load_checkpoint
    from cvkit.models.fuse import fold_batchnorm
    from cvkit.run_config import run_config_from_dict
    from cvkit.tasks.detect import build_model

    state = load_checkpoint(checkpoint)
    extra = state.get("extra") or {}
    if extra.get("task", "detect") != "detect" or "config" not in extra:
        raise CheckpointError(f"{checkpoint}: not a cvkit detection checkpoint", "not_cvkit_checkpoint")
    cfg = run_config_from_dict(extra["config"], str(checkpoint))
    model, _, _ = build_model(cfg, len(extra["class_names"]))
    model.load_state_dict(checkpoint_weights(state))  # the weights and the normalizer's mean/std
    height, width = (int(v) for v in extra["preprocess"]["size"])
    return ExportWrapper(fold_batchnorm(model).eval(), (height, width)).eval(), (height, width)


def random_images(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """A seeded uint8 ``(batch, 3, H, W)`` batch of pixel values 0..255 (the exported graph's input)."""
    return torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def export_torchscript(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    traced.save(str(path))


def export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    """ONNX through ``torch.export`` (the dynamo exporter; needs onnxscript) with a dynamic batch dimension."""
    import contextlib
    import io
    import warnings

    batch = torch.export.Dim("batch", min=1, max=1024)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter prints its progress
        warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export, not ours
        torch.onnx.export(wrapper, (example,), str(path), input_names=["images"],
                          output_names=["cls_logits", "bbox_deltas", "anchors"],
                          dynamic_shapes={"images": {0: batch}}, dynamo=True, external_data=False)


def max_difference(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return max(float((x - y).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))


@cli_errors("cvkit export")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvkit export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    parser.add_argument("--out", type=Path, default=None, help="output file (default: next to the checkpoint)")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the check (and ONNX example)")
    parser.add_argument("--atol", type=float, default=1e-4, help="allowed difference to the eager model")
    args = parser.parse_args(argv)

    wrapper, (height, width) = load_for_export(args.checkpoint)
    example = random_images(args.batch, (height, width), seed=0)
    with torch.no_grad():
        expected = wrapper(example)
    suffix = ".ts" if args.format == "torchscript" else ".onnx"
    out = args.out or args.checkpoint.with_suffix(suffix)
    out.parent.mkdir(parents=True, exist_ok=True)  # both formats create the output folder
    if args.format == "torchscript":
        export_torchscript(wrapper, example, out)
        with torch.no_grad():
            got = torch.jit.load(str(out))(example)
    else:
        try:
            import onnx  # noqa: F401
            import onnxruntime as ort
        except ImportError:
            raise CliError("ONNX export needs the `onnx`, `onnxscript` and `onnxruntime` packages", "missing_package",
                           hint="pip install onnx onnxscript onnxruntime") from None
        export_onnx(wrapper, example, out)
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = tuple(torch.from_numpy(v) for v in session.run(None, {"images": example.numpy()}))
        # the batch dimension is dynamic: a batch of another size must run and agree too
        other = random_images(args.batch + 1, (height, width), seed=1)
        with torch.no_grad():
            other_expected = wrapper(other)
        other_got = tuple(torch.from_numpy(v) for v in session.run(None, {"images": other.numpy()}))
        diff_other = max_difference(other_got, other_expected)
        if diff_other > args.atol:
            print(f"cvkit export: with batch {args.batch + 1} the ONNX outputs differ from the eager model's "
                  f"by {diff_other:.2e}", file=sys.stderr)
            return 1
    diff = max_difference(tuple(got), tuple(expected))
    print(f"wrote {out} ({args.format}); input uint8 (B, 3, {height}, {width}); "
          f"max |exported - eager| = {diff:.2e} (atol {args.atol:g})")
    if diff > args.atol:
        print("cvkit export: the exported model's outputs differ from the eager model's", file=sys.stderr)
        return 1
    return 0
