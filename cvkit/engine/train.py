"""Training: ``train_one_epoch`` (one pass of optimizer steps) and ``fit`` (the whole run).

``fit`` reads top to bottom::

    join the process group (under torchrun) -> device, seeds, determinism
    -> param groups -> optimizer -> per-iteration schedule -> GradScaler (CUDA AMP) -> EMA
    -> resume (model, optimizer, schedule, scaler, EMA, epoch, best metric, history, RNG states)
    -> for each epoch: set the loader's epoch, train_one_epoch, every eval_every epochs evaluate
       (val loss + evaluator metrics, on the EMA weights when EMA is on), log the row,
       write last.pt (and best.pt when the monitored metric improved), stop early when patience runs out.

The model contract: ``model(images) -> outputs``, ``criterion(outputs, targets) -> {"loss": total, ...}``
(every entry a scalar tensor; ``loss`` is backpropagated, all are logged), ``postprocessor`` only for
evaluation (see :mod:`cvkit.engine.evaluate`). Batches are dicts from ``cvkit.data``'s collate functions;
targets are ``batch["targets"]`` (detection) or ``batch["labels"]`` (classification).

Reproducibility: RNG states are saved with every checkpoint after the epoch's evaluation, and the data
order and augmentation depend only on ``(seed, epoch, index)`` (``cvkit.data.loader``), so a single-process
CPU run resumed from ``last.pt`` produces the same losses as the uninterrupted run.

Distributed (``torchrun``): the train loader is sharded with
:class:`cvkit.engine.distributed.DistributedEpochSampler` (batch size per process), the model is wrapped in
``DistributedDataParallel`` (``train.sync_bn``: SyncBatchNorm first, CUDA only), train losses are averaged over
processes, and rank 0 alone evaluates (on the full val loader), prints and writes files; the stop decision
is broadcast so every rank leaves the loop together.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvkit.config import to_dict
from cvkit.data.loader import batch_images
from cvkit.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, require_training_checkpoint, save_checkpoint
from cvkit.engine.config import TrainConfig
from cvkit.engine.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_object,
    convert_sync_batchnorm,
    distributed_loader,
    get_rank,
    get_world_size,
    init_distributed,
)
from cvkit.engine.ema import ModelEMA
from cvkit.engine.evaluate import autocast_args, batch_targets, evaluate, move_to_device
from cvkit.engine.logging import RunLogger, save_run_info, write_text_atomic
from cvkit.engine.optim import IterationSchedule, build_optimizer, build_schedule, model_param_groups
from cvkit.engine.seed import rng_state, seed_everything, set_deterministic, set_rng_state

log = logging.getLogger("cvkit.engine")

__all__ = ["train_one_epoch", "fit", "resolve_device", "monitor_mode", "CHECKPOINT_VERSION"]


CHECKPOINT_VERSION = 1


def resolve_device(name: str = "auto", distributed: bool = False) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under torchrun CUDA means ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device={name!r} but CUDA is not available")
        if distributed:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def monitor_mode(cfg: TrainConfig) -> str:
    """``max`` or ``min``: ``auto`` means min for metrics whose name contains ``loss``."""
    if cfg.monitor_mode != "auto":
        return cfg.monitor_mode
    return "min" if "loss" in cfg.monitor else "max"


def _set_loader_epoch(loader: Any, epoch: int) -> None:
    set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512_BF16 or AMX): bf16 autocast then pays off."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run on ``device``: float16 on CUDA (``amp``), bfloat16 on CPU (``amp`` and
    ``amp_cpu``: "bfloat16", or "auto" on a CPU with native bf16), None for full float32."""
    if not cfg.amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and (cfg.amp_cpu == "bfloat16" or (cfg.amp_cpu == "auto" and cpu_has_native_bf16())):
        return torch.bfloat16
    return None


