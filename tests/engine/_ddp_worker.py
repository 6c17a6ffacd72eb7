"""The per-process body of the 2-process gloo test (a module-level function, so spawn can import it)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from cvkit.engine import TrainConfig, fit
from tests.engine._tiny import ScriptedEvaluator, TinyCriterion, TinyDetector, TinyPostprocessor, tiny_loader

CFG = TrainConfig(
    epochs=2, lr=0.05, warmup_epochs=0.5, ema=True, ema_warmup_steps=2, progress=False, console_table=False,
    plots=False, tensorboard=False, device="cpu",
    amp_cpu="none",  # float32: the test compares 2 processes with 1 to 1e-6 (bfloat16 autocast would round)
)


def run(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model, criterion, evaluator = TinyDetector(), TinyCriterion(), ScriptedEvaluator([0.5, 0.6])
    history = fit(
        model,
        criterion,
        TinyPostprocessor(),
        tiny_loader(num_images=8, batch_size=2),  # per process: 2 ranks x 2 = the reference's batch of 4
        tiny_loader(num_images=4, batch_size=4, shuffle=False, transform=None),
        CFG,
        Path(out_dir) / f"run_rank{rank}",
        evaluator=evaluator,
    )
    result = {
        "state": model.state_dict(),
        "history": history,
        "num_steps": len(criterion.losses),
        "eval_calls": evaluator.calls,
        "backend": dist.get_backend(),
    }
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()
