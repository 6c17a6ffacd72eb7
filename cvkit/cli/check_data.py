"""``cvkit check-data --config CONFIG [--set data.key=value ...]``: validate a dataset up front.

Parses every annotation file of the config's ``data`` section, decodes every image once (``--no-decode``
skips that) and prints, per split: images, negatives, boxes per class, box sizes, and every problem per
kind with examples (all problems are collected, whatever ``data.on_error`` says). Exit status 0 when the
data is clean, 1 when problems were found, 2 when the config or a top-level file cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

from cvkit.cli._errors import cli_errors
from cvkit.config import apply_overrides, load_yaml
from cvkit.data import DataReport, build_dataset
from cvkit.data.config import DataConfig, data_config_from
from cvkit.data.dataset import DetectionDataset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvkit check-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config with a data: section (default: built-in synthetic data)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.root=/datasets/voc (repeatable)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    parser.add_argument("--no-decode", action="store_true", help="check annotations and files, do not decode")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def summarize_detection(dataset: DetectionDataset) -> list[str]:
    """Lines describing a detection dataset from its annotations (no decoding)."""
    per_class: Counter = Counter()
    sides = []
    negatives = 0
    sizes: Counter = Counter()
    for ann in dataset.annotations():
        sizes[ann.size] += 1
        if len(ann.labels) == 0:
            negatives += 1
        per_class.update(ann.labels.tolist())
        wh = (ann.boxes[:, 2:] - ann.boxes[:, :2]).clamp(min=0)
        sides += (wh[:, 0] * wh[:, 1]).sqrt().tolist()
    lines = [
        f"  images {len(dataset)} ({negatives} without boxes), boxes {sum(per_class.values())}, "
        f"classes {dataset.num_classes}, image sizes (h, w): {len(sizes)} distinct, most common {sizes.most_common(1)}"
    ]
    if sides:
        q = np.percentile(sides, [0, 5, 50, 95, 100])
        lines.append("  box size sqrt(w*h) px: min {:.1f}  p5 {:.1f}  median {:.1f}  p95 {:.1f}  max {:.1f}".format(*q))
    for label, name in enumerate(dataset.class_names):
        lines.append(f"    {label:>3} {name:<24} {per_class.get(label, 0):>8} boxes")
    return lines


@cli_errors("cvkit check-data")
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    raw = apply_overrides(load_yaml(args.config) if args.config else {}, args.overrides)
    cfg: DataConfig = data_config_from(raw, args.config or "defaults", args.overrides)
    print(f"data: format={cfg.format} root={cfg.root or '(built-in)'} on_error={cfg.on_error}")
    total_problems = 0
    for split in args.splits:
        report = DataReport("skip")  # collect every problem, whatever the policy
        dataset = build_dataset(cfg, split, report=report, progress=not args.quiet)  # a top-level file: exit 2
        print(f"[{split}] {dataset!r}")
        if not args.no_decode:
            dataset.validate_images(progress=not args.quiet, drop_bad=False)
        if isinstance(dataset, DetectionDataset):
            print("\n".join(summarize_detection(dataset)))
        else:
            counts = Counter(dataset.targets)
            print(f"  images {len(dataset)}, classes {dataset.num_classes}")
            for label, name in enumerate(dataset.class_names):
                print(f"    {label:>3} {name:<24} {counts.get(label, 0):>8} images")
        print("  " + report.format(f"{split} problems").replace("\n", "\n  "))
        total_problems += report.num_errors
    if total_problems:
        policy = (
            "with data.on_error=raise, loading stops at the first of them; set data.on_error=skip to drop them"
            if cfg.on_error == "raise"
            else "data.on_error=skip drops them during training"
        )
        print(f"{total_problems} problem(s) found: {policy}.")
        return 1
    print("no problems found.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
