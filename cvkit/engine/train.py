"""Training: ``train_one_epoch`` (one pass of optimizer steps) and ``fit`` (the whole run).

``fit`` reads top to bottom::

    join the process group (under torchrun) -> device, seeds, determinism
    -> param groups -> optimizer -> per-iteration schedule -> GradScaler (CUDA AMP) -> EMA -> budget
    -> resume (a TrainingState: model, optimizer, schedule, scaler, EMA, epoch, early stopping, budget,
       history, RNG states) -> the model summary (rank 0: printed, saved in environment.json)
    -> for each epoch: set the loader's epoch, train_one_epoch (until the budget is used up), evaluate when
       due (val loss + evaluator metrics, on the EMA weights when EMA is on; then the task's ``on_evaluate``
       hook, e.g. detection's pictures), log the row, write last.pt
       (and best.pt when the monitored metric improved), stop early when patience or the budget runs out.

The model contract: ``model(images) -> outputs``, ``criterion(outputs, targets) -> {"loss": total, ...}``
(every entry a scalar tensor; ``loss`` is backpropagated, all are logged), ``postprocessor`` only for
evaluation (see :mod:`cvkit.engine.evaluate`). Batches are dicts from ``cvkit.data``'s collate functions;
targets are ``batch["targets"]`` (detection) or ``batch["labels"]`` (classification). ``batch["images"]`` is
uint8 and goes to the device as it is: the model's first module normalizes it there
(:mod:`cvkit.models.preprocess`), so the float pass runs once per batch on the training device.

Budget (``train.budget_minutes``, ``train.max_images``; :class:`cvkit.engine.stopping.RunBudget`): the lr
schedule after the warmup follows the fraction of the budget used, evaluations happen at the first epoch end
after each ``1 / budget_evals`` of it, and the run stops inside an epoch once it is used up; that last epoch
is evaluated and saved like any other, and the run is marked finished (``epochs`` is then only a cap). Every
row records ``images_seen`` and ``time_used``, so a timed run can be repeated exactly with
``train.max_images``.

Reproducibility: RNG states are saved with every checkpoint after the epoch's evaluation, and the data
order and augmentation depend only on ``(seed, epoch, index)`` (``cvkit.data.loader``), so a single-process
CPU run resumed from ``last.pt`` produces the same losses as the uninterrupted run (a time budget makes the
length itself depend on the clock: repeat those runs by ``max_images``).

Distributed (``torchrun``): the train loader is sharded with
:class:`cvkit.engine.distributed.DistributedEpochSampler` (batch size per process), the model is wrapped in
``DistributedDataParallel`` (``train.sync_bn``: SyncBatchNorm first, CUDA only), train losses are averaged over
processes, and rank 0 alone evaluates (on the full val loader), prints and writes files; the stop decisions
are broadcast so every rank leaves the loop together.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvkit.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from cvkit.config import to_dict
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
from cvkit.engine.stopping import EarlyStopping, RunBudget
from cvkit.engine.summary import format_model_summary, model_summary

log = logging.getLogger("cvkit.engine")

__all__ = ["train_one_epoch", "fit", "resolve_device", "monitor_mode"]


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
    budget: RunBudget | None = None,
) -> dict[str, float]:
    """One pass over ``loader``: forward, loss, backward, (clip), step, schedule step, EMA update.

    ``budget``: every step is counted on it, the schedule steps by its fraction when it has a time or image
    limit, and the pass stops early once it is used up.

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
    budgeted = budget is not None and budget.limited
    set_fraction = getattr(getattr(loader, "sampler", None), "set_fraction", None)
    if set_fraction is not None and budget is not None:
        set_fraction(budget.fraction())  # before the first keys are drawn (a resumed run continues exactly)
    for step, batch in enumerate(bar):
        step_start = time.perf_counter()
        skipped += int(batch.get("num_skipped", 0))
        skipped_kinds.update(batch.get("skipped_kinds") or {})
        if len(batch["images"]) == 0:
            continue
        images = move_to_device(batch["images"], device)  # uint8: the model normalizes them on the device
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
        # one reading of the budget per step: the schedule, the sampler and the stop below all see it
        fraction = None
        if budget is not None:
            budget.step(len(batch["images"]) * get_world_size(), time.perf_counter() - step_start)
            fraction = budget.fraction()
            if set_fraction is not None:
                set_fraction(fraction)  # the sampler stops making mosaics late in the run
        if scheduler is not None:
            scheduler.step(fraction if budgeted else None)
        if ema is not None:
            ema.update(model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model)
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        num_steps += 1
        if progress:
            bar.set_postfix(loss=f"{sums['loss'] / num_steps:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if fraction is not None and _broadcast_flag(fraction >= 1.0):
            break
    stats = {k: v / max(num_steps, 1) for k, v in sums.items()}
    stats["skipped"] = float(skipped)
    if skipped:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(skipped_kinds.items()))
        log.warning("epoch %d: skipped %d bad sample(s) (data.on_error=skip): %s", epoch + 1, skipped, kinds)
    return stats


