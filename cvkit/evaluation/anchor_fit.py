"""Anchors from the data: scale a config's anchor shapes until they cover its training boxes.

The objective is the share of ground-truth boxes that some anchor matches at ``IoU >= pos_thresh`` (the
"matched" status of :func:`cvkit.evaluation.anchor_coverage.anchor_coverage`), plus a small tie-break on the
mean best IoU. The search keeps the anchors' structure (levels, aspect ratios, steps) and changes only their
size, in two steps:

1. one factor ``alpha`` for every level, from a geometric grid (``scales`` of ``style: ssd``, or ``sizes``
   of ``style: sizes``, all times ``alpha``);
2. per level, coordinate moves by a few factors around 1, kept when they raise the objective and the sizes
   stay increasing from level to level, until no move helps (two passes at most).

Nothing here looks at a dataset's name: the same search runs on any boxes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from cvkit.evaluation.anchor_coverage import MATCHED, CoverageReport, anchor_coverage
from cvkit.ops.anchors import AnchorConfig

__all__ = ["AnchorFit", "fit_anchors", "coverage_score"]

ALPHAS = tuple(float(a) for a in np.geomspace(0.35, 2.0, 15))
LEVEL_FACTORS = (0.8, 0.9, 1.12, 1.25)


@dataclasses.dataclass
class AnchorFit:
    """The result of :func:`fit_anchors`: the proposed config, its coverage, and the starting point's."""

    config: AnchorConfig
    before: CoverageReport
    after: CoverageReport
    key: str  # "scales" or "sizes": the key that changed
    value: list[Any]  # its new value


def coverage_score(report: CoverageReport) -> float:
    """Share of boxes matched above the threshold, plus 1e-3 x the mean best IoU (a tie-break)."""
    if report.num_boxes == 0:
        return 0.0
    return float((report.status == MATCHED).mean()) + 1e-3 * float(report.best_iou.mean())


def _with_sizes(cfg: AnchorConfig, per_level: Sequence[float], base: Sequence[Any]) -> AnchorConfig:
    if cfg.style == "ssd":
        scales = [round(float(s) * f, 4) for s, f in zip(base, [*per_level, per_level[-1]])]
        return dataclasses.replace(cfg, scales=tuple(scales))
    sizes = tuple(tuple(round(float(s) * f, 2) for s in level) for level, f in zip(base, per_level))
    return dataclasses.replace(cfg, sizes=sizes)


def _increasing(cfg: AnchorConfig) -> bool:
    values = list(cfg.scales or ()) if cfg.style == "ssd" else [max(level) for level in cfg.sizes or ()]
    return all(b > a for a, b in zip(values, values[1:]))


def fit_anchors(samples: Sequence[tuple[Sequence[int], Any]], cfg: AnchorConfig, max_images: int | None = None,
                batch_size: int = 64) -> AnchorFit:
    """Search anchor sizes that cover ``samples`` (``(size, boxes)`` per image) better (module docstring)."""
    if cfg.style == "ssd":
        if cfg.scales is None:
            raise ValueError("anchors.scales is null: give explicit scales (or min/max ratios resolved) to fit")
        base: list[Any] = list(cfg.scales)
        key = "scales"
    else:
        if cfg.sizes is None:
            raise ValueError("anchors.sizes is required when anchors.style is 'sizes'")
        base = [list(level) for level in cfg.sizes]
        key = "sizes"
    samples = list(samples)
    feature_sizes = cfg.resolved_feature_sizes()
    num_levels = len(feature_sizes)
    cache: dict[tuple[float, ...], tuple[float, CoverageReport]] = {}

    def evaluate(factors: Sequence[float]) -> tuple[float, CoverageReport]:
        token = tuple(round(f, 6) for f in factors)
        if token not in cache:
            candidate = _with_sizes(cfg, factors, base)
            report = anchor_coverage(samples, candidate.build(), feature_sizes, candidate.image_size, candidate.matcher,
                                     batch_size=batch_size, max_images=max_images)
            cache[token] = (coverage_score(report), report)
        return cache[token]

    start = [1.0] * num_levels
    best_score, before = evaluate(start)
    best = start
    for alpha in ALPHAS:
        factors = [alpha] * num_levels
        if not _increasing(_with_sizes(cfg, factors, base)):
            continue
        score, _ = evaluate(factors)
        if score > best_score + 1e-9:
            best_score, best = score, factors
    for _ in range(2):
        improved = False
        for level in range(num_levels):
            for factor in LEVEL_FACTORS:
                factors = list(best)
                factors[level] *= factor
                if not _increasing(_with_sizes(cfg, factors, base)):
                    continue
                score, _ = evaluate(factors)
                if score > best_score + 1e-9:
                    best_score, best, improved = score, factors, True
        if not improved:
            break
    fitted = _with_sizes(cfg, best, base)
    after = evaluate(best)[1]
    value = list(fitted.scales or ()) if key == "scales" else [list(level) for level in fitted.sizes or ()]
    return AnchorFit(fitted, before, after, key, value)