def train_one_epoch(
    model: nn.Module,
    criterion: Callable[..., dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    loader: Iterable[dict[str, Any]],
    device: torch.device | str,
    epoch: int,
    scheduler: IterationSchedule | None = None,
    scaler: torch.amp.GradScaler | None = None,
    ema: ModelEMA | None = None,
    clip_grad_norm: float = 0.0,
    amp: bool | torch.dtype | None = False,
    progress: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``: forward, loss, backward, (clip), step, schedule step, EMA update.

    Returns the mean over iterations of every loss term the criterion gives, plus ``skipped`` (samples the
    loader dropped as bad input). ``amp``: a dtype autocasts forward and loss to it (e.g. bfloat16 on CPU),
``True`` to float16 on CUDA only; with float16 the ``scaler`` scales the loss.
    ``clip_grad_norm > 0`` clips the global gradient norm (after unscaling). A non-finite loss raises
    ``FloatingPointError`` naming the epoch, step and loss terms.
    """
    from tqdm import tqdm

    device = torch.device(device)
    use_amp, amp_dtype = autocast_args(amp, device)
    model.train()
    sums: dict[str, float] = {}
    num_steps = 0
    skipped = 0
    skipped_kinds: Counter = Counter()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress, dynamic_ncols=True)
    for step, batch in enumerate(bar):
        skipped += int(batch.get("num_skipped", 0))
        skipped_kinds.update(batch.get("skipped_kinds") or {})
        if len(batch["images"]) == 0:
            continue
        images = batch_images(batch, device)  # moved, then normalized there
        targets = move_to_device(batch_targets(batch), device)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            outputs = model(images)
            losses = criterion(outputs, targets)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            terms = {k: float(v.detach()) for k, v in losses.items()}
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step}: {terms}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            if clip_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model)
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        num_steps += 1
        if progress:
            bar.set_postfix(loss=f"{sums['loss'] / num_steps:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    stats = {k: v / max(num_steps, 1) for k, v in sums.items()}
    stats["skipped"] = float(skipped)
    if skipped:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(skipped_kinds.items()))
        log.warning("epoch %d: skipped %d bad sample(s) (data.on_error=skip): %s", epoch + 1, skipped, kinds)
    return stats


def fit(
    model: nn.Module,
    criterion: Callable[..., dict[str, torch.Tensor]],
    postprocessor: Callable[..., Any] | None,
    train_loader: Any,
    val_loader: Iterable[dict[str, Any]] | None,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    evaluator: Any | None = None,
    resume: str | os.PathLike | None = None,
    extra_state: Mapping[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``cfg.epochs`` epochs (see the module docstring); returns the per-epoch rows.

    Each row: ``epoch`` (1-based), the mean train loss terms, ``skipped``, and on evaluated epochs
    ``val_*`` losses and the evaluator's metrics, then ``lr`` (largest group lr at the epoch's end) and
    ``time`` (seconds). ``resume``: a ``last.pt``/``best.pt`` to continue from; ``cfg.epochs`` may be
    larger than the checkpoint's run. ``extra_state`` is stored in every checkpoint under ``extra``; its
    ``config`` entry (the resolved root config as a dict), when present, is written to
    ``run_dir/config.yaml``, otherwise the ``train:`` section alone. Under torchrun only rank 0 writes
    and its rows include evaluation results.
    """
    run_dir = Path(run_dir)
    if val_loader is not None and evaluator is None and not cfg.monitor.startswith("val_"):
        raise ValueError(
            f"train.monitor={cfg.monitor!r} needs an evaluator; without one only the validation losses "
            "(val_loss, val_<term>) can be monitored"
        )
    distributed = init_distributed(cfg.dist_backend, cfg.device)
    rank, world_size = get_rank(), get_world_size()
    main = rank == 0
    device = resolve_device(cfg.device, distributed)
    previous_deterministic = set_deterministic(cfg.deterministic)
    logger: RunLogger | None = None
    try:
        seed_everything(cfg.seed + rank)
        model.to(device)
        if isinstance(criterion, nn.Module):
            criterion.to(device)
        if distributed:
            if cfg.sync_bn:
                model = convert_sync_batchnorm(model, device)
            train_loader = distributed_loader(train_loader, rank, world_size)

        optimizer = build_optimizer(model_param_groups(model, cfg), cfg)
        scheduler = build_schedule(optimizer, cfg, len(train_loader))
        amp_dtype = autocast_dtype(cfg, device)
        use_amp = amp_dtype == torch.float16 and device.type == "cuda"  # the loss scaler is for float16 only
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        ema = ModelEMA(model, cfg.ema_decay, cfg.ema_warmup_steps) if cfg.ema else None

        start_epoch, global_step = 0, 0
        best_metric: float | None = None
        best_epoch, bad_evals = 0, 0
        history: list[dict[str, float]] = []
        resumed_rng: dict[str, Any] | None = None
        if resume is not None:
            state = load_checkpoint(resume, map_location="cpu")
            require_training_checkpoint(state, resume)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if use_amp and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            start_epoch, global_step = int(state["epoch"]), int(state["global_step"])
            best_metric, best_epoch = state.get("best_metric"), int(state.get("best_epoch", 0))
            bad_evals = int(state.get("bad_evals", 0))
            history = [dict(r) for r in state.get("history", [])]
            per_rank = state.get("rng_per_rank") or []
            resumed_rng = per_rank[rank] if len(per_rank) == world_size else state["rng"]

        train_model: nn.Module = model
        if distributed:
            device_ids = [device.index] if device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

        logger = RunLogger(
            run_dir,
            enabled=main,
            console_table=cfg.console_table,
            tensorboard=cfg.tensorboard,
            plots=cfg.plots,
            metrics=_table_metrics(val_loader, evaluator, cfg.monitor),
            history=history,
        )
        if main:
            config = (extra_state or {}).get("config") or {"train": to_dict(cfg)}
            save_run_info(run_dir, config)
            if resume is not None:
                logger.print(f"resumed from {resume} at epoch {start_epoch} of {cfg.epochs}")
        mode = monitor_mode(cfg)
        evaluated_now = False  # whether this call ran the evaluator (its report is then current)
        if resumed_rng is not None:
            set_rng_state(resumed_rng)

        for epoch in range(start_epoch, cfg.epochs):
            start = time.perf_counter()
            _set_loader_epoch(train_loader, epoch)
            stats = train_one_epoch(
                train_model,
                criterion,
                optimizer,
                train_loader,
                device,
                epoch,
                scheduler=scheduler,
                scaler=scaler,
                ema=ema,
                clip_grad_norm=cfg.clip_grad_norm,
                amp=amp_dtype,
                progress=cfg.progress and main,
            )
            global_step = scheduler.last_iter
            stats = all_reduce_mean(stats, device)
            stats["skipped"] *= world_size  # a sum over processes, not a mean
            row: dict[str, float] = {"epoch": float(epoch + 1), **stats}

            evaluated = val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs)
            improved = stop = False
            if evaluated and main and val_loader is not None:
                eval_model = ema.module if ema is not None else model
                metrics = evaluate(
                    eval_model, criterion, postprocessor, val_loader, device, evaluator, amp_dtype, cfg.progress
                )
                row.update(metrics)
                evaluated_now = evaluator is not None
                if cfg.monitor not in metrics:
                    raise KeyError(
                        f"train.monitor={cfg.monitor!r} is not among the evaluation metrics {sorted(metrics)}"
                    )
                value = float(metrics[cfg.monitor])
                if math.isfinite(value):
                    if best_metric is None:
                        improved = True
                    elif mode == "max":
                        improved = value > best_metric + cfg.early_stop_min_delta
                    else:
                        improved = value < best_metric - cfg.early_stop_min_delta
                if improved:
                    best_metric, best_epoch, bad_evals = value, epoch + 1, 0
                else:
                    bad_evals += 1
                stop = cfg.early_stop_patience > 0 and bad_evals >= cfg.early_stop_patience
                report = getattr(evaluator, "report", None)
                if callable(report):
                    write_text_atomic(run_dir / "eval_report.txt", report() + "\n")
            row["lr"] = max(group["lr"] for group in optimizer.param_groups)
            row["time"] = time.perf_counter() - start
            logger.log_epoch(row)

            rng = rng_state()
            rng_per_rank = _gather_objects(rng) if distributed else []
            if main and (cfg.save_last or (cfg.save_best and improved)):
                state = {
                    "format": CHECKPOINT_FORMAT,
                    "version": CHECKPOINT_VERSION,
                    "epoch": epoch + 1,
                    "global_step": global_step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "rng": rng,
                    "rng_per_rank": rng_per_rank,
                    "best_metric": best_metric,
                    "best_epoch": best_epoch,
                    "bad_evals": bad_evals,
                    "monitor": cfg.monitor,
                    "history": logger.history,
                    "train_config": to_dict(cfg),
                    "extra": dict(extra_state or {}),
                }
                if cfg.save_last:
                    save_checkpoint(run_dir / "checkpoints" / "last.pt", state)
                if cfg.save_best and improved:
                    save_checkpoint(run_dir / "checkpoints" / "best.pt", state)
                    logger.print(f"best {cfg.monitor} {best_metric:.4f} at epoch {epoch + 1}")
            if broadcast_object(stop):
                logger.print(
                    f"early stop at epoch {epoch + 1}: {cfg.monitor} did not improve for {bad_evals} evaluations"
                )
                break
            barrier()

        report = getattr(evaluator, "report", None)
        if main and evaluated_now and callable(report):
            logger.print(report())
        return logger.history
    finally:
        if logger is not None:
            logger.close()
        set_deterministic(previous_deterministic)


def _table_metrics(val_loader: Any, evaluator: Any, monitor: str) -> list[str]:
    """Validation columns of the console table: val_loss, the evaluator's headline metrics, the monitor."""
    if val_loader is None:
        return []
    names = ["val_loss"]
    if evaluator is not None:
        names += list(getattr(evaluator, "table_metrics", ("AP", "AP50")))
    return names + ([monitor] if monitor not in names else [])


def _gather_objects(obj: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
