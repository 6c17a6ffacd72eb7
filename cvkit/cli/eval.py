"""``cvkit eval --checkpoint CKPT [--split val] [--set a.b=c ...]``: evaluate a checkpoint on a split.

Rebuilds the dataset, preprocessing and model from the config stored in the checkpoint (``--config``
replaces it, ``--set`` overrides single values, e.g. ``--set data.root=/other/copy``), runs the model on
the split and prints the validation losses and the metrics:

- detection: COCO metrics (AP, AP50, AP75, APs/m/l) with the per-class AP table; ``--out`` also saves
  ``metrics.json``, the detections as a COCO results file (``detections_coco.json``) and the pictures a
  training run writes after each evaluation (:class:`cvkit.tasks.detect.DetectionPictures`):
  ``val_predictions.png`` (the first images of the split, ground truth beside predictions), ``pr_curve.png``
  and ``confusion_matrix.png``;
- classification (``task: classify``): top-1 / top-k accuracy, the per-class accuracy table and the
  confusion matrix; ``--out`` also saves ``metrics.json`` and ``confusion.png``.

Under ``data.on_error=skip`` an image that cannot be decoded is dropped: the metrics are those of the other
images, the header says how many were evaluated, and the skipped ones are listed per kind.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cvkit.cli._errors import CliError, cli_errors


class CountingLoader:
    """The eval loader, noting the file names its batches hold: under ``data.on_error=skip`` a bad image is
    dropped at decode time, and the report says how many images were evaluated and which were skipped."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.file_names: set[str] = set()
        self.num_images = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            self.num_images += len(batch["file_names"])
            self.file_names.update(batch["file_names"])
            yield batch


def _file_names(dataset: Any) -> Iterable[tuple[int, str]]:
    if hasattr(dataset, "records"):  # detection datasets
        return ((i, rec.file_name) for i, rec in enumerate(dataset.records))
    return ((i, rel) for i, (rel, _) in enumerate(dataset.samples))  # ImageFolderDataset


def evaluated_header(checkpoint: Path, split: str, dataset: Any, seen: CountingLoader) -> str:
    """``CKPT on SPLIT (N images):``, or how many of them were evaluated when some were skipped."""
    skipped = len(dataset) - seen.num_images
    if skipped <= 0:
        return f"{checkpoint} on {split} ({len(dataset)} images):"
    return (f"{checkpoint} on {split} ({seen.num_images} of {len(dataset)} images evaluated, {skipped} skipped "
            "under data.on_error=skip):")


def skipped_report(dataset: Any, seen: CountingLoader, max_listed: int = 10) -> str | None:
    """Why each image that no batch held was dropped (per kind, up to ``max_listed`` each), or None.

    Only those images are decoded again, through the dataset itself with a fresh ``skip`` report (the
    workers' reports do not come back to this process)."""
    from cvkit.data.errors import DataReport

    missing = [i for i, name in _file_names(dataset) if name not in seen.file_names]
    if not missing:
        return None
    report = DataReport("skip", max_examples=max_listed)
    dataset.report = report  # the evaluation is over: the dataset now serves only this report
    for index in missing:
        dataset[index]  # None, with its DataError counted in `report`
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.errors.items())) or "unknown"
    lines = [f"skipped {len(missing)} of {len(dataset)} images (data.on_error=skip): {kinds}"]
    for kind, count in sorted(report.errors.items()):
        lines += [f"  {message}" for message in report.examples.get(kind, [])]
        if count > max_listed:
            lines.append(f"  ... and {count - max_listed} more {kind}")
    return "\n".join(lines)


