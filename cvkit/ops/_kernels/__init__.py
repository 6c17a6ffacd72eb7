"""Compute kernels behind :mod:`cvkit.ops`: numba for CPU tensors, batched torch for any device.

Nothing here is public API; the functions in ``cvkit.ops`` choose the kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def allowed_threads() -> int:
    """Threads the numba kernels may use: torch's setting (one knob for both), capped by numba's pool."""
    import numba
    import torch

    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def run_threaded(kernel: Callable[..., Any], *args: Any) -> Any:
    """Call a ``parallel=True`` numba kernel with :func:`allowed_threads` threads, restoring numba's count."""
    import numba

    prev = numba.get_num_threads()
    numba.set_num_threads(allowed_threads())
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(prev)
