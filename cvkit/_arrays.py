"""Small array helpers shared across cvkit's layers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_numpy"]


def as_numpy(values: Any, dtype: Any) -> np.ndarray:
    """``values`` (a tensor on any device, an array or a nested sequence) as a numpy array of ``dtype``
    (no copy when it already is one)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)
