"""The built-in dataset: coloured shapes on textured backgrounds, generated on the spot (no download).

``generate_detection(cfg, cache_dir)`` writes a COCO-format detection dataset (read back with
:class:`cvkit.data.coco.CocoDetection`) and ``generate_classification(cfg, cache_dir)`` an ImageFolder
classification dataset (one shape per image), both with ``train`` and ``val`` splits::

    <cache_dir>/shapes-det-<digest>/annotations/instances_{train,val}.json
    <cache_dir>/shapes-det-<digest>/images/{train,val}/000001.jpg ...
    <cache_dir>/shapes-cls-<digest>/{train,val}/<class>/000001.jpg ...

Properties: deterministic from ``cfg.seed`` (image ``i`` of a split uses ``default_rng([seed, split, i])``);
classes from :data:`SHAPES` (category ids ``1..K`` in the order of ``cfg.classes``); object sizes
log-uniform in ``[min_object_size, max_object_size]`` px (diameter of the shape's circumscribed circle,
so the box side is 0.7x to 1x of it); random colours and rotations; up to ``max_objects`` objects per
image with limited overlap (intersection <= ``max_overlap`` of the smaller box); about 5% negatives;
backgrounds of smooth colour fields, noise and clutter lines. Boxes are the tight boxes of the drawn
polygons (circles: centre +- radius) and always lie inside the image.

Idempotent: ``<digest>`` hashes every parameter and :data:`GENERATOR_VERSION`; a finished folder holds a
``COMPLETE`` marker and is reused as is. Generation writes into a temporary folder renamed at the end, so
concurrent runs (test workers) never see half-written data. Default size (512 + 128 images of 300 px)
takes about two seconds on one core.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "SHAPES",
    "GENERATOR_VERSION",
    "SyntheticConfig",
    "default_cache_dir",
    "resolve_cache_dir",
    "generate_detection",
    "generate_classification",
    "render_detection_image",
    "render_classification_image",
]

SHAPES = ("circle", "square", "triangle", "star", "cross")
GENERATOR_VERSION = 1
_SPLITS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0  # generator seed: the same seed gives byte-identical images
    num_train: int = 512  # images in the train split (classification: in total over classes)
    num_val: int = 128  # images in the val split
    image_size: int = 300  # detection images are image_size x image_size pixels
    min_object_size: int = 8  # smallest object (pixels, diameter of the shape's circumscribed circle)
    max_object_size: int = 150  # largest object (pixels)
    max_objects: int = 6  # objects per detection image: uniform in 1..max_objects (about 5% are empty)
    max_overlap: float = 0.3  # max intersection between two objects, as a fraction of the smaller box
    classes: tuple[str, ...] = SHAPES  # shape classes, a subset of cvkit.data.synthetic.SHAPES
    cls_image_size: int = 64  # classification images are cls_image_size x cls_image_size pixels
    jpeg_quality: int = 92  # JPEG quality of the written images


def default_cache_dir() -> Path:
    """``$CVKIT_CACHE_DIR``, else ``<repo>/.cache`` in a source checkout, else ``~/.cache/cvkit``."""
    env = os.environ.get("CVKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "setup.cfg").is_file() and (repo / "cvkit").is_dir():
        return repo / ".cache"
    return Path.home() / ".cache" / "cvkit"


def resolve_cache_dir(configured: str | os.PathLike | None) -> Path:
    """The configured cache folder (``~`` expanded) or :func:`default_cache_dir` when empty."""
    return Path(configured).expanduser() if configured else default_cache_dir()


# ------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices [K, 2] of ``shape`` inside the unit circle (circle: an empty array)."""
    if shape == "circle":
        return np.zeros((0, 2))
    if shape == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if shape == "cross":
        a, b = 0.3, 0.95  # half arm width, arm length (inside the unit circle: a^2 + b^2 <= 1)
        pts = [
            (-a, -b),
            (a, -b),
            (a, -a),
            (b, -a),
            (b, a),
            (a, a),
            (a, b),
            (-a, b),
            (-a, a),
            (-b, a),
            (-b, -a),
            (-a, -a),
        ]
        return np.asarray(pts, dtype=np.float64)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _shape_vertices(shape: str, cx: float, cy: float, diameter: float, angle: float) -> np.ndarray:
    pts = _unit_polygon(shape) * (diameter / 2)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T + np.array([cx, cy])


