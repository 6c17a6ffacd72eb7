"""The ``train:`` config section (:class:`TrainConfig`): optimizer, schedule, checkpoints, evaluation, logging.

Every field has a default, so ``train: {}`` is a complete section. ``budget_minutes`` / ``max_images`` make
the run's length a budget (:class:`cvkit.engine.stopping.RunBudget`); ``epochs`` is then a cap. Unknown
keys are rejected with a suggestion by :mod:`cvkit.config`. Learning-rate schedules run per iteration;
anything given in epochs (``warmup_epochs``, ``milestones``) is converted with the number of iterations per
epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cvkit.config import ConfigError

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"]
SCHEDULES = ("cosine", "multistep", "constant")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12  # total epochs (with a budget: the most epochs); resuming with a larger value extends the run
    budget_minutes: float = 0.0  # wall-time budget of the whole run incl. evaluations (0: off); schedule follows it
    max_images: int = 0  # image budget: stop after this many training samples (0: off); repeats a run exactly
    budget_evals: int = 4  # with a budget: evaluate at the first epoch end after each 1/budget_evals of it
    # optimizer
    optimizer: OptimizerName = "sgd"  # sgd | adam | adamw | rmsprop | adagrad | adadelta
    lr: float = 0.01  # base learning rate (the model's param groups may scale it, e.g. backbone_lr_mult)
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd: Nesterov momentum (needs momentum > 0)
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = 1e-8  # adam, adamw, rmsprop, adagrad, adadelta: denominator epsilon
    alpha: float = 0.99  # rmsprop: smoothing constant
    rho: float = 0.9  # adadelta: running-average coefficient
    weight_decay: float = 5e-4  # L2 (adamw: decoupled) weight decay
    no_decay_norm_bias: bool = True  # no weight decay on normalization weights and biases
    # schedule (per iteration)
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"  # after the warmup: cosine | multistep | constant
    warmup_epochs: float = 1.0  # linear warmup length in epochs (fractions allowed; 0: none)
    warmup_factor: float = 0.001  # lr factor at the first iteration of the warmup
    min_lr_ratio: float = 0.0  # cosine: final lr = lr * min_lr_ratio
    milestones: tuple[int, ...] = (8, 11)  # multistep: epochs at which the lr is multiplied by gamma
    gamma: float = 0.1  # multistep: decay factor
    # step
    clip_grad_norm: float = 0.0  # max global gradient norm (0: no clipping)
    amp: bool = True  # mixed precision: float16 autocast + GradScaler on CUDA; on CPU see amp_cpu (false: both off)
    amp_cpu: Literal["auto", "bfloat16", "none"] = "auto"  # CPU: auto (bf16 where native) | bfloat16 | none
    ema: bool = False  # keep an exponential moving average of the weights; evaluate and save it
    ema_decay: float = 0.9998  # EMA decay once warmed up
    ema_warmup_steps: int = 1000  # decay ramps as ema_decay * (1 - exp(-updates / ema_warmup_steps)); 0: none
    # evaluation, best checkpoint, early stopping
    eval_every: int = 1  # evaluate (val loss + evaluator metrics) every N epochs and after the last epoch
    monitor: str = "AP"  # metric for the best checkpoint and early stopping (e.g. AP, AP50, val_loss)
    monitor_mode: Literal["auto", "max", "min"] = "auto"  # auto: min for names containing "loss", else max
    early_stop_patience: int = 0  # stop after this many evaluations without improvement (0: never)
    early_stop_min_delta: float = 0.0  # smallest change of the monitored metric that counts as improvement
    # checkpoints (in <run_dir>/checkpoints)
    save_last: bool = True  # last.pt after every epoch (what resume reads)
    save_best: bool = True  # best.pt whenever the monitored metric improves
    # reproducibility and device
    seed: int = 0  # seeds python, numpy and torch at the start of fit (rank r uses seed + r)
    deterministic: bool = False  # deterministic algorithms (slower; warn-only for ops without one)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    # logging and the run folder
    output_dir: str = "runs"  # run folders are <output_dir>/<name> (the CLI's choice; fit takes the folder itself)
    progress: bool = True  # tqdm progress bars
    console_table: bool = True  # one table row per epoch on the console
    tensorboard: bool = True  # TensorBoard event files in <run_dir>/tensorboard (package not installed: one warning)
    plots: bool = True  # PNG curves (losses, metrics, lr, results.png) after every epoch; detection: eval pictures
    # distributed (torchrun)
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm under torchrun (CUDA only)
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on CPU

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"train.lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_epochs >= 0, f"train.warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (0 < self.warmup_factor <= 1, f"train.warmup_factor must be in (0, 1], got {self.warmup_factor}"),
            (0 <= self.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.clip_grad_norm >= 0, f"train.clip_grad_norm must be >= 0, got {self.clip_grad_norm}"),
            (0 <= self.ema_decay < 1, f"train.ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.ema_warmup_steps >= 0, f"train.ema_warmup_steps must be >= 0, got {self.ema_warmup_steps}"),
            (self.eval_every >= 1, f"train.eval_every must be >= 1, got {self.eval_every}"),
            (self.budget_minutes >= 0, f"train.budget_minutes must be >= 0, got {self.budget_minutes}"),
            (self.max_images >= 0, f"train.max_images must be >= 0, got {self.max_images}"),
            (self.budget_evals >= 1, f"train.budget_evals must be >= 1, got {self.budget_evals}"),
            (self.early_stop_patience >= 0, "train.early_stop_patience must be >= 0"),
            (list(self.milestones) == sorted(self.milestones), f"train.milestones must increase: {self.milestones}"),
            (not self.nesterov or self.momentum > 0, "train.nesterov needs train.momentum > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
