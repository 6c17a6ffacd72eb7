"""cvkit: a PyTorch detection toolkit.

``import cvkit`` gives the box / IoU / NMS utilities as ``cvkit.ops``.
"""

__version__ = "0.1.0"

from cvkit import ops  # noqa: E402

__all__ = ["ops", "__version__"]
