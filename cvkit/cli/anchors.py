"""``cvkit anchors --config CONFIG``: the anchor coverage report of a config's anchors on its dataset.

What it reads:

- the config's ``anchors:`` section, strictly (:class:`cvkit.ops.AnchorConfig`: generator, network input
  ``image_size``, ``feature_sizes``, ``matcher``); when the section is absent, the SSD300 defaults;
- the ground truth of the config's ``data:`` section (split ``--split``): through ``cvkit.data``
  (``build_dataset(...).annotations()``: image sizes and boxes, no image is decoded). When ``cvkit.data``
  cannot be imported, a COCO-format annotation JSON is read directly from ``data.root`` /
  ``data.coco_ann_file`` (default ``annotations/instances_{split}.json``);
- or, with ``--ann-file PATH``, any COCO-format JSON (``bbox`` is ``[x, y, w, h]``; ``iscrowd`` boxes are
  skipped), ignoring the ``data:`` section.

Boxes are scaled from each image's size to ``anchors.image_size`` as ``ssd_eval`` resizes images.

What it writes (``--out``, default ``runs/anchors``): ``anchor_coverage.json`` (the tables) and
``anchor_coverage.png`` (the plot); the text report goes to stdout. Exit status 0, or 2 for a bad
config or dataset (the message names the file and key).

    cvkit anchors --config configs/default.yaml --set anchors.matcher.pos_thresh=0.6

``--fit`` proposes anchor sizes that cover the boxes better (:mod:`cvkit.evaluation.anchor_fit`: one factor for
every level, then per-level moves; the structure stays), prints the coverage per size bucket before and after
and the new ``anchors.scales`` (``style: ssd``) or ``anchors.sizes`` (``style: sizes``); ``--write`` also puts
that value into the config file, on the key's own line (its comment kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cvkit.cli._errors import cli_errors
from cvkit.config import ConfigError, apply_overrides, from_dict, load_yaml, located

__all__ = ["main", "read_coco_boxes", "load_anchor_config"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cvkit anchors",
        description="Anchor coverage report: which ground-truth boxes the configured anchors match, per object "
        "size and feature level, before any training.",
    )
    p.add_argument("--config", type=Path, help="YAML config with `data:` and `anchors:` sections")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. anchors.matcher.pos_thresh=0.6 (repeatable)")
    p.add_argument("--split", default="train", choices=("train", "val"), help="dataset split (default: train)")
    p.add_argument("--ann-file", type=Path, help="read this COCO-format JSON instead of the config's data section")
    p.add_argument("--max-images", type=int, default=None, help="stop after this many images")
    p.add_argument("--batch-size", type=int, default=64, help="images matched per call (default: 64)")
    p.add_argument("--out", type=Path, default=Path("runs/anchors"), help="output folder (default: runs/anchors)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of the text table")
    p.add_argument("--fit", action="store_true", help="propose anchor sizes that cover the boxes better")
    p.add_argument("--write", action="store_true", help="with --fit: write the proposal into --config")
    return p


def format_fit(fit: Any) -> str:
    """Coverage per size bucket before and after a fit, and the proposed value."""
    before, after = fit.before.by_size(), fit.after.by_size()
    lines = [f"{'bucket':<8} {'boxes':>6} {'matched before':>15} {'after':>7} {'median IoU before':>18} {'after':>7}"]
    for name, row in before.items():
        new = after[name]
        if not row["boxes"]:
            continue
        lines.append(f"{name:<8} {row['boxes']:>6} {row['matched']:>15.1%} {new['matched']:>7.1%} "
                     f"{row['median_best_iou']:>18.3f} {new['median_best_iou']:>7.3f}")
    lines.append(f"proposed anchors.{fit.key}: {_flow(fit.value)}")
    return "\n".join(lines)


def _flow(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return f"{float(value):g}"


def write_anchor_value(path: Path, key: str, value: Any) -> None:
    """Replace ``anchors.<key>``'s value on its own line of the YAML file ``path``, keeping its comment."""
    import re

    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    inside = False
    for i, line in enumerate(lines):
        if re.match(r"^anchors:\s*(#.*)?$", line.rstrip("\n")):
            inside = True
            continue
        if inside and re.match(r"^\S", line):
            break
        match = re.match(rf"^(\s+{key}:\s*)([^#\n]*?)(\s+#.*)?(\n?)$", line) if inside else None
        if match:
            lines[i] = f"{match.group(1)}{_flow(value)}{match.group(3) or ''}{match.group(4)}"
            path.write_text("".join(lines), encoding="utf-8")
            return
    raise ConfigError(f"{path}: no 'anchors.{key}:' line to write the fitted value into; add the key first")


