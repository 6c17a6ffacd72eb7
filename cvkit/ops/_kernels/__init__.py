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
    """Call a ``parallel=True`` numba kernel with :func:`allowed_threads` threads, restoring numba's count
    and torch's.

    Under numba's OpenMP threading layer, starting its thread pool (the first parallel call in a process)
    sets the process-wide OpenMP thread count to numba's, and torch reads that count: without the restore
    a run set to one thread trains on two from its first parallel kernel on.
    """
    import numba
    import torch

    torch_threads = torch.get_num_threads()
    prev = numba.get_num_threads()
    numba.set_num_threads(allowed_threads())
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(prev)
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
