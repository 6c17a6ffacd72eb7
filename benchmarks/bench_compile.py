"""``torch.compile`` on the CPU: does it pay back within a short training budget? (issue 14, lever 2.6)

The default recipe's training step (``configs/default.yaml``: the dense detector, resnet18 at half width, PAN
neck, shared head, ATSS + QFL + GIoU, channels_last, bfloat16 autocast where the CPU has it natively) on a
seeded batch of uint8 noise images with 1-6 boxes each, eager against ``torch.compile(model)`` (inductor,
the model's forward; the criterion, the backward through the compiled graph and the AdamW step are the same
on both sides). Prints the first compiled step (the compile cost), the medians of the later steps of both
sides (interleaved), their ratio, and the break-even: the minutes of training after which the compiled run
has seen more images than the eager one. Also the eval-mode forward (what each evaluation and ``cvkit infer``
run), which compiles a second graph.

Run: .venv/bin/python benchmarks/bench_compile.py [--quick] [--batch 8] [--threads 2] [--repeat 15]
Rows: ``results/compile.jsonl``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from _harness import Bench, parse_args

from cvkit.engine.train import cpu_has_native_bf16
from cvkit.run_config import load_run_config
from cvkit.tasks.detect import build_model

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10


def make_batch(batch: int, size: int, seed: int = 0):
    """uint8 ``(batch, 3, size, size)`` noise images and 1-6 random boxes (16-150 px) per image."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    targets = []
    for _ in range(batch):
        n = int(torch.randint(1, 7, (1,), generator=g))
        wh = torch.rand(n, 2, generator=g) * 134 + 16
        xy = torch.rand(n, 2, generator=g) * (size - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                        "labels": torch.randint(0, NUM_CLASSES, (n,), generator=g)})
    return images.contiguous(memory_format=torch.channels_last), targets


def recipe_args(name: str, argv: list[str] | None) -> tuple[int, Any, Any, bool]:
    """``--batch`` and ``--config`` (default: the recipe) beside the harness's flags: (batch, harness args,
    run config, whether the config trains with bf16 autocast on this CPU)."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--batch", type=int, default=8)
    pre.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    own, rest = pre.parse_known_args(argv)
    cfg = load_run_config(own.config)
    bf16 = bool(cfg.train.amp) and cfg.train.amp_cpu != "none" and (cfg.train.amp_cpu == "bfloat16"
                                                                    or cpu_has_native_bf16())
    return own.batch, parse_args(name, rest), cfg, bf16


def main(argv: list[str] | None = None) -> int:
    batch, args, cfg, use_amp = recipe_args("compile", argv)
    size = int(cfg.transforms.size[0])
    bench = Bench("compile", args)
    amp_dtype = torch.bfloat16
    images, targets = make_batch(batch, size)
    for threads in bench.thread_settings():
        sides = {}
        for name in ("eager", "compiled"):
            torch.manual_seed(0)
            model, criterion, _ = build_model(cfg, NUM_CLASSES)
            if cfg.model.channels_last:
                model = model.to(memory_format=torch.channels_last)
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            forward = torch.compile(model) if name == "compiled" else model

            def step(forward=forward, criterion=criterion, optimizer=optimizer):
                with torch.autocast("cpu", dtype=amp_dtype, enabled=use_amp):
                    losses = criterion(forward(images), targets)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                optimizer.step()
                return float(losses["loss"].detach())

            start = time.perf_counter()
            first_loss = step()
            first = time.perf_counter() - start
            sides[name] = (step, first, first_loss, model, forward)
            print(f"[compile] thr={threads} {name}: first step {first:.1f} s, loss {first_loss:.4f}", flush=True)
        row = bench.compare(
            case={"what": "train step", "batch": batch, "size": size, "amp": str(amp_dtype) if use_amp else "off",
                  "first_step_s": {k: round(v[1], 2) for k, v in sides.items()}},
            candidate=sides["compiled"][0], baseline=sides["eager"][0],
            check=lambda a, b: abs(a - b) <= 0.05 * max(abs(b), 1e-6),
            candidate_name="compiled", baseline_name="eager",
        )
        eager_s, compiled_s = row["eager_ms"] / 1e3, row["compiled_ms"] / 1e3
        extra = sides["compiled"][1] - sides["eager"][1]
        if compiled_s < eager_s:
            # images(t) eager = t / eager_s; compiled = (t - extra) / compiled_s: equal at t = extra / (1 - c/e)
            breakeven = extra / (1 - compiled_s / eager_s) / 60
            print(f"[compile] thr={threads} break-even after {breakeven:.1f} min of training "
                  f"(compile cost {extra:.0f} s, step {eager_s * 1e3:.0f} -> {compiled_s * 1e3:.0f} ms)")
        else:
            breakeven = None
            print(f"[compile] thr={threads} never pays back: the compiled step is not faster")
        row["breakeven_min"] = None if breakeven is None else round(breakeven, 2)

        eval_sides = {}
        for name in ("eager", "compiled"):
            model, forward = sides[name][3], sides[name][4]
            model.eval()

            def infer(forward=forward):
                with torch.no_grad(), torch.autocast("cpu", dtype=amp_dtype, enabled=use_amp):
                    return forward(images)["cls_logits"].float()

            start = time.perf_counter()
            infer()
            eval_sides[name] = (infer, time.perf_counter() - start)
        row = bench.compare(
            case={"what": "eval forward", "batch": batch, "size": size,
                  "amp": str(amp_dtype) if use_amp else "off",
                  "first_call_s": {k: round(v[1], 2) for k, v in eval_sides.items()}},
            candidate=eval_sides["compiled"][0], baseline=eval_sides["eager"][0],
            check=lambda a, b: bool((a - b).abs().max() <= 0.05 * b.abs().max() + 0.05),
            candidate_name="compiled", baseline_name="eager",
        )
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