@dataclass
class _Trainer:
    """What fit builds once and every epoch uses."""

    optimizer: torch.optim.Optimizer
    scheduler: IterationSchedule
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    budget: RunBudget
    stopping: EarlyStopping
    amp_dtype: torch.dtype | None


def _build_trainer(model: nn.Module, cfg: TrainConfig, device: torch.device, iters_per_epoch: int,
                   eval_images: int) -> _Trainer:
    optimizer = build_optimizer(model_param_groups(model, cfg), cfg)
    amp_dtype = autocast_dtype(cfg, device)
    use_scaler = amp_dtype == torch.float16 and device.type == "cuda"  # the loss scaler is for float16 only
    return _Trainer(
        optimizer=optimizer,
        scheduler=build_schedule(optimizer, cfg, iters_per_epoch),
        scaler=torch.amp.GradScaler("cuda", enabled=use_scaler),
        ema=ModelEMA(model, cfg.ema_decay, cfg.ema_warmup_steps) if cfg.ema else None,
        budget=RunBudget(cfg.budget_minutes, cfg.max_images, cfg.epochs * max(iters_per_epoch, 1), eval_images),
        stopping=EarlyStopping(monitor_mode(cfg), cfg.early_stop_patience, cfg.early_stop_min_delta),
        amp_dtype=amp_dtype,
    )


def _restore(trainer: _Trainer, model: nn.Module, resume: str | os.PathLike) -> TrainingState:
    state = TrainingState.from_dict(load_checkpoint(resume, map_location="cpu"), resume)
    model.load_state_dict(state.model)
    trainer.optimizer.load_state_dict(state.optimizer)
    trainer.scheduler.load_state_dict(state.scheduler)
    if trainer.scaler.is_enabled() and state.scaler:
        trainer.scaler.load_state_dict(state.scaler)
    if trainer.ema is not None and state.ema is not None:
        trainer.ema.load_state_dict(state.ema)
    trainer.budget.load_state_dict(state.budget)
    if "iters" not in state.budget:  # a version-1 checkpoint: the schedule counted the iterations
        trainer.budget.iters = trainer.scheduler.last_iter
    stop = trainer.stopping
    stop.best, stop.best_epoch, stop.bad_evals = state.best_metric, state.best_epoch, state.bad_evals
    return state