def _draw_shape(
    image: np.ndarray, shape: str, cx: float, cy: float, diameter: float, angle: float, color
) -> list[float]:
    """Draw a filled, antialiased shape; returns its tight xyxy box."""
    shift = 4  # sub-pixel precision: coordinates in 1/16 px
    color = tuple(int(c) for c in color)
    if shape == "circle":
        r = diameter / 2
        cv2.circle(image, (round(cx * 16), round(cy * 16)), round(r * 16), color, -1, cv2.LINE_AA, shift)
        return [cx - r, cy - r, cx + r, cy + r]
    pts = _shape_vertices(shape, cx, cy, diameter, angle)
    cv2.fillPoly(image, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, shift)
    return [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random colour field plus noise and a few clutter lines, RGB uint8."""
    cells = int(rng.integers(2, 7))
    base = rng.uniform(40, 215, size=3)
    grid = np.clip(base + rng.normal(0, 35, size=(cells, cells, 3)), 0, 255).astype(np.uint8)
    image = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
    amplitude = int(rng.integers(4, 24))
    noise = rng.integers(0, 2 * amplitude + 1, size=(height, width), dtype=np.uint8)
    noisy = cv2.add(image, cv2.merge([noise, noise, noise]))  # saturating uint8 arithmetic
    image = cv2.subtract(noisy, (amplitude, amplitude, amplitude, 0))  # type: ignore[call-overload]
    for _ in range(int(rng.integers(0, 6))):
        p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
        p2 = tuple(int(v) for v in rng.integers(0, [width, height]))
        color = tuple(int(c) for c in np.clip(base + rng.normal(0, 50, 3), 0, 255))
        cv2.line(image, p1, p2, color, int(rng.integers(1, 3)), cv2.LINE_AA)
    return image


def _object_color(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A saturated colour at least a little away from the background's mean colour."""
    for _ in range(20):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(120, 256), rng.integers(90, 256)]]], np.uint8)
        color = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)
        if np.abs(color - background_mean).sum() > 120:
            return color
    return 255 - background_mean  # far from the background by construction


