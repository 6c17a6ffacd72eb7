"""Inference speed of a detector as a user deploys it: the checkpoint in eager mode (what ``cvkit infer
--checkpoint`` runs: BatchNorm folded, cvkit's postprocess), its TorchScript and ONNX exports with the
postprocess inside (``cvkit export --with-postprocess``; ONNX on onnxruntime's CPU provider), and torchvision's
``ssdlite320_mobilenet_v3_large`` (eager, its own resize, normalization and postprocess inside), on the CPU.

Timed: one call on a uint8 batch already at the network input size, from the images to the detections (the
decoding of image files and the resize are outside, the same for all). Batch 1 and 16; the runners alternate
within each repeat so that load drifts hit them alike; medians. Rows (one per runner, batch and thread count;
images/s and the ratio to the eager checkpoint) go to ``benchmarks/results/infer.jsonl``. The exported runners'
detections are checked against the checkpoint's (``cvkit.cli.export.detection_difference``).

Run: .venv/bin/python benchmarks/bench_infer.py [--checkpoint best.pt] [--quick] [--threads 1 2]
Without ``--checkpoint`` the default recipe (``configs/default.yaml``, 10 classes) is built untrained: the same
network cost, but its postprocess sees the prior's near-constant scores instead of a trained model's.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _harness import RESULTS, _load_average, _machine, set_threads

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="cvkit benchmark: inference speed (checkpoint, TorchScript, ONNX)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a detection checkpoint (default: untrained)")
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 16])
    parser.add_argument("--threads", type=int, nargs="*", default=None, help="thread counts (default: 1 and all)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--no-baseline", action="store_true", help="skip torchvision's SSDlite")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = min(args.repeat, 3)
    return args


def untrained_checkpoint(path: Path) -> Path:
    from cvkit.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from cvkit.run_config import load_run_config
    from cvkit.tasks.detect import build_model, checkpoint_extra

    cfg = load_run_config(ROOT / "configs" / "default.yaml")
    classes = tuple(str(i) for i in range(10))
    torch.manual_seed(0)
    model, _, _ = build_model(cfg, len(classes))
    return save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "version": 3, "epoch": 0, "model": model.state_dict(),
                                  "ema": None, "extra": checkpoint_extra(cfg, classes, None)})


def runners(checkpoint: Path, folder: Path) -> tuple[dict[str, Callable[[torch.Tensor], Any]], Any, tuple[int, int]]:
    """name -> callable(uint8 batch) for the checkpoint and its exports; the Exportable; the input size."""
    from cvkit.cli.export import ExportedRunner, export_onnx, export_torchscript, load_for_export, random_images

    eager = load_for_export(checkpoint, with_postprocess=False)
    size = eager.size

    def run_eager(images: torch.Tensor) -> Any:
        with torch.no_grad():
            out = eager.wrapper.model(images)
            sizes = [list(size)] * len(images)
            return eager.postprocessor(out, sizes, sizes)

    found: dict[str, Callable[[torch.Tensor], Any]] = {"checkpoint (eager)": run_eager}
    example = random_images(2, size, seed=0)
    ts = load_for_export(checkpoint, with_postprocess=True, nms="torchvision")
    export_torchscript(ts.wrapper, example, folder / "model.ts", ts.metadata)
    found["torchscript"] = ExportedRunner(folder / "model.ts")
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        print("onnxruntime / onnxscript not installed: no ONNX rows", file=sys.stderr)
    else:
        onnx_exp = load_for_export(checkpoint, with_postprocess=True, nms="custom_op")
        export_onnx(onnx_exp.wrapper, example, folder / "model.onnx", onnx_exp.metadata)
        found["onnx (onnxruntime)"] = ExportedRunner(folder / "model.onnx")
    return found, ts, size


def ssdlite(num_classes: int) -> Callable[[torch.Tensor], Any]:
    import torchvision

    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes + 1).eval()

    def run(images: torch.Tensor) -> Any:
        with torch.no_grad():
            return model(list(images.float().div_(255)))

    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from cvkit.cli.export import detection_difference, random_images

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or untrained_checkpoint(Path(tmp) / "untrained.pt")
        found, exp, size = runners(checkpoint, Path(tmp))
        num_classes = len(exp.metadata["class_names"])
        post = exp.postprocessor.cfg
        baseline = None if args.no_baseline else ssdlite(num_classes)
        rows: list[dict[str, Any]] = []
        thread_counts = args.threads or sorted({1, torch.get_num_threads()})
        for threads in thread_counts:
            set_threads(threads)
            for batch in args.batches:
                images = random_images(batch, size, seed=batch)
                want = found["checkpoint (eager)"](images)
                agree = {name: detection_difference(fn(images), want, 1e-4, post.score_thresh,
                                                    exp.metadata["max_detections"]) is None
                         for name, fn in found.items() if name != "checkpoint (eager)"}
                timed: dict[str, tuple[Callable[[torch.Tensor], Any], torch.Tensor]] = {
                    name: (fn, images) for name, fn in found.items()}
                if baseline is not None:
                    timed["torchvision ssdlite320 (eager)"] = (baseline, random_images(batch, (320, 320), seed=batch))
                for _ in range(3):  # warm-up (TorchScript's profiling executor optimizes on its first runs)
                    for fn, x in timed.values():
                        fn(x)
                times: dict[str, list[float]] = {name: [] for name in timed}
                names = list(timed)
                for r in range(args.repeat):
                    for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
                        fn, x = timed[name]
                        start = time.perf_counter()
                        fn(x)
                        times[name].append(time.perf_counter() - start)
                eager_s = statistics.median(times["checkpoint (eager)"])
                for name, values in times.items():
                    med = statistics.median(values)
                    row = {"bench": "infer", "runner": name, "batch": batch, "threads": threads,
                           "input": [320, 320] if name.startswith("torchvision") else list(size),
                           "ms_per_batch": round(med * 1e3, 2), "images_per_s": round(batch / med, 1),
                           "ratio_to_eager": round(eager_s / med, 2), "agree_with_eager": agree.get(name),
                           "checkpoint": str(args.checkpoint) if args.checkpoint else "untrained default recipe",
                           "repeat": args.repeat, "load_avg": _load_average()}
                    rows.append(row)
                    print(f"[infer] batch {batch:3d} thr={threads} {name:<32} {med * 1e3:9.1f} ms  "
                          f"{batch / med:7.1f} img/s  x{row['ratio_to_eager']:.2f} vs eager"
                          + ("" if row["agree_with_eager"] is None else f"  agree={row['agree_with_eager']}"),
                          flush=True)
    if not args.no_save:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = RESULTS / "infer.jsonl"
        with out.open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({"date": stamp, **_machine(), **row}) + "\n")
        print(f"appended {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
