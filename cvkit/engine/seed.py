"""Seeds, the determinism switch, and the RNG states a checkpoint carries.

``seed_everything(seed)`` seeds python's ``random``, numpy's global generator and torch (CPU and every
CUDA device). ``rng_state()`` / ``set_rng_state(state)`` capture and restore all of them in a form that
``torch.load(weights_only=True)`` accepts (tensors, ints, floats, strings, lists and dicts only), so
that ``set_rng_state(rng_state())`` followed by the same work draws the same numbers.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "set_deterministic", "rng_state", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy.random`` and torch (CPU and all CUDA devices) with ``seed``."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_deterministic(enabled: bool) -> bool:
    """Switch deterministic algorithms on or off; returns the previous setting.

    On: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (ops without a deterministic version
    warn instead of failing), cuDNN deterministic and not benchmarking, and ``CUBLAS_WORKSPACE_CONFIG``
    set when it is not already (needed by deterministic cuBLAS).
    """
    previous = torch.are_deterministic_algorithms_enabled()
    if enabled == previous:  # the switch itself is slow the first time (it imports torch's compiler)
        return previous
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    return previous


def rng_state() -> dict[str, Any]:
    """The current python, numpy, torch and CUDA RNG states (weights_only-loadable)."""
    version, words, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    assert isinstance(np_state, dict)
    return {
        "python": {"version": int(version), "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states returned by :func:`rng_state` (CUDA states only when CUDA is available)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(w) for w in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
