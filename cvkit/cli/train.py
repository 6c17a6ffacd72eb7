"""``cvkit train CONFIG [--set a.b=c ...] [--resume CKPT]``: train a detector from one YAML file.

Builds the datasets and loaders (``data:``, ``transforms:``), the detector, its criterion and
postprocessor (``model:``, ``loss:``, ``postprocess:``, ``anchors:``), a COCO evaluator on the val split,
and runs :func:`cvkit.engine.train.fit` (``train:``). Every checkpoint carries what inference needs:
the resolved config, class names, preprocessing (size, mean, std) and the dataset's category ids.
Run folder: ``<train.output_dir>/<name>`` (or ``--run-dir``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cvkit.cli._errors import CliError, cli_errors
from cvkit.tasks.detect import run as run_detection

EXAMPLES = """examples:
  cvkit train configs/default.yaml
  cvkit train configs/default.yaml --set train.epochs=2 --set data.batch_size=8
  cvkit train configs/default.yaml --resume runs/default/checkpoints/last.pt --set train.epochs=30
"""


def build_parser(prog: str = "cvkit train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="YAML run config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--resume", type=Path, default=None,
                        help="checkpoint to resume from (runs/<name>/checkpoints/last.pt or best.pt)")
    parser.add_argument("--run-dir", type=Path, default=None, help="run folder (default: runs/<name>)")
    parser.add_argument("--kfold", type=int, default=None, metavar="K",
                        help="task classify: K-fold cross-validation on the train split (per-fold and mean +- std)")
    return parser


def run(cfg: Any, run_dir: Path, resume: Path | None = None) -> list[dict[str, float]]:
    """Train ``cfg`` into ``run_dir`` with its task's run (:mod:`cvkit.tasks`); returns the epoch rows."""
    if cfg.task == "classify":
        from cvkit.tasks.classify import run as run_classification

        return run_classification(cfg, run_dir, resume=resume)
    return run_detection(cfg, run_dir, resume=resume)


@cli_errors("cvkit train")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cvkit.run_config import load_run_config

    cfg = load_run_config(args.config, args.overrides)  # a ConfigError names the file or the --set override
    run_dir = args.run_dir or Path(getattr(cfg.train, "output_dir", "runs")) / cfg.name
    if args.resume is not None and not args.kfold:  # a bad --resume fails now, not after data and model are built
        from cvkit.checkpoint import load_checkpoint, require_training_checkpoint

        require_training_checkpoint(load_checkpoint(args.resume, mmap=True), args.resume)
    if args.kfold:
        if cfg.task != "classify":
            raise CliError("--kfold is for task: classify")
        if args.resume is not None:
            raise CliError("--kfold trains every fold from scratch; it cannot --resume")
        from cvkit.tasks.classify import run as run_classification

        run_classification(cfg, run_dir, resume=args.resume, kfold=args.kfold)
        return 0
    rows = run(cfg, run_dir, args.resume)
    if rows and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        last = rows[-1]
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in last.items() if k in ("AP", "AP50", "AP75", "accuracy", "top5"))
        print(f"done: {len(rows)} epochs; last epoch {metrics or '(not evaluated)'}; run folder: {run_dir}")
    return 0
