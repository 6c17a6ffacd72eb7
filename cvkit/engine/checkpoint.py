"""Checkpoint reading and writing live in :mod:`cvkit.checkpoint` (a bottom-floor module that models and tasks
import too); this name stays for code that imported them from the engine."""

from cvkit.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    TrainingState,
    checkpoint_weights,
    load_checkpoint,
    require_training_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "TrainingState",
    "checkpoint_weights",
    "load_checkpoint",
    "require_training_checkpoint",
    "save_checkpoint",
]
