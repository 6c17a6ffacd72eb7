"""Checkpoints: atomic writes and safe loads.

``save_checkpoint(path, state)`` writes ``torch.save(state)`` to a temporary file in the same folder,
flushes it to disk, then ``os.replace`` s it onto ``path``: a reader (or a crash) sees either the old
file or the new one, never half a file. ``load_checkpoint(path)`` reads only with
``torch.load(..., weights_only=True)``: tensors, numbers, strings, lists, tuples and dicts load; any
other pickled object (a class, a function, a ``__reduce__`` payload) is refused with
:class:`CheckpointError` before it can run.

What :func:`cvkit.engine.train.fit` stores is a :class:`TrainingState` (``CHECKPOINT_FORMAT``, version 3;
older files still load: version 1 lacks the ``budget`` entry, and versions 1 and 2 lack the models'
normalization buffers, see below)::

    format, version        "cvkit-checkpoint", 3
    epoch                  completed epochs (training resumes at this epoch index)
    global_step            optimizer steps taken
    model                  state_dict of the (unwrapped) model
    optimizer, scheduler   their state_dicts
    scaler                 GradScaler state_dict ({} when AMP is off)
    ema                    {"module": state_dict, "updates": int} or None
    rng                    python / numpy / torch / CUDA RNG states (cvkit.engine.seed.rng_state)
    rng_per_rank           under torchrun: every rank's RNG states (rank r resumes from entry r), else []
    best_metric, best_epoch, bad_evals, monitor   best-checkpoint and early-stopping bookkeeping
    budget                 {"time_used": seconds, "images_seen": int, "finished": bool} of train.budget_minutes
    history                the per-epoch rows logged so far (list of dicts of floats)
    train_config           the train: section as a plain dict
    extra                  the caller's extra_state (resolved config, class names, preprocessing, ...)

``best.pt`` holds the same keys as ``last.pt`` of the epoch it was written. Inference weights:
:func:`checkpoint_weights` (the EMA weights when the run kept them, as evaluated, else ``model``).

Normalization (version 3): a cvkit detector's or classifier's state_dict holds its first module's buffers,
:data:`PIXEL_STAT_KEYS` (float32 ``(3, 1, 1)`` in 0..255 units, see :mod:`cvkit.models.preprocess`). Before
version 3 the data pipeline normalized and the state_dicts lack them; :func:`load_checkpoint` fills them in
``model`` and ``ema["module"]`` of such a file from its stored preprocessing (``extra["preprocess"]`` mean
and std, else ``extra["config"]["transforms"]``, in 0..1 units: ``pixel_mean = 255 * mean``), which is what
the pipeline normalized with when it was trained.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "TrainingState",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_weights",
    "read_weights_file",
    "require_training_checkpoint",
    "PIXEL_STAT_KEYS",
]

CHECKPOINT_FORMAT = "cvkit-checkpoint"
CHECKPOINT_VERSION = 3
#: the state_dict keys of a model's normalization buffers (its ``normalizer``), from version 3 on
PIXEL_STAT_KEYS = ("normalizer.pixel_mean", "normalizer.pixel_std")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or holds something other than plain data: one line naming the file.

    ``kind``: ``missing_file`` (no such file), ``unsafe_checkpoint`` (pickled Python objects that a
    ``weights_only`` load refuses), ``unreadable_checkpoint`` (not a torch file: truncated, corrupted or
    something else), ``not_cvkit_checkpoint`` (a torch file without what cvkit needs). ``hint``: how to fix
    it, or ``None``.
    """

    def __init__(self, message: str, kind: str = "unreadable_checkpoint", hint: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.hint = hint

    def __reduce__(self):  # picklable with its kind and hint
        return (CheckpointError, (str(self), self.kind, self.hint))


_UNSAFE_HINT = (
    "re-save it from plain data (tensors, dicts, lists, numbers, strings), e.g. "
    "torch.save({'model': model.state_dict()}, path); cvkit never loads with weights_only=False"
)


def _missing(path: Path) -> CheckpointError:
    """The error for a checkpoint path that is not a file, with the likely file when there is one."""
    if path.is_dir():
        found = sorted(str(p) for p in (*path.glob("*.pt"), *path.glob("checkpoints/*.pt")))
        hint = f"give a file, e.g. {found[0]}" if found else "give the checkpoint file (last.pt / best.pt)"
        return CheckpointError(f"checkpoint {path} is a folder, not a file", "missing_file", hint)
    nearby = path.parent / "checkpoints" / path.name  # runs/NAME/last.pt for runs/NAME/checkpoints/last.pt
    guess = f"did you mean {nearby}?" if nearby.is_file() else None
    return CheckpointError(f"checkpoint {path} does not exist", "missing_file", guess)


def _refused(path: Path, exc: Exception) -> CheckpointError:
    """torch's several-sentence ``weights_only`` refusal as one line naming what the file holds."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        what = f"it holds a pickled Python object ({found.group(1)}), not only tensors and plain containers"
    else:  # e.g. "Unsupported operand 205": a pickle operation a weights_only load never runs (or no pickle at all)
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        why = detail.group(1).strip() if detail else "refused"
        what = f"its pickle asks for more than tensors and plain containers ({why})"
    return CheckpointError(f"{path}: refused to load: {what} (loading it could run code)", "unsafe_checkpoint",
                           _UNSAFE_HINT)


def _unreadable(path: Path, exc: BaseException) -> CheckpointError:
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", " ".join(str(exc).split()))
    first = text.split(". ")[0].rstrip(".") or "the file ends early"  # torch's first sentence says what failed
    return CheckpointError(
        f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})",
        "unreadable_checkpoint",
        "the file is truncated or not a torch checkpoint: copy it again, or use the run's other checkpoint "
        "(checkpoints/last.pt or best.pt)",
    )


def require_training_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``state`` is a cvkit training checkpoint (what resume reads)."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a cvkit training checkpoint (format {state.get('format')!r})",
            "not_cvkit_checkpoint",
            "resume from the last.pt or best.pt in a cvkit run's checkpoints/ folder",
        )


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


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; refuses anything but plain data.

    ``mmap=True`` maps the tensors' storage instead of reading it: a cheap check that a file is a readable,
    safe checkpoint (and of its keys) before expensive work. Every failure is a one-line
    :class:`CheckpointError` naming the file (see its ``kind``).
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    mmap = mmap and zipfile.is_zipfile(path)  # only the zip format maps; others are read (and fail) normally
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower() or "weightsunpickler" in str(exc).lower():
            raise _refused(path, exc) from None
        raise _unreadable(path, exc) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, TypeError) as exc:
        # garbage, truncated or non-torch files fail deep inside torch.load with any of these
        raise _unreadable(path, exc) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict at the top level, got {type(state).__name__}",
                              "not_cvkit_checkpoint")
    if state.get("format") == CHECKPOINT_FORMAT and int(state.get("version", 1)) < 3:
        _fill_pixel_stats(state)
    return state


def _stored_pixel_stats(extra: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """float32 ``(C, 1, 1)`` ``255 * mean`` and ``255 * std`` of a checkpoint's stored preprocessing, or None."""
    if not isinstance(extra, dict):
        return None
    pre = extra.get("preprocess")
    if not (isinstance(pre, dict) and "mean" in pre and "std" in pre):
        config = extra.get("config")
        pre = config.get("transforms") if isinstance(config, dict) else None
        if not (isinstance(pre, dict) and "mean" in pre and "std" in pre):
            return None
    stats = [(255.0 * torch.tensor([float(v) for v in pre[k]], dtype=torch.float64)).view(-1, 1, 1).float()
             for k in ("mean", "std")]
    return stats[0], stats[1]


def _fill_pixel_stats(state: dict[str, Any]) -> None:
    """Add :data:`PIXEL_STAT_KEYS` to the weights of a checkpoint written before version 3 (module docstring).

    Only state_dicts that lack both keys are filled, and only when the checkpoint stores its preprocessing
    (cvkit's detection and classification runs always do; a model without a normalizer has none)."""
    stats = _stored_pixel_stats(state.get("extra"))
    if stats is None:
        return
    ema = state.get("ema")
    for weights in (state.get("model"), ema.get("module") if isinstance(ema, dict) else None):
        if isinstance(weights, dict) and weights and not any(k in weights for k in PIXEL_STAT_KEYS):
            weights.update({key: value.clone() for key, value in zip(PIXEL_STAT_KEYS, stats)})


def checkpoint_weights(state: dict[str, Any], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """The model state_dict to run inference with: the EMA weights when the run kept them (those are what
    was evaluated and what ``best.pt`` was chosen by) and ``prefer_ema``, else the trained weights."""
    ema = state.get("ema")
    if prefer_ema and isinstance(ema, dict) and "module" in ema:
        return ema["module"]
    if "model" not in state:
        raise CheckpointError("the checkpoint has no 'model' weights", "not_cvkit_checkpoint")
    return state["model"]


def read_weights_file(path: str | os.PathLike, setting: str = "pretrained") -> dict[str, torch.Tensor]:
    """The state_dict in a local weights file, for fine-tuning (the one reader models use).

    Accepts a cvkit training checkpoint (its :func:`checkpoint_weights`: the EMA weights when the run kept
    them), a dict wrapping a state_dict under ``model`` or ``state_dict``, or a bare state_dict; DDP's
    ``module.`` prefixes are removed. Read with :func:`load_checkpoint` (plain data only). A missing file
    raises ``FileNotFoundError`` naming ``setting`` (nothing is ever downloaded); anything else that is not
    a state_dict raises :class:`CheckpointError`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{setting}: pretrained weights file not found: {path} (weights are never "
                                "downloaded: give a local torchvision state_dict or a cvkit checkpoint)")
    try:
        state: Any = load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{setting}: cannot read pretrained weights from {exc}", exc.kind, exc.hint) from None
    if state.get("format") == CHECKPOINT_FORMAT:
        state = checkpoint_weights(state)
    else:
        for key in ("model", "state_dict"):  # common wrappers around a state_dict
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{setting}: {path} holds no state_dict (tensors by name, or a checkpoint's 'model')",
                              "not_cvkit_checkpoint")
    return {k.removeprefix("module."): v for k, v in state.items()}


@dataclass
class TrainingState:
    """Everything a training checkpoint holds (see the module docstring for each field).

    ``to_dict()`` is what :func:`save_checkpoint` writes; ``TrainingState.from_dict(state, source)`` checks
    the format and version of what :func:`load_checkpoint` read and fills the fields older versions lack.
    """

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    epoch: int = 0
    global_step: int = 0
    scaler: dict[str, Any] = field(default_factory=dict)
    ema: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    rng_per_rank: list[Any] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = 0
    bad_evals: int = 0
    monitor: str = ""
    budget: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    train_config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint dict: ``format``, ``version`` and every field."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **fields}

    @classmethod
    def from_dict(cls, state: dict[str, Any], source: str | os.PathLike = "checkpoint") -> TrainingState:
        """Read a training checkpoint dict; :class:`CheckpointError` when it is not one (or from a newer cvkit)."""
        require_training_checkpoint(state, source)
        version = int(state.get("version", 1))
        if version > CHECKPOINT_VERSION:
            raise CheckpointError(f"{source}: checkpoint version {version} is newer than this cvkit's "
                                  f"({CHECKPOINT_VERSION})", "not_cvkit_checkpoint", "upgrade cvkit")
        missing = [name for name in ("model", "optimizer", "scheduler") if name not in state]
        if missing:
            raise CheckpointError(f"{source}: training checkpoint without {', '.join(missing)}", "not_cvkit_checkpoint")
        names = {f.name for f in dataclasses.fields(cls)}
        nullable = ("ema", "best_metric")
        values = {k: v for k, v in state.items() if k in names and (v is not None or k in nullable)}
        values["history"] = [dict(row) for row in state.get("history") or []]
        values["extra"] = dict(state.get("extra") or {})
        for name in ("epoch", "global_step", "best_epoch", "bad_evals"):
            values[name] = int(state.get(name, 0))
        return cls(**values)