@cli_errors("cvkit eval")
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

    from cvkit.config import apply_overrides
    from cvkit.engine.checkpoint import CheckpointError, checkpoint_weights, load_checkpoint
    from cvkit.run_config import load_run_config, run_config_from_dict

    state = load_checkpoint(args.checkpoint)
    extra = state.get("extra") or {}
    if args.config is not None:
        cfg = load_run_config(args.config, args.overrides)
    elif "config" in extra:
        cfg = run_config_from_dict(apply_overrides(extra["config"], args.overrides), f"{args.checkpoint}",
                                   args.overrides)
    else:
        raise CheckpointError(f"{args.checkpoint} stores no config", "not_cvkit_checkpoint",
                              hint="pass the run's YAML with --config")
    if cfg.task == "classify":
        return _eval_classify(cfg, state, args)

    import torch

    from cvkit.data.build import build_dataset
    from cvkit.data.loader import loader_from_config
    from cvkit.engine.evaluate import evaluate
    from cvkit.engine.train import autocast_dtype
    from cvkit.evaluation.coco import CocoEvaluator
    from cvkit.tasks.detect import DetectionPictures, build_model
    from cvkit.transforms.presets import build_transform

    dataset = build_dataset(cfg.data, args.split, progress=True)
    loader = loader_from_config(cfg.data, dataset, build_transform(cfg.transforms.eval_preset, cfg.transforms),
                                train=False)
    class_names = list(extra.get("class_names") or dataset.class_names)
    if list(dataset.class_names) != class_names:
        raise CliError(f"the dataset's classes {list(dataset.class_names)} differ from the checkpoint's "
                       f"{class_names}", kind="class_mismatch")
    model, criterion, postprocessor = build_model(cfg, len(class_names))
    model.load_state_dict(checkpoint_weights(state))
    device = torch.device(args.device)
    evaluator = CocoEvaluator.from_dataset(dataset)
    amp = autocast_dtype(cfg.train, device)  # the run's precision, so the numbers match its evaluations
    counted = CountingLoader(loader)  # notes which images were evaluated (on_error=skip drops bad ones)
    metrics = evaluate(model.to(device), criterion, postprocessor, counted, device=device, evaluator=evaluator, amp=amp,
                       progress=True)
    print(evaluated_header(args.checkpoint, args.split, dataset, counted))
    for key, value in metrics.items():
        print(f"  {key:<12} {value:.4f}")
    print(evaluator.report())
    skipped = skipped_report(dataset, counted)
    if skipped:
        print(skipped)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        evaluator.write_results(args.out / "detections_coco.json")  # streamed a batch at a time
        pictures = DetectionPictures(dataset, class_names).write(evaluator, args.out)
        names = ", ".join(str(p.name) for p in pictures.values())
        print(f"saved {args.out / 'metrics.json'}, {args.out / 'detections_coco.json'} and {names}")
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
        raise ConfigError(f"task classify needs data.format in {CLASSIFY_FORMATS}, got {cfg.data.format!r}")
    extra = state.get("extra") or {}
    dataset = build_dataset(cfg.data, args.split, progress=True)
    class_names = list(extra.get("class_names") or dataset.class_names)
    if list(dataset.class_names) != class_names:
        raise CliError(f"the dataset's classes {list(dataset.class_names)} differ from the checkpoint's "
                       f"{class_names}", kind="class_mismatch")
    tf = build_transform(cfg.transforms.eval_preset, cfg.transforms)  # a ConfigError names the preset
    loader = loader_from_config(cfg.data, dataset, tf, train=False)
    classifier = dataclasses.replace(cfg.classifier, pretrained="")  # the weights come from the checkpoint
    model, criterion = build_model(cfg, classifier, len(class_names))
    model.load_state_dict(checkpoint_weights(state))
    device = torch.device(args.device)
    evaluator = ClassificationEvaluator(class_names, topk=classifier.topk)
    amp = autocast_dtype(cfg.train, device)  # the run's precision, so the numbers match its evaluations
    counted = CountingLoader(loader)  # notes which images were evaluated (on_error=skip drops bad ones)
    metrics = evaluate(model.to(device), criterion, None, counted, device=device, evaluator=evaluator, amp=amp,
                       progress=True)
    print(evaluated_header(args.checkpoint, args.split, dataset, counted))
    for key, value in metrics.items():
        print(f"  {key:<20} {value:.4f}")
    print(evaluator.report())
    skipped = skipped_report(dataset, counted)
    if skipped:
        print(skipped)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        picture = plot_confusion_matrix(evaluator.confusion, class_names, args.out / "confusion.png")
        print(f"saved {args.out / 'metrics.json'} and {picture}")
    return 0
