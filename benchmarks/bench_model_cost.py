"""What the recipe's train step costs, lever by lever, and the light variant of ``cvkit demo`` (issue 14, 2.5)

The train step (forward, ATSS + QFL + GIoU loss, backward, AdamW step) of ``configs/default.yaml`` against the
same step with one lever of the demo's light variant (:data:`cvkit.cli.demo.LIGHT_OVERRIDES`) at a time, and
with all of them: the backbone width, the neck channels, the convolutions per head tower, the input size.
``--light-lever`` instead times candidate changes of the light variant against the light variant itself
(``"model.backbone_width=0.375;model.neck_channels=48"``: ``;`` joins the overrides of one case), and
``--recipe-lever`` times such changes against the recipe.
Each side is a freshly built, seeded model in the recipe's memory format and precision on this CPU (bf16
autocast where native, else float32), fed a seeded batch of uint8 noise images with 1-6 boxes each at its own
input size; the two sides are timed interleaved in this process. The ratio is recipe (or light) time / variant time
(> 1: the variant is cheaper); the row also holds both parameter counts. The check: both losses are finite.

Run: .venv/bin/python benchmarks/bench_model_cost.py [--quick] [--batch 8] [--threads 2] [--repeat 15]
     [--light-lever "key=value;key=value" ...] [--recipe-lever "key=value;key=value" ...]
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


def light_levers(specs: list[str], base: str = "light") -> dict[str, list[str]]:
    """Each ``--light-lever`` spec as a case: the light variant's overrides followed by the spec's (``base``
    ``"recipe"``: the spec's alone, for ``--recipe-lever``)."""
    out = {}
    for spec in specs:
        extra = [o.strip() for o in spec.split(";") if o.strip()]
        if not extra or any("=" not in o for o in extra):
            raise SystemExit(f"bench_model_cost: --{base}-lever {spec!r}: expected key=value[;key=value]")
        prefix = list(LIGHT_OVERRIDES) if base == "light" else []
        out[f"{base} + " + ";".join(o.split(".", 1)[-1] for o in extra)] = prefix + extra
    return out


def _variant(cfg: Any, name: str, overrides: list[str]) -> Any:
    return run_config_from_dict(apply_overrides(to_dict(cfg), overrides), name, overrides)


def _split_argv(argv: list[str] | None) -> tuple[list[str], list[str], list[str]]:
    """(the --light-lever specs, the --recipe-lever specs, the remaining arguments)."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--light-lever", action="append", default=[])
    pre.add_argument("--recipe-lever", action="append", default=[])
    own, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    return own.light_lever, own.recipe_lever, rest


def _step(cfg: Any, batch: int, bf16: bool):
    """(train step closure, parameter count) for a seeded model of ``cfg`` on a batch at its input size."""
    images, targets = make_batch(batch, int(cfg.transforms.size[0]))
    step = train_step(cfg, images, targets, bool(cfg.model.channels_last), bf16)
    params = sum(p.numel() for p in build_model(cfg, NUM_CLASSES)[0].parameters())
    return step, params


def main(argv: list[str] | None = None) -> int:
    specs, recipe_specs, rest = _split_argv(argv)
    batch, args, cfg, bf16 = recipe_args("model_cost", rest)
    bench = Bench("model_cost", args)
    if specs and recipe_specs:
        raise SystemExit("bench_model_cost: --light-lever and --recipe-lever time against different bases: one per run")
    if specs:  # candidates against the light variant
        cases, base_name, base_cfg = light_levers(specs), "light", _variant(cfg, "light", list(LIGHT_OVERRIDES))
    elif recipe_specs:  # candidates against the recipe
        cases, base_name, base_cfg = light_levers(recipe_specs, "recipe"), "recipe", cfg
    else:
        cases, base_name, base_cfg = levers(), "recipe", cfg
        if args.quick:
            cases = {"light (all)": cases["light (all)"]}
    for _threads in bench.thread_settings():
        base, base_params = _step(base_cfg, batch, bf16)
        for name, overrides in cases.items():
            variant, params = _step(_variant(cfg, name, overrides), batch, bf16)
            row = bench.compare(
                case={"what": "train step", "variant": name, "batch": batch,
                      "amp": "bfloat16" if bf16 else "float32"},
                candidate=variant, baseline=base,
                check=lambda a, b: math.isfinite(a) and math.isfinite(b),
                candidate_name="variant", baseline_name=base_name,
            )
            row["case"].update(variant_params=params, **{f"{base_name}_params": base_params})
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