def _overlap(box: list[float], other: list[float]) -> float:
    iw = min(box[2], other[2]) - max(box[0], other[0])
    ih = min(box[3], other[3]) - max(box[1], other[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
    return iw * ih / smaller


def render_detection_image(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, list, list]:
    """One detection image: ``(image RGB uint8 (S, S, 3), boxes [[x1, y1, x2, y2], ...], class indices)``."""
    size = cfg.image_size
    image = _background(rng, size, size)
    mean = np.asarray(cv2.mean(image)[:3])
    boxes: list[list[float]] = []
    labels: list[int] = []
    num_objects = 0 if rng.random() < 0.05 else int(rng.integers(1, cfg.max_objects + 1))
    lo, hi = math.log(cfg.min_object_size), math.log(min(cfg.max_object_size, size))
    for _ in range(num_objects):
        cls = int(rng.integers(0, len(cfg.classes)))
        diameter = math.exp(rng.uniform(lo, hi))
        angle = rng.uniform(0, 2 * math.pi)
        for _attempt in range(20):
            r = diameter / 2
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
            pts = _shape_vertices(cfg.classes[cls], cx, cy, diameter, angle)
            box = (
                [cx - r, cy - r, cx + r, cy + r]
                if len(pts) == 0
                else [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
            )
            if all(_overlap(box, other) <= cfg.max_overlap for other in boxes):
                break
        else:
            continue  # no free place for this object
        box = _draw_shape(image, cfg.classes[cls], cx, cy, diameter, angle, _object_color(rng, mean))
        boxes.append([min(max(v, 0.0), float(size)) for v in box])
        labels.append(cls)
    return image, boxes, labels


def render_classification_image(rng: np.random.Generator, cfg: SyntheticConfig, cls: int) -> np.ndarray:
    """One classification image of class index ``cls``: a single shape, 40% to 90% of the image."""
    size = cfg.cls_image_size
    image = _background(rng, size, size)
    diameter = rng.uniform(0.4, 0.9) * size
    r = diameter / 2
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    color = _object_color(rng, np.asarray(cv2.mean(image)[:3]))
    _draw_shape(image, cfg.classes[cls], cx, cy, diameter, rng.uniform(0, 2 * math.pi), color)
    return image


# ------------------------------------------------------------------------------------------------
# Writing (idempotent, atomic)
# ------------------------------------------------------------------------------------------------


def _digest(kind: str, cfg: SyntheticConfig) -> str:
    params = {"kind": kind, "version": GENERATOR_VERSION, **asdict(cfg)}
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def _check(cfg: SyntheticConfig) -> None:
    unknown = [c for c in cfg.classes if c not in SHAPES]
    if unknown or not cfg.classes:
        raise ValueError(f"synthetic classes must be a non-empty subset of {SHAPES}, got {cfg.classes}")
    if not 1 <= cfg.min_object_size <= cfg.max_object_size:
        raise ValueError("need 1 <= min_object_size <= max_object_size")
    if cfg.num_train < 0 or cfg.num_val < 0 or cfg.image_size < 16 or cfg.cls_image_size < 16:
        raise ValueError("image counts must be >= 0 and image sizes >= 16")


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(data.tobytes())


def _generate(kind: str, cfg: SyntheticConfig, cache_dir: Path, write: Callable[[Path], None]) -> Path:
    _check(cfg)
    digest = _digest(kind, cfg)
    final = Path(cache_dir) / f"shapes-{kind}-{digest}"
    if (final / "COMPLETE").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        params = {"kind": kind, "version": GENERATOR_VERSION, **asdict(cfg)}
        (tmp / "COMPLETE").write_text(json.dumps(params, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first (or a stale incomplete folder is there)
            if (final / "COMPLETE").is_file():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def generate_detection(cfg: SyntheticConfig, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Generate (or reuse) the COCO-format shapes detection dataset; returns its root folder."""
    from tqdm import tqdm

    def write(root: Path) -> None:
        categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(cfg.classes)]
        (root / "annotations").mkdir()
        for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
            image_dir = root / "images" / split
            image_dir.mkdir(parents=True)
            images: list[dict] = []
            annotations: list[dict] = []
            for index in tqdm(range(count), desc=f"synthetic {split}", unit="img", disable=not progress, leave=False):
                rng = np.random.default_rng([cfg.seed, _SPLITS[split], index])
                image, boxes, labels = render_detection_image(rng, cfg)
                image_id = index + 1
                file_name = f"{image_id:06d}.jpg"
                _write_jpeg(image_dir / file_name, image, cfg.jpeg_quality)
                images.append(
                    {"id": image_id, "file_name": file_name, "height": cfg.image_size, "width": cfg.image_size}
                )
                for (x1, y1, x2, y2), label in zip(boxes, labels):
                    w, h = x2 - x1, y2 - y1
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": label + 1,
                            "bbox": [round(x1, 3), round(y1, 3), round(w, 3), round(h, 3)],
                            "area": round(w * h, 3),
                            "iscrowd": 0,
                        }
                    )
            doc = {
                "info": {"description": "cvkit synthetic shapes", "seed": cfg.seed},
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
            (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))

    return _generate("det", cfg, resolve_cache_dir(cache_dir), write)


def generate_classification(
    cfg: SyntheticConfig, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """Generate (or reuse) the ImageFolder shapes classification dataset; returns its root folder."""
    from tqdm import tqdm

    def write(root: Path) -> None:
        for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
            for name in cfg.classes:
                (root / split / name).mkdir(parents=True)
            for index in tqdm(
                range(count), desc=f"synthetic-cls {split}", unit="img", disable=not progress, leave=False
            ):
                rng = np.random.default_rng([cfg.seed, _SPLITS[split], index])
                cls = index % len(cfg.classes)  # balanced classes
                image = render_classification_image(rng, cfg, cls)
                _write_jpeg(root / split / cfg.classes[cls] / f"{index + 1:06d}.jpg", image, cfg.jpeg_quality)

    return _generate("cls", cfg, resolve_cache_dir(cache_dir), write)
