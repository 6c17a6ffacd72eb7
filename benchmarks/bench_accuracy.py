"""Accuracy per CPU-minute: cvkit's default recipe and a torchvision detector, trained with the same budget.

    python benchmarks/bench_accuracy.py DATASET --minutes M [--baseline ssdlite|none] [--set KEY=VALUE ...]
    python benchmarks/bench_accuracy.py DATASET --max-images N ...   (a timed run repeated exactly)

``DATASET`` is ``shapes`` (the built-in synthetic data, ``configs/default.yaml`` as it is) or a COCO-layout
folder (``annotations/instances_{train,val}.json``, ``images/{train,val}/``), e.g. the photo-digits set of
``make photo-digits``. For a folder only the default recipe's data section changes (format, root, splits);
the class count comes from the annotation file. ``--config`` picks another recipe, ``--set`` overrides keys
(each one recorded in the row).

The two runs go one after the other on the same cores and threads, with the same loader (cvkit's data
pipeline, the recipe's ``ssd_train`` augmentation at the baseline's input size) and the same budget
(:class:`cvkit.engine.stopping.RunBudget`). The baseline is torchvision's ``ssdlite320_mobilenet_v3_large``
from scratch with its reference recipe (SGD momentum 0.9, weight decay 4e-5, cosine; the reference lr 0.15
at batch 192 scaled linearly to this batch size), its own loss and its own resizing and normalization
inside the model. Both are evaluated with pycocotools on the val split at the end (and, for the AP-vs-minutes
picture, at each 1/``budget_evals`` of the budget).

Prints and records, per run: AP, AP50, AP75, APs, APm, APl, images seen, minutes, train images/s and
inference images/s (batch of the loader, one process); rows go to ``benchmarks/results/accuracy.jsonl``
(with machine, date, threads and the load average) and the curves to
``benchmarks/results/accuracy_<dataset>_<date>T<time>.png``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, _machine, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="'shapes' (built-in) or a COCO-layout dataset folder")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="wall-time budget of each run")
    budget.add_argument("--max-images", type=int, help="image budget of each run (repeats a timed run exactly)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml", help="cvkit recipe")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--baseline", choices=("ssdlite", "none"), default="ssdlite")
    parser.add_argument("--skip-cvkit", action="store_true", help="train the baseline only")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "bench_accuracy")
    parser.add_argument("--no-save", action="store_true", help="print only, append no result rows")
    return parser.parse_args(argv)


def dataset_overrides(dataset: str) -> list[str]:
    """The data-section overrides that point the recipe at ``dataset``."""
    if dataset == "shapes":
        return []
    root = Path(dataset).expanduser().resolve()
    return ["data.format=coco", f"data.root={root}", "data.train_split=train", "data.val_split=val",
            "data.coco_ann_file=annotations/instances_{split}.json", "data.coco_image_dir=images/{split}"]


def budget_overrides(args: argparse.Namespace) -> list[str]:
    if args.minutes is not None:
        return [f"train.budget_minutes={args.minutes}", "train.max_images=0", "train.epochs=100000"]
    return ["train.budget_minutes=0", f"train.max_images={args.max_images}", "train.epochs=100000"]


def inference_speed(model: torch.nn.Module, loader: Any, run: Any, max_batches: int = 8) -> float:
    """Images per second of ``run(model, batch)`` over up to ``max_batches`` val batches (after one warm-up)."""
    batches = []
    for i, batch in enumerate(loader):
        if i > max_batches:
            break
        batches.append(batch)
    if not batches:
        return math.nan
    model.eval()
    with torch.no_grad():
        run(model, batches[0])
        start = time.perf_counter()
        images = 0
        for batch in batches[1:] or batches:
            run(model, batch)
            images += len(batch["images"])
    return images / (time.perf_counter() - start)


def run_cvkit(cfg: Any, run_dir: Path) -> dict[str, Any]:
    from cvkit.data.build import build_dataset
    from cvkit.data.loader import loader_from_config
    from cvkit.engine.evaluate import input_sizes
    from cvkit.engine.train import autocast_dtype, resolve_device
    from cvkit.tasks.detect import run
    from cvkit.transforms.presets import build_transform

    rows = run(cfg, run_dir)
    last = rows[-1]
    train_s = sum(r.get("time", 0.0) - r.get("eval_time", 0.0) for r in rows)
    from cvkit.checkpoint import checkpoint_weights, load_checkpoint
    from cvkit.tasks.detect import build_model

    val_set = build_dataset(cfg.data, "val")
    loader = loader_from_config(cfg.data, val_set, build_transform(cfg.transforms.eval_preset, cfg.transforms),
                                train=False)
    model, _, post = build_model(cfg, len(val_set.class_names))
    model.load_state_dict(checkpoint_weights(load_checkpoint(run_dir / "checkpoints" / "last.pt")))
    device = resolve_device(cfg.train.device)
    amp = autocast_dtype(cfg.train, device)

    def infer(m: torch.nn.Module, batch: dict[str, Any]) -> Any:
        images = batch["images"].to(device)  # uint8: the model normalizes them
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            outputs = m(images)
        return post({k: v.float() for k, v in outputs.items()}, input_sizes(images), batch["orig_sizes"])

    return {
        "metrics": {k: last.get(k, math.nan) for k in METRICS},
        "images_seen": int(last.get("images_seen", 0)),
        "minutes": float(last.get("time_used", 0.0)) / 60,
        "train_images_per_s": float(last.get("images_seen", 0)) / max(train_s, 1e-9),
        "infer_images_per_s": inference_speed(model, loader, infer),
        "curve": [(r["time_used"] / 60, r["AP"]) for r in rows if "AP" in r and "time_used" in r],
    }


def run_ssdlite(cfg: Any, budget_minutes: float, max_images: int) -> dict[str, Any]:
    """torchvision's SSDlite320 from scratch, its reference recipe, under the same budget and loader."""
    import dataclasses

    import torchvision

    from cvkit.data.build import build_dataset
    from cvkit.data.loader import loader_from_config
    from cvkit.engine.optim import IterationSchedule
    from cvkit.engine.stopping import RunBudget
    from cvkit.evaluation.coco import CocoEvaluator
    from cvkit.transforms.presets import build_transform

    tf_cfg = dataclasses.replace(cfg.transforms, size=(320, 320))
    train_set = build_dataset(cfg.data, "train")
    val_set = build_dataset(cfg.data, "val")
    train_loader = loader_from_config(cfg.data, train_set, build_transform(cfg.transforms.train_preset, tf_cfg))
    val_loader = loader_from_config(cfg.data, val_set, build_transform(cfg.transforms.eval_preset, tf_cfg),
                                    train=False)
    num_classes = len(train_set.class_names)
    torch.manual_seed(cfg.train.seed)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                       num_classes=num_classes + 1)
    batch_size = cfg.data.batch_size
    lr = 0.15 * batch_size / 192  # torchvision's reference: lr 0.15 for 8 GPUs x 24 images
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=4e-5)
    schedule = IterationSchedule(optimizer, total_iters=10**9, kind="cosine")
    budget = RunBudget(budget_minutes, max_images, eval_images=len(val_set))
    evaluator = CocoEvaluator.from_dataset(val_set)

    def as_inputs(batch: dict[str, Any]) -> list[torch.Tensor]:
        return [im.float() / 255.0 for im in batch["images"]]  # the model resizes and normalizes itself

    def evaluate() -> dict[str, float]:
        model.eval()
        evaluator.reset()
        with torch.no_grad():
            for batch in val_loader:
                dets = model(as_inputs(batch))
                preds = []
                for det, orig in zip(dets, batch["orig_sizes"].tolist()):
                    scale = torch.tensor([orig[1] / 320, orig[0] / 320] * 2)
                    preds.append({"boxes": det["boxes"] * scale, "scores": det["scores"], "labels": det["labels"] - 1})
                evaluator.update(preds, batch)
        model.train()
        return evaluator.compute()

    curve: list[tuple[float, float]] = []
    metrics: dict[str, float] = {}
    train_s, epoch, next_eval = 0.0, 0, 1
    budget.start()
    while not budget.exhausted():
        if hasattr(train_loader.sampler, "set_epoch"):  # the loader's (seed, epoch, index) order
            train_loader.sampler.set_epoch(epoch)
        for batch in train_loader:
            start = time.perf_counter()
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in batch["targets"]]
            losses = model(as_inputs(batch), targets)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seconds = time.perf_counter() - start
            train_s += seconds
            budget.step(len(batch["images"]), seconds)
            schedule.step(budget.fraction())
            if budget.exhausted():
                break
        epoch += 1
        if budget.fraction() * cfg.train.budget_evals >= next_eval or budget.exhausted():
            start = time.perf_counter()
            metrics = evaluate()
            budget.record_evaluation(time.perf_counter() - start)
            curve.append((budget.time_used / 60, metrics["AP"]))
            next_eval = math.floor(budget.fraction() * cfg.train.budget_evals) + 1
    if not metrics:
        metrics = evaluate()

    def infer(m: torch.nn.Module, batch: dict[str, Any]) -> Any:
        return m(as_inputs(batch))

    return {
        "metrics": {k: float(metrics.get(k, math.nan)) for k in METRICS},
        "images_seen": budget.images_seen,
        "minutes": budget.time_used / 60,
        "train_images_per_s": budget.images_seen / max(train_s, 1e-9),
        "infer_images_per_s": inference_speed(model, val_loader, infer),
        "curve": curve,
    }


def plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, result in results.items():
        if result["curve"]:
            xs, ys = zip(*[(0.0, 0.0), *result["curve"]])  # every run starts at AP 0
            ax.plot(xs, ys, marker="o", label=f"{name} (final AP {result['metrics']['AP']:.3f})")
    ax.set_xlabel("minutes (wall time, training and evaluation)")
    ax.set_ylabel("COCO AP (val)")
    ax.set_title(title)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from cvkit.run_config import load_run_config

    args = parse_args(argv)
    set_threads(args.threads)
    overrides = dataset_overrides(args.dataset) + budget_overrides(args) + list(args.overrides)
    cfg = load_run_config(args.config, overrides)
    name = "shapes" if args.dataset == "shapes" else Path(args.dataset).name
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    results: dict[str, dict[str, Any]] = {}
    if not args.skip_cvkit:
        print(f"== cvkit {args.config.name} on {name}", flush=True)
        results[f"cvkit {cfg.model.arch}"] = run_cvkit(cfg, args.run_dir / name / "cvkit")
    if args.baseline == "ssdlite":
        print(f"== torchvision ssdlite320_mobilenet_v3_large on {name}", flush=True)
        results["torchvision ssdlite320"] = run_ssdlite(cfg, cfg.train.budget_minutes, cfg.train.max_images)
    header = f"{'run':<24} " + " ".join(f"{k:>6}" for k in METRICS) + "  images  minutes  train/s  infer/s"
    print(header)
    for run_name, r in results.items():
        m = r["metrics"]
        print(f"{run_name:<24} " + " ".join(f"{m[k]:>6.3f}" for k in METRICS)
              + f"  {r['images_seen']:>6}  {r['minutes']:>7.1f}  {r['train_images_per_s']:>7.1f}"
              f"  {r['infer_images_per_s']:>7.1f}")
    if args.no_save:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    with open(RESULTS / "accuracy.jsonl", "a", encoding="utf-8") as f:
        for run_name, r in results.items():
            row = {"bench": "accuracy", "run": run_name, "dataset": name, "config": args.config.name,
                   "budget_minutes": args.minutes, "max_images": args.max_images, "overrides": list(args.overrides),
                   "threads": args.threads, "date": date, "load_1min_at_end": load, **_machine(),
                   **{k: v for k, v in r.items() if k != "curve"}, "curve": r["curve"]}
            f.write(json.dumps(row) + "\n")
    picture = plot(results, RESULTS / f"accuracy_{name}_{date[:16].replace(':', '')}.png",
                   f"{name}: AP vs minutes, {args.threads} thread{'' if args.threads == 1 else 's'}")
    print(f"rows: {RESULTS / 'accuracy.jsonl'}; curves: {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
