"""Detection heads."""

from cvkit.models.heads.shared import SharedHead
from cvkit.models.heads.ssd import SSDHead

__all__ = ["SSDHead", "SharedHead"]
