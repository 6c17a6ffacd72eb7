"""``cvkit augment-preview --config CONFIG [--set KEY=VALUE ...] [--out FILE.png]``: see what augmentation does.

Runs the config's training preset (``transforms.train_preset``, or ``--preset``) on the first ``--num``
samples of a split, saves a grid PNG of the augmented images with their boxes (or class) drawn, and prints
per transform how many boxes came in, were clipped to the image and were dropped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from cvkit.cli._errors import CliError, cli_errors
from cvkit.config import apply_overrides, load_yaml
from cvkit.data import build_dataset
from cvkit.data.config import data_config_from
from cvkit.data.loader import sample_seed
from cvkit.transforms import PRESETS, build_transform, transforms_config_from
from cvkit.viz import draw_boxes, make_grid, save_image, to_uint8_image


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvkit augment-preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config with data: and transforms: sections (default: built-in)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set transforms.hflip=false (repeatable)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="preset to show (default: transforms.train_preset)")
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--num", type=int, default=16, help="samples to show")
    parser.add_argument("--cols", type=int, default=4, help="grid columns")
    parser.add_argument("--epoch", type=int, default=0, help="epoch whose augmentation seeds to use")
    parser.add_argument("--originals", action="store_true", help="show each original next to its augmentation")
    parser.add_argument("--out", default="runs/augment-preview.png", help="PNG file to write")
    return parser


@cli_errors("cvkit augment-preview")
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    raw = apply_overrides(load_yaml(args.config) if args.config else {}, args.overrides)
    data_cfg = data_config_from(raw, args.config or "defaults", args.overrides)
    tf_cfg = transforms_config_from(raw, args.config or "defaults", args.overrides)
    preset = args.preset or tf_cfg.train_preset
    dataset = build_dataset(data_cfg, args.split)
    pipeline = build_transform(preset, tf_cfg)
    names = dataset.class_names
    tiles = []
    for index in range(min(args.num, len(dataset))):
        sample = dataset[index]
        if sample is None:  # bad image skipped under on_error=skip
            continue
        out = pipeline(sample, seed=sample_seed(data_cfg.seed, args.epoch, index))
        image = to_uint8_image(out["image"])  # uint8 (3, H, W) -> (H, W, 3)
        if "boxes" in out:
            drawn = draw_boxes(image, out["boxes"], out["labels"], names)
            original = draw_boxes(sample["image"], sample["boxes"], sample["labels"], names)
        else:
            drawn = draw_boxes(image, [], None)
            cv2.putText(
                drawn, names[out["label"]], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA
            )
            original = sample["image"]
        if args.originals:
            scale = drawn.shape[0] / original.shape[0]
            size = (max(1, round(original.shape[1] * scale)), drawn.shape[0])
            tiles.append(cv2.resize(original, size, interpolation=cv2.INTER_AREA))
        tiles.append(drawn)
    if not tiles:
        raise CliError(f"no samples to show: none of the first {args.num} {args.split} images could be read",
                       "unreadable_image")
    cols = args.cols * (2 if args.originals else 1)
    path = save_image(Path(args.out), make_grid(tiles, cols=cols))
    print(f"preset {preset} on {len(tiles) // (2 if args.originals else 1)} {args.split} samples of {dataset!r}")
    print(pipeline.format_stats())
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