def load_anchor_config(raw: dict[str, Any], where: str = "config", overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The strict :class:`~cvkit.ops.AnchorConfig` of a loaded YAML mapping (absent section: defaults); errors name
    ``where``, or the override among ``overrides`` that set the bad value."""
    from cvkit.ops.anchors import AnchorConfig

    section = raw.get("anchors")
    if section is None:
        section = {}
    try:
        return from_dict(AnchorConfig, section, "anchors")
    except ConfigError as exc:
        raise located(exc, where, overrides) from None


def read_coco_boxes(path: str | Path) -> list[tuple[tuple[int, int], np.ndarray]]:
    """``(size, boxes)`` per image of a COCO-format JSON: ``size = (height, width)``, float32 xyxy boxes.

    Images keep the file's order; ``iscrowd`` annotations are skipped (they are not training targets).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read annotation file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConfigError(f"{path}: a COCO annotation file needs an 'images' list")
    sizes: dict[Any, tuple[int, int]] = {}
    for i, img in enumerate(data["images"]):
        try:
            sizes[img["id"]] = (int(img["height"]), int(img["width"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}: images[{i}] needs 'id', 'height' and 'width'") from None
    boxes: dict[Any, list[list[float]]] = {k: [] for k in sizes}
    for i, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict):
            raise ConfigError(f"{path}: annotations[{i}] is not an object")
        if ann.get("iscrowd", 0):
            continue
        if ann.get("image_id") not in boxes:
            raise ConfigError(f"{path}: annotations[{i}] refers to unknown image_id {ann.get('image_id')!r}")
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}: annotations[{i}].bbox must be [x, y, w, h]") from None
        boxes[ann["image_id"]].append([x, y, x + w, y + h])
    return [(sizes[k], np.asarray(boxes[k], dtype=np.float32).reshape(-1, 4)) for k in sizes]


def _samples_from_data(
    raw: dict[str, Any], where: str, split: str, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Iterator[Any], str]:
    """Ground truth of the config's data section, and a description of where it came from."""
    try:
        from cvkit.data import DetectionDataset, build_dataset, data_config_from, is_detection
    except ImportError:
        return _samples_from_coco_section(raw, where, split)
    cfg = data_config_from(raw, where, overrides)
    dataset = build_dataset(cfg, split) if is_detection(cfg) else None
    if not isinstance(dataset, DetectionDataset):
        raise ConfigError(f"{where}: data.format={cfg.format!r} is a classification dataset; anchors need boxes")
    samples = ((ann.size, ann.boxes) for ann in dataset.annotations())
    return samples, f"{cfg.format} dataset, split {split!r} ({len(dataset)} images)"


def _samples_from_coco_section(raw: dict[str, Any], where: str, split: str) -> tuple[Iterator[Any], str]:
    section = raw.get("data") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: data must be a mapping")
    if section.get("format", "coco") != "coco" or not section.get("root"):
        raise ConfigError(
            f"{where}: without cvkit.data only COCO-format data can be read: set data.format: coco and data.root "
            "(or pass --ann-file)"
        )
    name = section.get(f"{split}_split", split)
    ann = Path(section["root"]).expanduser() / section.get(
        "coco_ann_file", "annotations/instances_{split}.json"
    ).format(split=name)
    samples = read_coco_boxes(ann)
    return iter(samples), f"{ann} ({len(samples)} images)"


@cli_errors("cvkit anchors")
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.config is None and args.ann_file is None:
        print("cvkit anchors: give --config CONFIG (and/or --ann-file COCO_JSON)", file=sys.stderr)
        return 2
    try:
        raw = load_yaml(args.config) if args.config is not None else {}
        raw = apply_overrides(raw, args.overrides)
        where = str(args.config or "overrides")
        cfg = load_anchor_config(raw, where, args.overrides)
        if args.ann_file is not None:
            samples_list = read_coco_boxes(args.ann_file)
            samples, source = iter(samples_list), f"{args.ann_file} ({len(samples_list)} images)"
        else:
            samples, source = _samples_from_data(raw, where, args.split, args.overrides)
        generator = cfg.build()
        feature_sizes = cfg.resolved_feature_sizes()
        generator.num_anchors_per_level(feature_sizes)  # validates the level count, with the expected number
    except (ConfigError, ValueError, OSError) as exc:
        print(f"cvkit anchors: {exc}", file=sys.stderr)
        return 2

    from cvkit.evaluation.anchor_coverage import anchor_coverage

    transforms = raw.get("transforms") if isinstance(raw.get("transforms"), dict) else {}
    size = transforms.get("size") if transforms else None
    if size is not None and list(size) != list(cfg.image_size):
        print(
            f"note: transforms.size is {list(size)} but anchors.image_size is {list(cfg.image_size)}; "
            "the report uses anchors.image_size",
            file=sys.stderr,
        )
    try:
        if args.fit:  # the fit walks the boxes many times, and measures the starting point itself
            samples_list = samples_list if args.ann_file is not None else list(samples)
            return _fit(args, samples_list, cfg, source, raw)
        report = anchor_coverage(
            samples,
            generator,
            feature_sizes,
            cfg.image_size,
            cfg.matcher,
            batch_size=args.batch_size,
            max_images=args.max_images,
        )
    except (ConfigError, ValueError, OSError) as exc:  # e.g. a DataError while reading annotations
        print(f"cvkit anchors: {exc}", file=sys.stderr)
        return 2
    summary = {"source": source, **report.to_dict()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "anchor_coverage.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"source: {source}")
        print(report.format())
    written = [args.out / "anchor_coverage.json"]
    if not args.no_plot:
        written.append(report.save_plot(args.out / "anchor_coverage.png"))
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


ATSS_NOTE = (
    "note: loss.assigner is atss, which picks each object's positives by centre distance and an adaptive IoU "
    "threshold, not by IoU >= anchors.matcher.pos_thresh; this proposal maximises max-IoU coverage, and with "
    "ATSS anchors smaller than about 4x the stride trained worse (benchmarks/README.md, detector levers)"
)


def _fit(args: argparse.Namespace, samples_list: list[Any], cfg: Any, source: str,
         raw: dict[str, Any] | None = None) -> int:
    from cvkit.evaluation.anchor_fit import fit_anchors

    fit = fit_anchors(samples_list, cfg, max_images=args.max_images, batch_size=args.batch_size)
    print(f"source: {source}")
    print(format_fit(fit))
    loss = (raw or {}).get("loss")
    if isinstance(loss, dict) and loss.get("assigner") == "atss":
        print(ATSS_NOTE, file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"source": source, "key": fit.key, "value": fit.value, "before": fit.before.to_dict(),
               "after": fit.after.to_dict()}
    (args.out / "anchor_fit.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if not args.no_plot:
        fit.after.save_plot(args.out / "anchor_coverage_fitted.png")
    if args.write:
        if args.config is None:
            print("cvkit anchors: --write needs --config", file=sys.stderr)
            return 2
        write_anchor_value(args.config, fit.key, fit.value)
        print(f"wrote anchors.{fit.key} into {args.config}", file=sys.stderr)
    return 0
