"""``cvkit eval --checkpoint CKPT [--split val] [--set a.b=c ...]``: evaluate a checkpoint on a split.

Rebuilds the dataset, preprocessing and model from the config stored in the checkpoint (``--config``
replaces it, ``--set`` overrides single values, e.g. ``--set data.root=/other/copy``), runs the model on
the split and prints the validation losses and the metrics:

- detection: COCO metrics (AP, AP50, AP75, APs/m/l) with the per-class AP table; ``--out`` also saves
  ``metrics.json`` and the detections as a COCO results file (``detections_coco.json``);
- classification (``task: classify``): top-1 / top-k accuracy, the per-class accuracy table and the
  confusion matrix; ``--out`` also saves ``metrics.json`` and ``confusion.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvkit eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="a cvkit checkpoint (best.pt / last.pt)")
    parser.add_argument("--config", type=Path, default=None, help="YAML config to use instead of the stored one")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--split", choices=("val", "train"), default="val", help="which split (default val)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics.json and detections_coco.json")
    args = parser.parse_args(argv)

    from cvkit.config import ConfigError, apply_overrides
    from cvkit.engine.checkpoint import checkpoint_weights, load_checkpoint
    from cvkit.run_config import load_run_config, run_config_from_dict

    state = load_checkpoint(args.checkpoint)
    extra = state.get("extra") or {}
    try:
        if args.config is not None:
            cfg = load_run_config(args.config, args.overrides)
        elif "config" in extra:
            cfg = run_config_from_dict(apply_overrides(extra["config"], args.overrides), f"{args.checkpoint}")
        else:
            print(f"cvkit eval: {args.checkpoint} stores no config; pass --config", file=sys.stderr)
            return 2
    except ConfigError as exc:
        print(f"cvkit eval: {exc}", file=sys.stderr)
        return 2
    if cfg.task == "classify":
        return _eval_classify(cfg, state, args)

    import torch

    from cvkit.data.build import build_dataset
    from cvkit.data.loader import loader_from_config
    from cvkit.engine.evaluate import evaluate
    from cvkit.engine.train import autocast_dtype
    from cvkit.evaluation.coco import CocoEvaluator
    from cvkit.models.build import build_detector
    from cvkit.transforms.presets import build_transform

    dataset = build_dataset(cfg.data, args.split, progress=True)
    loader = loader_from_config(cfg.data, dataset, build_transform(cfg.transforms.eval_preset, cfg.transforms),
                                train=False)
    class_names = list(extra.get("class_names") or dataset.class_names)
    if list(dataset.class_names) != class_names:
        print(f"cvkit eval: the dataset's classes {list(dataset.class_names)} differ from the checkpoint's "
              f"{class_names}", file=sys.stderr)
        return 2
    model, criterion, postprocessor = build_detector(cfg.model, cfg.loss, cfg.postprocess, cfg.anchors,
                                                     num_classes=len(class_names))
    model.load_state_dict(checkpoint_weights(state))
    device = torch.device(args.device)
    evaluator = CocoEvaluator.from_dataset(dataset)
    amp = autocast_dtype(cfg.train, device)  # the run's precision, so the numbers match its evaluations
    metrics = evaluate(model.to(device), criterion, postprocessor, loader, device=device, evaluator=evaluator, amp=amp,
                       progress=True)
    print(f"{args.checkpoint} on {args.split} ({len(dataset)} images):")
    for key, value in metrics.items():
        print(f"  {key:<12} {value:.4f}")
    print(evaluator.report())
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        evaluator.write_results(args.out / "detections_coco.json")  # streamed a batch at a time
        print(f"saved {args.out / 'metrics.json'} and {args.out / 'detections_coco.json'}")
    return 0


def _eval_classify(cfg: Any, state: dict[str, Any], args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from cvkit.config import ConfigError
    from cvkit.data.build import build_dataset
    from cvkit.data.loader import loader_from_config
    from cvkit.engine.checkpoint import checkpoint_weights
    from cvkit.engine.evaluate import evaluate
    from cvkit.engine.train import autocast_dtype
    from cvkit.evaluation.classification import ClassificationEvaluator
    from cvkit.tasks.classify import CLASSIFY_FORMATS, build_model
    from cvkit.transforms.presets import build_transform
    from cvkit.viz.confusion import plot_confusion_matrix

    if cfg.data.format not in CLASSIFY_FORMATS:
        print(f"cvkit eval: task classify needs data.format in {CLASSIFY_FORMATS}, got {cfg.data.format!r}",
              file=sys.stderr)
        return 2
    extra = state.get("extra") or {}
    dataset = build_dataset(cfg.data, args.split, progress=True)
    class_names = list(extra.get("class_names") or dataset.class_names)
    if list(dataset.class_names) != class_names:
        print(f"cvkit eval: the dataset's classes {list(dataset.class_names)} differ from the checkpoint's "
              f"{class_names}", file=sys.stderr)
        return 2
    try:
        tf = build_transform(cfg.transforms.eval_preset, cfg.transforms)
    except ConfigError as exc:
        print(f"cvkit eval: {exc}", file=sys.stderr)
        return 2
    loader = loader_from_config(cfg.data, dataset, tf, train=False)
    classifier = dataclasses.replace(cfg.classifier, pretrained="")  # the weights come from the checkpoint
    model, criterion = build_model(cfg, classifier, len(class_names))
    model.load_state_dict(checkpoint_weights(state))
    device = torch.device(args.device)
    evaluator = ClassificationEvaluator(class_names, topk=classifier.topk)
    amp = autocast_dtype(cfg.train, device)  # the run's precision, so the numbers match its evaluations
    metrics = evaluate(model.to(device), criterion, None, loader, device=device, evaluator=evaluator, amp=amp,
                       progress=True)
    print(f"{args.checkpoint} on {args.split} ({len(dataset)} images):")
    for key, value in metrics.items():
        print(f"  {key:<20} {value:.4f}")
    print(evaluator.report())
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        picture = plot_confusion_matrix(evaluator.confusion, class_names, args.out / "confusion.png")
        print(f"saved {args.out / 'metrics.json'} and {picture}")
    return 0
