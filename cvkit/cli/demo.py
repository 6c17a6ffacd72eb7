"""``cvkit demo``: train the default detector on the built-in data, evaluate it, and run inference.

The README's main command (``make demo``). Three steps, each printed as it goes:

1. train ``configs/default.yaml`` (the dense detector on the built-in synthetic shapes; the data are
   generated into the cache on first use) into ``--run-dir``, to a time budget (``--minutes``, 7 by default:
   ``train.budget_minutes``, with the epochs a cap of 100), so that it takes the same time on fast and slow
   CPUs;
2. evaluate the best checkpoint on the val split with pycocotools (AP, AP50, AP75, APs/m/l, per-class AP);
3. run inference with that checkpoint on the first ``--images`` val images: annotated images, JSON files
   and a grid picture of them all.

On a CPU that trains in float32 (no CUDA, no native bfloat16: ``cvkit doctor`` says which) the recipe's train
step costs about five times what it costs in bf16, so the 7 minutes would see too few images for a detector
that works; there the demo trains the light variant of the recipe (``--light auto``, the default: a
narrower backbone and a 32-channel neck and head, 256x256 inputs, lr 4e-3; :data:`LIGHT_OVERRIDES`), says so
on its first line, and ``--light off`` (or ``on``) decides it by hand. ``--set`` overrides win over both.

Running it again is cheap: a finished run whose stored config equals the requested one is not trained
again (``--retrain`` forces it); an interrupted one resumes from its ``last.pt``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cvkit.cli._errors import CliError, cli_errors

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
# training budget: with evaluation and inference (about half a minute) the demo ends within 8 minutes
DEMO_MINUTES = 7.0
DEMO_MAX_EPOCHS = 100
# the light variant (--light): the recipe at a fraction of its train-step cost, for CPUs that train in float32
LIGHT_OVERRIDES = (
    "model.backbone_width=0.25",     # the recipe: 0.5
    "model.neck_channels=32",        # the recipe: 48 (the head towers keep the recipe's two convs)
    "transforms.size=[256,256]",     # the recipe: 300x300 (the anchors' input follows)
    "anchors.image_size=[256,256]",
    "train.lr=0.004",                # the recipe: 0.001 (the light model's short run learns faster with it)
)


def _load_config(path: Path | None, overrides: list[str]) -> Any:
    from cvkit.config import apply_overrides
    from cvkit.run_config import RunConfig, load_run_config, run_config_from_dict, to_dict

    if path is not None:
        return load_run_config(path, overrides)
    if DEFAULT_CONFIG.is_file():  # a source checkout (the README's case)
        return load_run_config(DEFAULT_CONFIG, overrides)
    return run_config_from_dict(apply_overrides(to_dict(RunConfig()), overrides), "defaults", overrides)


def light_wanted(mode: str, own_config: bool, cfg: Any) -> bool:
    """Whether the demo trains the light variant: ``on`` / ``off`` as asked; ``auto``: for the built-in recipe
    (no ``--config``) when the run trains on a CPU in float32 (no CUDA; no bf16 autocast: ``train.amp`` off or
    a CPU without native bf16)."""
    if mode != "auto":
        return mode == "on"
    if own_config:
        return False
    from cvkit.engine.train import autocast_dtype, resolve_device

    device = resolve_device(cfg.train.device)
    return device.type == "cpu" and autocast_dtype(cfg.train, device) is None


def training_state(run_dir: Path, cfg: Any) -> str:
    """``"done"`` (finished run of this very config), ``"resume"`` (interrupted run of it) or ``"fresh"``."""
    from cvkit.engine.checkpoint import load_checkpoint
    from cvkit.run_config import to_dict

    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return "fresh"
    try:
        state = load_checkpoint(last)
    except Exception:  # unreadable or foreign: train again rather than fail the demo
        return "fresh"
    stored = (state.get("extra") or {}).get("config")
    if stored != to_dict(cfg):
        return "fresh"
    finished = bool((state.get("budget") or {}).get("finished"))  # a budgeted run that used its budget up
    return "done" if finished or int(state.get("epoch", 0)) >= cfg.train.epochs else "resume"


@cli_errors("cvkit demo")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvkit demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML run config (default: configs/default.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=1 (repeatable)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    parser.add_argument("--images", type=int, default=8, help="val images to run inference on (default 8)")
    parser.add_argument("--retrain", action="store_true", help="train even when a finished run exists")
    parser.add_argument("--minutes", type=float, default=DEMO_MINUTES,
                        help=f"training budget in minutes (default {DEMO_MINUTES:g}; train.budget_minutes, with "
                             f"train.epochs={DEMO_MAX_EPOCHS} as a cap; --set overrides win); 0: the config's epochs")
    parser.add_argument("--light", choices=("auto", "on", "off"), default="auto",
                        help="train the light variant of the recipe (auto, the default: when the built-in recipe "
                             "would train in float32 on a CPU without native bf16; --set overrides still win)")
    args = parser.parse_args(argv)
    if args.minutes < 0:
        raise CliError(f"--minutes must be >= 0, got {args.minutes:g}")
    budget = [f"train.budget_minutes={args.minutes:g}", f"train.epochs={DEMO_MAX_EPOCHS}"] if args.minutes else []

    cfg = _load_config(args.config, [*budget, *args.overrides])  # a ConfigError names the file or the --set override
    light = light_wanted(args.light, args.config is not None, cfg)
    if light:
        cfg = _load_config(args.config, [*budget, *LIGHT_OVERRIDES, *args.overrides])
    if cfg.task != "detect":
        raise CliError("the demo trains a detector (task: detect)")
    from cvkit.cli import eval as eval_cli
    from cvkit.cli import infer as infer_cli
    from cvkit.data.build import dataset_root
    from cvkit.tasks.detect import run as train_run

    run_dir = args.run_dir
    ckpt_dir = run_dir / "checkpoints"
    state = "fresh" if args.retrain else training_state(run_dir, cfg)
    start = time.perf_counter()
    if state == "done":
        print(f"[1/3] train: {run_dir} already holds a finished run of this config (--retrain to train again)")
    else:
        resume = ckpt_dir / "last.pt" if state == "resume" else None
        verb = f"resuming from {resume}" if resume else "training"
        length = (f"{cfg.train.budget_minutes:g} min (at most {cfg.train.epochs} epochs)" if cfg.train.budget_minutes
                  else f"{cfg.train.epochs} epochs")
        print(f"[1/3] train: {verb} {cfg.model.backbone} {cfg.model.arch} at {cfg.transforms.size[0]}x"
              f"{cfg.transforms.size[1]} for {length} into {run_dir}", flush=True)
        if light:
            why = "asked for (--light on)" if args.light == "on" else "this run trains in float32 on a CPU"
            print(f"      the light variant of the recipe: {why}; {', '.join(LIGHT_OVERRIDES)} (--light off: "
                  "the full recipe)", flush=True)
        if resume is None and ckpt_dir.is_dir():
            for stale in ckpt_dir.glob("*.pt"):  # another config's checkpoints must not be mixed in
                stale.unlink()
        train_run(cfg, run_dir, resume=resume)
        print(f"      trained in {time.perf_counter() - start:.0f} s")
    best = ckpt_dir / "best.pt"
    checkpoint = best if best.is_file() else ckpt_dir / "last.pt"

    print(f"[2/3] evaluate {checkpoint} on the val split", flush=True)
    rc = eval_cli.main(["--checkpoint", str(checkpoint), "--out", str(run_dir / "eval")])
    if rc:
        return rc
    import json

    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    print(f"      mAP@0.5 = {metrics.get('AP50', float('nan')):.4f}   COCO AP@[.5:.95] = "
          f"{metrics.get('AP', float('nan')):.4f}", flush=True)

    if args.images <= 0:
        print("[3/3] infer: skipped (--images 0)")
        return 0
    val_images = dataset_root(cfg.data) / "images" / "val"
    paths = sorted(val_images.glob("*.jpg"))[: args.images] if cfg.data.format == "synthetic" else []
    if not paths:
        print(f"[3/3] infer: no built-in val images for data.format={cfg.data.format!r}; skipped "
              "(run `cvkit infer --checkpoint ... IMAGES` on your own images)")
        return 0
    out = run_dir / "infer"
    print(f"[3/3] infer: {len(paths)} val images with {checkpoint}", flush=True)
    rc = infer_cli.main([*map(str, paths), "--checkpoint", str(checkpoint), "--out", str(out)])
    if rc:
        return rc
    grid = _save_grid(out, [p.stem for p in paths])
    print(f"\npictures: annotated images in {out}/, all of them in one grid: {grid}")
    print(f"curves (losses, metrics, lr): {run_dir}/*.png; metrics per epoch: {run_dir / 'metrics.csv'}")
    print(f"COCO metrics of {checkpoint.name}: {run_dir / 'eval' / 'metrics.json'}")
    return 0


def _save_grid(folder: Path, stems: list[str]) -> Path:
    from cvkit.data.io import read_image
    from cvkit.viz.draw import make_grid, save_image

    images = [read_image(folder / f"{stem}.jpg") for stem in stems if (folder / f"{stem}.jpg").is_file()]
    return save_image(folder / "grid.jpg", make_grid(images, cols=4))
