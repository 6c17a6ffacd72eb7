"""What the recipe's train step costs, lever by lever, and the light variant of ``cvkit demo`` (issue 14, 2.5)

The train step (forward, ATSS + QFL + GIoU loss, backward, AdamW step) of ``configs/default.yaml`` against the
same step with one lever of the demo's light variant (:data:`cvkit.cli.demo.LIGHT_OVERRIDES`) at a time, and
with all of them: the backbone width, the neck channels, the convolutions per head tower, the input size.
Each side is a freshly built, seeded model in the recipe's memory format and precision on this CPU (bf16
autocast where native, else float32), fed a seeded batch of uint8 noise images with 1-6 boxes each at its own
input size; the two sides are timed interleaved in this process. The ratio is recipe time / variant time
(> 1: the variant is cheaper); the row also holds both parameter counts. The check: both losses are finite.

Run: .venv/bin/python benchmarks/bench_model_cost.py [--quick] [--batch 8] [--threads 2] [--repeat 15]
Rows: ``results/model_cost.jsonl``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from _harness import Bench
from bench_compile import NUM_CLASSES, make_batch, recipe_args
from bench_memory_format import _step as train_step

from cvkit.cli.demo import LIGHT_OVERRIDES
from cvkit.config import apply_overrides
from cvkit.run_config import run_config_from_dict, to_dict
from cvkit.tasks.detect import build_model

SIZE_KEYS = ("transforms.size", "anchors.image_size")


def levers() -> dict[str, list[str]]:
    """Each lever of the light variant alone (the two input-size keys go together), then all of them."""
    single = [o for o in LIGHT_OVERRIDES if not o.startswith(SIZE_KEYS)]
    size = [o for o in LIGHT_OVERRIDES if o.startswith(SIZE_KEYS)]
    out = {o.split(".", 1)[1]: [o] for o in single}
    if size:
        out[size[0].split("=", 1)[1].replace(",", "x").strip("[]")] = size
    out["light (all)"] = list(LIGHT_OVERRIDES)
    return out


def _step(cfg: Any, batch: int, bf16: bool):
    """(train step closure, parameter count) for a seeded model of ``cfg`` on a batch at its input size."""
    images, targets = make_batch(batch, int(cfg.transforms.size[0]))
    step = train_step(cfg, images, targets, bool(cfg.model.channels_last), bf16)
    params = sum(p.numel() for p in build_model(cfg, NUM_CLASSES)[0].parameters())
    return step, params


def main(argv: list[str] | None = None) -> int:
    batch, args, cfg, bf16 = recipe_args("model_cost", argv)
    bench = Bench("model_cost", args)
    cases = levers()
    if args.quick:
        cases = {"light (all)": cases["light (all)"]}
    for _threads in bench.thread_settings():
        recipe, recipe_params = _step(cfg, batch, bf16)
        for name, overrides in cases.items():
            variant_cfg = run_config_from_dict(apply_overrides(to_dict(cfg), overrides), name, overrides)
            variant, params = _step(variant_cfg, batch, bf16)
            row = bench.compare(
                case={"what": "train step", "variant": name, "batch": batch,
                      "amp": "bfloat16" if bf16 else "float32"},
                candidate=variant, baseline=recipe,
                check=lambda a, b: math.isfinite(a) and math.isfinite(b),
                candidate_name="variant", baseline_name="recipe",
            )
            row["case"].update(variant_params=params, recipe_params=recipe_params)
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