def _evaluation_due(cfg: TrainConfig, budget: RunBudget, epoch: int, last: bool, before: float) -> bool:
    """Evaluate after epoch ``epoch`` (0-based)? Every ``eval_every`` epochs and after the last one; under a
    budget when the fraction used passed a multiple of ``1 / budget_evals`` during the epoch."""
    if last:
        return True
    if budget.limited:  # ``before``: the fraction used when the epoch started
        return math.floor(budget.last_fraction * cfg.budget_evals) > math.floor(before * cfg.budget_evals)
    return (epoch + 1) % cfg.eval_every == 0


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
    input_size: tuple[int, int] | None = None,
    on_evaluate: Callable[[int, Any, RunLogger], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``cfg.epochs`` epochs or its budget (see the module docstring); returns the rows.

    Each row: ``epoch`` (1-based), the mean train loss terms, ``skipped``, and on evaluated epochs
    ``val_*`` losses and the evaluator's metrics, then ``lr`` (largest group lr at the epoch's end),
    ``time`` (seconds of the epoch, ``eval_time`` of them evaluating), ``images_seen`` and ``time_used`` (over
    the whole run). ``resume``: a
    ``last.pt``/``best.pt`` to continue from; ``cfg.epochs`` (or the budget) may be larger than the
    checkpoint's run. ``extra_state`` is stored in every checkpoint under ``extra``; its ``config`` entry
    (the resolved root config as a dict), when present, is written to ``run_dir/config.yaml``, otherwise
    the ``train:`` section alone. Under torchrun only rank 0 writes and its rows include evaluation results.

    At the start rank 0 prints the model summary (:func:`cvkit.engine.summary.model_summary`, FLOPs and anchors
    at ``input_size = (height, width)`` when given) and saves it under ``model`` in ``environment.json``.
    ``on_evaluate(epoch, evaluator, logger)``: called on rank 0 after each evaluation (``epoch`` 1-based, the
    evaluator holding that evaluation's results, the :class:`RunLogger` for its run folder and TensorBoard),
    where a task adds its pictures; its time counts as evaluation time.
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
        eval_images = len(getattr(val_loader, "dataset", ())) if val_loader is not None else 0
        trainer = _build_trainer(model, cfg, device, len(train_loader), eval_images)
        start_epoch, history, resumed_rng = 0, [], None
        if resume is not None:
            state = _restore(trainer, model, resume)
            start_epoch, history = state.epoch, state.history
            resumed_rng = state.rng_per_rank[rank] if len(state.rng_per_rank) == world_size else state.rng
        train_model = model
        if distributed:
            device_ids = [device.index] if device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        logger = RunLogger(run_dir, enabled=main, console_table=cfg.console_table, tensorboard=cfg.tensorboard,
                           plots=cfg.plots, metrics=_table_metrics(val_loader, evaluator, cfg.monitor),
                           history=history)
        if main:
            summary = model_summary(model, input_size, device)
            logger.print(format_model_summary(summary))
            save_run_info(run_dir, (extra_state or {}).get("config") or {"train": to_dict(cfg)}, model=summary)
            if resume is not None:
                logger.print(f"resumed from {resume} at epoch {start_epoch} of {cfg.epochs}")
        if resumed_rng is not None:
            set_rng_state(resumed_rng)
        trainer.budget.start()
        trainer.budget.fraction()  # a resumed run's share, read once: the decisions below use this reading
        budgeted = trainer.budget.limited
        evaluated_now = False  # whether this call ran the evaluator (its report is then current)
        for epoch in range(start_epoch, cfg.epochs):
            if budgeted and trainer.budget.used_up:
                break
            start, before = time.perf_counter(), trainer.budget.last_fraction
            _set_loader_epoch(train_loader, epoch)
            stats = train_one_epoch(train_model, criterion, trainer.optimizer, train_loader, device, epoch,
                                    scheduler=trainer.scheduler, scaler=trainer.scaler, ema=trainer.ema,
                                    clip_grad_norm=cfg.clip_grad_norm, amp=trainer.amp_dtype,
                                    progress=cfg.progress and main, budget=trainer.budget)
            stats = all_reduce_mean(stats, device)
            stats["skipped"] *= world_size  # a sum over processes, not a mean
            row: dict[str, float] = {"epoch": float(epoch + 1), **stats}
            last = epoch + 1 == cfg.epochs or (budgeted and trainer.budget.used_up)
            improved = False
            if val_loader is not None and _evaluation_due(cfg, trainer.budget, epoch, last, before):
                if main:
                    improved = _evaluate_into(row, model, criterion, postprocessor, val_loader, device, evaluator,
                                              trainer, cfg, run_dir, on_evaluate, logger)
                    evaluated_now = evaluator is not None
            trainer.budget.finished = budgeted and trainer.budget.used_up
            row.update(lr=max(g["lr"] for g in trainer.optimizer.param_groups), time=time.perf_counter() - start,
                       images_seen=float(trainer.budget.images_seen), time_used=trainer.budget.time_used)
            logger.log_epoch(row)
            rng = rng_state()
            rng_per_rank = _gather_objects(rng) if distributed else []
            if main:
                _save(trainer, model, epoch, rng, rng_per_rank, logger.history, cfg, extra_state, run_dir,
                      improved, logger)
            if broadcast_object(trainer.stopping.should_stop):
                logger.print(f"early stop at epoch {epoch + 1}: {cfg.monitor} did not improve for "
                             f"{trainer.stopping.bad_evals} evaluations")
                break
            if broadcast_object(trainer.budget.finished):
                logger.print(f"budget used up at epoch {epoch + 1}: {trainer.budget.images_seen} images in "
                             f"{trainer.budget.time_used / 60:.1f} min")
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


def _evaluate_into(row: dict[str, float], model: nn.Module, criterion: Any, postprocessor: Any, val_loader: Any,
                   device: torch.device, evaluator: Any, trainer: _Trainer, cfg: TrainConfig, run_dir: Path,
                   on_evaluate: Callable[[int, Any, RunLogger], None] | None, logger: RunLogger) -> bool:
    """Evaluate (the EMA weights when kept) into ``row``, then ``on_evaluate``; update early stopping; True when
    the metric improved."""
    start = time.perf_counter()
    eval_model = trainer.ema.module if trainer.ema is not None else model
    metrics = evaluate(eval_model, criterion, postprocessor, val_loader, device, evaluator, trainer.amp_dtype,
                       cfg.progress)
    if on_evaluate is not None:
        on_evaluate(int(row["epoch"]), evaluator, logger)
    seconds = time.perf_counter() - start
    trainer.budget.record_evaluation(seconds)
    row.update(metrics)
    row["eval_time"] = seconds
    if cfg.monitor not in metrics:
        raise KeyError(f"train.monitor={cfg.monitor!r} is not among the evaluation metrics {sorted(metrics)}")
    improved = trainer.stopping.update(float(metrics[cfg.monitor]), int(row["epoch"]))
    report = getattr(evaluator, "report", None)
    if callable(report):
        write_text_atomic(run_dir / "eval_report.txt", report() + "\n")
    return improved


def _save(trainer: _Trainer, model: nn.Module, epoch: int, rng: dict[str, Any], rng_per_rank: list[Any],
          history: list[dict[str, float]], cfg: TrainConfig, extra_state: Mapping[str, Any] | None, run_dir: Path,
          improved: bool, logger: RunLogger) -> None:
    """Write last.pt (and best.pt when the monitored metric improved) as one TrainingState."""
    if not (cfg.save_last or (cfg.save_best and improved)):
        return
    stop = trainer.stopping
    state = TrainingState(
        model=model.state_dict(), optimizer=trainer.optimizer.state_dict(), scheduler=trainer.scheduler.state_dict(),
        epoch=epoch + 1, global_step=trainer.scheduler.last_iter, scaler=trainer.scaler.state_dict(),
        ema=trainer.ema.state_dict() if trainer.ema is not None else None, rng=rng, rng_per_rank=rng_per_rank,
        best_metric=stop.best, best_epoch=stop.best_epoch, bad_evals=stop.bad_evals, monitor=cfg.monitor,
        budget=trainer.budget.state_dict(), history=history, train_config=to_dict(cfg),
        extra=dict(extra_state or {}),
    ).to_dict()
    if cfg.save_last:
        save_checkpoint(run_dir / "checkpoints" / "last.pt", state)
    if cfg.save_best and improved:
        save_checkpoint(run_dir / "checkpoints" / "best.pt", state)
        logger.print(f"best {cfg.monitor} {stop.best:.4f} at epoch {epoch + 1}")


def _table_metrics(val_loader: Any, evaluator: Any, monitor: str) -> list[str]:
    """Validation columns of the console table: val_loss, the evaluator's headline metrics, the monitor."""
    if val_loader is None:
        return []
    names = ["val_loss"]
    if evaluator is not None:
        names += list(getattr(evaluator, "table_metrics", ("AP", "AP50")))
    return names + ([monitor] if monitor not in names else [])


def _broadcast_flag(flag: bool) -> bool:
    """``flag`` as rank 0 sees it (every rank leaves an epoch at the same step); the flag itself otherwise."""
    return bool(broadcast_object(flag)) if get_world_size() > 1 else flag


def _gather_objects(obj: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
