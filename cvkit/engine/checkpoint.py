"""Checkpoints: atomic writes and safe loads.

``save_checkpoint(path, state)`` writes ``torch.save(state)`` to a temporary file in the same folder,
flushes it to disk, then ``os.replace`` s it onto ``path``: a reader (or a crash) sees either the old
file or the new one, never half a file. ``load_checkpoint(path)`` reads only with
``torch.load(..., weights_only=True)``: tensors, numbers, strings, lists, tuples and dicts load; any
other pickled object (a class, a function, a ``__reduce__`` payload) is refused with
:class:`CheckpointError` before it can run.

What :func:`cvkit.engine.train.fit` stores (``CHECKPOINT_FORMAT``, version 1)::

    format, version        "cvkit-checkpoint", 1
    epoch                  completed epochs (training resumes at this epoch index)
    global_step            optimizer steps taken
    model                  state_dict of the (unwrapped) model
    optimizer, scheduler   their state_dicts
    scaler                 GradScaler state_dict ({} when AMP is off)
    ema                    {"module": state_dict, "updates": int} or None
    rng                    python / numpy / torch / CUDA RNG states (cvkit.engine.seed.rng_state)
    rng_per_rank           under torchrun: every rank's RNG states (rank r resumes from entry r), else []
    best_metric, best_epoch, bad_evals, monitor   best-checkpoint and early-stopping bookkeeping
    history                the per-epoch rows logged so far (list of dicts of floats)
    train_config           the train: section as a plain dict
    extra                  the caller's extra_state (resolved config, class names, preprocessing, ...)

``best.pt`` holds the same keys as ``last.pt`` of the epoch it was written. Inference weights:
:func:`checkpoint_weights` (the EMA weights when the run kept them, as evaluated, else ``model``).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "checkpoint_weights"]

CHECKPOINT_FORMAT = "cvkit-checkpoint"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or holds something other than plain data."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; refuses anything but plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused to load (not plain tensors and containers): {first}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict at the top level, got {type(state).__name__}")
    return state


def checkpoint_weights(state: dict[str, Any], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """The model state_dict to run inference with: the EMA weights when the run kept them (those are what
    was evaluated and what ``best.pt`` was chosen by) and ``prefer_ema``, else the trained weights."""
    ema = state.get("ema")
    if prefer_ema and isinstance(ema, dict) and "module" in ema:
        return ema["module"]
    if "model" not in state:
        raise CheckpointError("the checkpoint has no 'model' weights")
    return state["model"]
