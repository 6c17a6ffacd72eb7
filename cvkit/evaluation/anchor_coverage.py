"""Anchor coverage: can the configured anchors see a dataset's objects? Answered before training.

``anchor_coverage(samples, generator, feature_sizes, image_size, matcher)`` runs the anchor generator and
the matcher (:func:`cvkit.ops.match_anchors`) over every image's ground truth and classifies each
ground-truth box:

- **matched**: at least one anchor is matched to it with ``IoU >= pos_thresh``;
- **low-quality only**: its positives come only from the low-quality rule (IoU below ``pos_thresh``,
  above 0) — the detector trains on it, but from a poorly fitting anchor;
- **not matched**: no anchor is matched to it with ``IoU > 0`` (with ``low_quality="ssd"`` this happens
  when a box overlaps no anchor, or when another box took its only best anchor).

It reports these shares per object size (COCO buckets: area < 32^2, < 96^2, larger, measured in the
original image's pixels as COCO does) and per feature level (the level of the box's best anchor), the
distribution of each box's best IoU, and draws them (PNG).

Inputs are plain: per image its size ``(height, width)`` and a float32 ``[M, 4]`` xyxy array of boxes in
that image's pixels. Boxes are scaled to the network input ``image_size`` the way ``ssd_eval`` resizes
images (a stretch, no letterbox) unless ``resize=False`` says they already are in input pixels. Boxes
of zero width or height are counted as degenerate and left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvkit.ops.anchors import AnchorGrid
from cvkit.ops.assign import MatcherConfig, pad_gt_boxes

__all__ = ["SIZE_BUCKETS", "STATUSES", "CoverageReport", "anchor_coverage"]

#: COCO's object-size buckets by box area in original-image pixels.
SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, math.inf),
)
#: Per-box outcome, in this order in every table.
STATUSES: tuple[str, ...] = ("matched", "low_quality_only", "not_matched")
MATCHED, LOW_QUALITY, NOT_MATCHED = 0, 1, 2
_HIST_BINS = 20


@dataclass
class CoverageReport:
    """Per-box results of :func:`anchor_coverage` plus the tables derived from them.

    Arrays have one entry per (non-degenerate) ground-truth box, in dataset order.
    """

    image_size: tuple[int, int]
    num_anchors: int
    level_names: list[str]
    pos_thresh: float
    neg_thresh: float
    low_quality: str
    num_images: int = 0
    num_degenerate: int = 0
    best_iou: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # best IoU over all anchors
    best_level: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # level of that anchor
    bucket: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # index into SIZE_BUCKETS
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # index into STATUSES
    num_positives: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # anchors matched to it

    @property
    def num_boxes(self) -> int:
        return int(self.status.shape[0])

    def _row(self, select: np.ndarray) -> dict[str, Any]:
        count = int(select.sum())
        shares = [float((self.status[select] == s).sum() / count) if count else 0.0 for s in range(len(STATUSES))]
        ious = self.best_iou[select]
        return {
            "boxes": count,
            **{name: round(share, 4) for name, share in zip(STATUSES, shares)},
            "median_best_iou": round(float(np.median(ious)), 4) if count else None,
            "mean_positives": round(float(self.num_positives[select].mean()), 2) if count else None,
        }

    def by_size(self) -> dict[str, dict[str, Any]]:
        """Per COCO size bucket (and "all"): box count, the share of each status, median best IoU."""
        table = {name: self._row(self.bucket == i) for i, (name, _, _) in enumerate(SIZE_BUCKETS)}
        table["all"] = self._row(np.ones(self.num_boxes, dtype=bool))
        return table

    def by_level(self) -> dict[str, dict[str, Any]]:
        """Per feature level of each box's best anchor: box count and the share of each status."""
        return {name: self._row(self.best_level == i) for i, name in enumerate(self.level_names)}

    def iou_histogram(self) -> tuple[list[int], list[float]]:
        """Counts of best IoU in 20 equal bins over [0, 1], and the bin edges."""
        counts, edges = np.histogram(self.best_iou, bins=_HIST_BINS, range=(0.0, 1.0))
        return counts.tolist(), [round(float(e), 4) for e in edges]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (no per-box arrays)."""
        quantiles = (
            {f"p{q}": round(float(np.percentile(self.best_iou, q)), 4) for q in (10, 25, 50, 75, 90)}
            if self.num_boxes
            else {}
        )
        counts, edges = self.iou_histogram()
        return {
            "image_size": list(self.image_size),
            "num_anchors": self.num_anchors,
            "matcher": {"pos_thresh": self.pos_thresh, "neg_thresh": self.neg_thresh, "low_quality": self.low_quality},
            "num_images": self.num_images,
            "num_boxes": self.num_boxes,
            "num_degenerate": self.num_degenerate,
            "by_size": self.by_size(),
            "by_level": self.by_level(),
            "best_iou_quantiles": quantiles,
            "best_iou_histogram": {"counts": counts, "edges": edges},
        }

    def warnings(self) -> list[str]:
        """Plain-language findings: buckets and levels where many objects are not matched above threshold."""
        out = []
        for name, row in self.by_size().items():
            if name == "all" or row["boxes"] == 0:
                continue
            missed = row["low_quality_only"] + row["not_matched"]
            if missed >= 0.2:
                hint = {"small": "smaller anchors or a finer feature level", "large": "larger anchors or scales"}.get(
                    name, "anchor sizes between the current levels"
                )
                out.append(
                    f"{missed:.0%} of {name} objects get no anchor with IoU >= {self.pos_thresh:g}: consider {hint}"
                )
        for name, row in self.by_level().items():
            if row["boxes"] and row["not_matched"] >= 0.05:
                out.append(
                    f"{row['not_matched']:.0%} of the objects best seen by {name} have no positive anchor at all"
                )
        return out

    def format(self) -> str:
        """The report as a text table."""
        lines = [
            f"anchor coverage: {self.num_images} images, {self.num_boxes} boxes"
            + (f" ({self.num_degenerate} degenerate boxes left out)" if self.num_degenerate else ""),
            f"anchors: {self.num_anchors} for a {self.image_size[0]}x{self.image_size[1]} (HxW) input; matcher: "
            f"pos_thresh={self.pos_thresh:g} neg_thresh={self.neg_thresh:g} low_quality={self.low_quality}",
            "",
        ]
        width = max([24] + [len(n) + 4 for n in self.level_names])
        header = f"{'':<{width}}{'boxes':>7}{'matched':>10}{'low-q only':>12}{'not matched':>13}{'median IoU':>12}"

        def fmt(name: str, row: dict[str, Any]) -> str:
            med = "-" if row["median_best_iou"] is None else f"{row['median_best_iou']:.3f}"
            return (
                f"{name:<{width}}{row['boxes']:>7}{row['matched']:>10.1%}{row['low_quality_only']:>12.1%}"
                f"{row['not_matched']:>13.1%}{med:>12}"
            )

        lines.append("by object size (COCO area buckets, original pixels)")
        lines.append(header)
        labels = {"small": "small  (< 32^2)", "medium": "medium (< 96^2)", "large": "large  (>= 96^2)"}
        for name, row in self.by_size().items():
            lines.append(fmt("  " + labels.get(name, name), row))
        lines += ["", "by feature level of the box's best anchor (L<level> <H>x<W> /<stride>)", header]
        for name, row in self.by_level().items():
            lines.append(fmt("  " + name, row))
        if self.num_boxes:
            q = self.to_dict()["best_iou_quantiles"]
            lines += [
                "",
                "best IoU per box: " + "  ".join(f"{k}={v:.3f}" for k, v in q.items()),
            ]
            counts, edges = self.iou_histogram()
            peak = max(counts) or 1
            for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
                lines.append(f"  [{lo:.2f}, {hi:.2f})  {'#' * round(40 * c / peak):<40} {c}")
        found = self.warnings()
        if found:
            lines += [""] + [f"warning: {w}" for w in found]
        return "\n".join(lines)

    def save_plot(self, path: str | Path) -> Path:
        """Draw the size and level tables (stacked shares) and the best-IoU histogram into a PNG."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        colors = ("#2a9d8f", "#e9c46a", "#e76f51")
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
        for ax, (title, table) in zip(axes[:2], (("by object size", self.by_size()), ("by level", self.by_level()))):
            names = list(table)
            bottom = np.zeros(len(names))
            for status, color in zip(STATUSES, colors):
                values = np.array([table[n][status] for n in names])
                ax.bar(names, values, bottom=bottom, color=color, label=status.replace("_", " "))
                bottom += values
            for i, n in enumerate(names):
                ax.text(i, 1.01, str(table[n]["boxes"]), ha="center", va="bottom", fontsize=8)
            ax.set_ylim(0, 1.1)
            ax.set_ylabel("share of boxes")
            ax.set_title(f"{title} (box counts on top)")
            ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        axes[0].legend(loc="lower left", fontsize=8)
        ax = axes[2]
        ax.hist(self.best_iou, bins=_HIST_BINS, range=(0, 1), color="#264653")
        ax.axvline(self.pos_thresh, color="#e76f51", linestyle="--", label=f"pos_thresh {self.pos_thresh:g}")
        if self.neg_thresh != self.pos_thresh:
            ax.axvline(self.neg_thresh, color="#e9c46a", linestyle=":", label=f"neg_thresh {self.neg_thresh:g}")
        ax.set_xlabel("best IoU of each box over all anchors")
        ax.set_ylabel("boxes")
        ax.set_title("best-IoU distribution")
        ax.legend(fontsize=8)
        fig.suptitle(
            f"anchor coverage: {self.num_boxes} boxes, {self.num_images} images, {self.num_anchors} anchors "
            f"({self.image_size[0]}x{self.image_size[1]})"
        )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _as_boxes(boxes: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(boxes, dtype=np.float32) if not isinstance(boxes, torch.Tensor) else boxes)
    t = t.to(torch.float32).reshape(-1, 4)
    return t


