"""``cvkit eval --checkpoint CKPT [--split val] [--set a.b=c ...]``: evaluate a detector checkpoint.

Rebuilds the dataset, preprocessing and model from the config stored in the checkpoint (``--config``
replaces it, ``--set`` overrides single values, e.g. ``--set data.root=/other/copy``), runs the model on
the split and prints the validation losses and the COCO metrics (AP, AP50, AP75, APs/m/l) with the
per-class AP table. ``--out`` also saves the metrics as JSON and the detections as a COCO results file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    if cfg.task != "detect":
        print("cvkit eval: only detection checkpoints are supported for now", file=sys.stderr)
        return 2

    import torch

    from cvkit.data.build import build_dataset
    from cvkit.data.loader import loader_from_config
    from cvkit.engine.evaluate import evaluate
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
    metrics = evaluate(model.to(device), criterion, postprocessor, loader, device=device, evaluator=evaluator,
                       progress=True)
    print(f"{args.checkpoint} on {args.split} ({len(dataset)} images):")
    for key, value in metrics.items():
        print(f"  {key:<12} {value:.4f}")
    print(evaluator.report())
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (args.out / "detections_coco.json").write_text(json.dumps(evaluator.results()))
        print(f"saved {args.out / 'metrics.json'} and {args.out / 'detections_coco.json'}")
    return 0
