"""Training engine: ``fit`` / ``train_one_epoch`` / ``evaluate``, optimizers and schedules, checkpoints,
EMA, seeding, run-folder logging and torchrun support. See :mod:`cvkit.engine.train` for the flow."""

from cvkit.engine.checkpoint import CheckpointError, checkpoint_weights, load_checkpoint, save_checkpoint
from cvkit.engine.config import TrainConfig
from cvkit.engine.ema import ModelEMA
from cvkit.engine.evaluate import evaluate
from cvkit.engine.optim import build_optimizer, build_schedule, default_param_groups, model_param_groups
from cvkit.engine.seed import rng_state, seed_everything, set_deterministic, set_rng_state
from cvkit.engine.train import fit, train_one_epoch

__all__ = [
    "TrainConfig",
    "fit",
    "train_one_epoch",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
    "checkpoint_weights",
    "ModelEMA",
    "build_optimizer",
    "build_schedule",
    "default_param_groups",
    "model_param_groups",
    "seed_everything",
    "set_deterministic",
    "rng_state",
    "set_rng_state",
]
