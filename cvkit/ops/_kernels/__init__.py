"""Compute kernels behind :mod:`cvkit.ops`: numba for CPU tensors, batched torch for any device.

Nothing here is public API; the functions in ``cvkit.ops`` choose the kernel.
"""
