"""channels_last and bfloat16 autocast on the CPU: what each buys the recipe's train step (issue 14, lever 2.6)

The default recipe's training step (``configs/default.yaml``: the dense detector, resnet18 at half width, PAN
neck, shared head, ATSS + QFL + GIoU, AdamW) on a seeded batch of uint8 noise images with 1-6 boxes each, in
two comparisons, each side by side and interleaved in this process:

- ``model.channels_last`` true (the recipe: NHWC weights and inputs) against false (NCHW), both with the
  recipe's autocast;
- bfloat16 autocast (``train.amp_cpu: auto`` on a CPU with native bf16) against float32 (``amp_cpu: none``),
  both channels_last. On a CPU without native bf16 the recipe runs float32 and this row says what bf16 would
  cost there (emulated bf16 is slower).

The check: both sides' first losses agree (same weights, same batch; bf16 within 5%).

Run: .venv/bin/python benchmarks/bench_memory_format.py [--quick] [--batch 8] [--threads 2] [--repeat 15]
Rows: ``results/memory_format.jsonl``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from _harness import Bench
from bench_compile import NUM_CLASSES, make_batch, recipe_args

from cvkit.engine.train import cpu_has_native_bf16
from cvkit.tasks.detect import build_model


def _step(cfg: Any, images: torch.Tensor, targets: list, channels_last: bool, bf16: bool):
    """A train step closure for a freshly built, seeded model in the given memory format and precision."""
    torch.manual_seed(0)
    model, criterion, _ = build_model(cfg, NUM_CLASSES)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    batch = images.contiguous(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = criterion(model(batch), targets)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        return float(losses["loss"].detach())

    return step


def main(argv: list[str] | None = None) -> int:
    batch, args, cfg, recipe_bf16 = recipe_args("memory_format", argv)
    size = int(cfg.transforms.size[0])
    native = cpu_has_native_bf16()
    bench = Bench("memory_format", args)
    images, targets = make_batch(batch, size)
    for _threads in bench.thread_settings():
        # each side's first step must agree (the same seeded init and batch; weights change after it)
        def within(tol: float):
            return lambda a, b: abs(a - b) <= tol * max(abs(b), 1e-6)

        bench.compare(
            case={"what": "train step", "lever": "channels_last", "batch": batch, "size": size,
                  "amp": "bfloat16" if recipe_bf16 else "off"},
            candidate=_step(cfg, images, targets, True, recipe_bf16),
            baseline=_step(cfg, images, targets, False, recipe_bf16),
            check=within(0.02), candidate_name="channels_last", baseline_name="nchw",
        )
        bench.compare(
            case={"what": "train step", "lever": "bf16 autocast", "batch": batch, "size": size,
                  "native_bf16": native},
            candidate=_step(cfg, images, targets, True, True),
            baseline=_step(cfg, images, targets, True, False),
            check=within(0.05), candidate_name="bf16", baseline_name="float32",
        )
    bench.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
