"""Evaluation: reports computed from a dataset (and, later, from a model's predictions).

- :mod:`cvkit.evaluation.anchor_coverage`: can the configured anchors see the dataset's objects?
"""

from cvkit.evaluation.anchor_coverage import SIZE_BUCKETS, STATUSES, CoverageReport, anchor_coverage

__all__ = ["SIZE_BUCKETS", "STATUSES", "CoverageReport", "anchor_coverage"]