def anchor_coverage(
    samples: Iterable[tuple[Sequence[int], Any]],
    generator: AnchorGrid,
    feature_sizes: Sequence[Sequence[int]],
    image_size: Sequence[int],
    matcher: MatcherConfig | None = None,
    *,
    resize: bool = True,
    batch_size: int = 64,
    max_images: int | None = None,
) -> CoverageReport:
    """Match every image's ground truth to the anchors and classify each box (see the module docstring).

    Args:
        samples: per image ``(size, boxes)``: ``size = (height, width)`` of the image the boxes refer to,
            ``boxes`` a float32 ``[M, 4]`` xyxy array or tensor (M may be 0).
        generator: the anchor generator; ``feature_sizes`` one ``(H, W)`` per level;
            ``image_size`` the network input ``(height, width)``.
        matcher: thresholds and low-quality rule (default: SSD's 0.5 / 0.5 / "ssd").
        resize: scale boxes from each image's size to ``image_size`` (a stretch, as ``ssd_eval``).
        batch_size: images matched per ``match_anchors`` call. max_images: stop after this many images.

    Returns:
        :class:`CoverageReport`.
    """
    matcher = matcher or MatcherConfig()
    neg_thresh = matcher.pos_thresh if matcher.neg_thresh is None else matcher.neg_thresh
    in_h, in_w = int(image_size[0]), int(image_size[1])
    feature_sizes = [tuple(int(v) for v in f) for f in feature_sizes]
    anchors = generator(feature_sizes, (in_h, in_w))
    level_of = generator.level_index(feature_sizes).numpy()
    strides = generator.level_strides(feature_sizes, (in_h, in_w))
    level_names = [
        f"L{i} {fh}x{fw} /{sy:.4g}" if sy == sx else f"L{i} {fh}x{fw} /{sy:.4g}x{sx:.4g}"
        for i, ((fh, fw), (sy, sx)) in enumerate(zip(feature_sizes, strides))
    ]
    report = CoverageReport(
        image_size=(in_h, in_w),
        num_anchors=int(anchors.shape[0]),
        level_names=level_names,
        pos_thresh=float(matcher.pos_thresh),
        neg_thresh=float(neg_thresh),
        low_quality=matcher.low_quality,
    )
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("best_iou", "best_level", "bucket", "status", "num_pos")}

    def flush(batch_boxes: list[torch.Tensor], batch_areas: list[np.ndarray]) -> None:
        gt, valid = pad_gt_boxes(batch_boxes)
        result = matcher.match(anchors, gt, valid)
        num_gt = gt.shape[1]
        idx = result.matched_idxs.numpy()
        iou = result.matched_iou.numpy()
        positive = idx >= 0
        rows = np.nonzero(positive)[0]
        flat = rows * num_gt + idx[positive]
        above = iou[positive] >= np.float32(matcher.pos_thresh)
        some = iou[positive] > 0
        size = len(batch_boxes) * num_gt
        n_above = np.bincount(flat[above], minlength=size)
        n_low = np.bincount(flat[~above & some], minlength=size)
        n_pos = np.bincount(flat, minlength=size)
        status = np.where(n_above > 0, MATCHED, np.where(n_low > 0, LOW_QUALITY, NOT_MATCHED))
        keep = valid.numpy().reshape(-1)
        parts["best_iou"].append(result.gt_best_iou.numpy().reshape(-1)[keep].astype(np.float32))
        best_anchor = result.gt_best_anchor.numpy().reshape(-1)[keep]
        parts["best_level"].append(level_of[best_anchor] if best_anchor.size else np.zeros(0, np.int64))
        parts["status"].append(status[keep])
        parts["num_pos"].append(n_pos[keep])
        areas = np.concatenate(batch_areas) if batch_areas else np.zeros(0)
        parts["bucket"].append(np.searchsorted([hi for _, _, hi in SIZE_BUCKETS], areas, side="right"))

    batch_boxes: list[torch.Tensor] = []
    batch_areas: list[np.ndarray] = []
    for size, boxes in samples:
        if max_images is not None and report.num_images >= max_images:
            break
        report.num_images += 1
        height, width = int(size[0]), int(size[1])
        boxes = _as_boxes(boxes)
        wh = boxes[:, 2:] - boxes[:, :2]
        ok = (wh > 0).all(dim=1) & torch.isfinite(boxes).all(dim=1)
        report.num_degenerate += int((~ok).sum())
        boxes = boxes[ok]
        batch_areas.append((wh[ok, 0] * wh[ok, 1]).double().numpy())
        if resize:
            scale = torch.tensor([in_w / width, in_h / height, in_w / width, in_h / height])
            boxes = boxes * scale
        batch_boxes.append(boxes)
        if len(batch_boxes) == batch_size:
            flush(batch_boxes, batch_areas)
            batch_boxes, batch_areas = [], []
    if batch_boxes:
        flush(batch_boxes, batch_areas)
    if parts["status"]:
        report.best_iou = np.concatenate(parts["best_iou"])
        report.best_level = np.concatenate(parts["best_level"]).astype(np.int64)
        report.bucket = np.concatenate(parts["bucket"]).astype(np.int64)
        report.status = np.concatenate(parts["status"]).astype(np.int64)
        report.num_positives = np.concatenate(parts["num_pos"]).astype(np.int64)
    return report
