"""Small builders for dataset files in tmp folders (tests only)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB uint8 test image (compresses well, decodes deterministically)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def write_image(path: Path, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Write an RGB image (format from the suffix); returns the pixels written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = image(height, width, seed)
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())
    return pixels


def write_coco(
    root: Path, images: list[dict], annotations: list[dict], categories: list[dict], name="ann.json"
) -> Path:
    """Write a COCO JSON under ``root`` and a real image file for every image entry that has a size."""
    for entry in images:
        if isinstance(entry, dict) and "file_name" in entry and entry.get("_write", True):
            h, w = entry.get("height", 40), entry.get("width", 60)
            if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
                target = root / "images" / entry["file_name"]
                if ".." not in entry["file_name"] and not entry["file_name"].startswith("/"):
                    write_image(target, h, w, seed=entry.get("id", 0) if isinstance(entry.get("id"), int) else 0)
    clean = [{k: v for k, v in e.items() if k != "_write"} if isinstance(e, dict) else e for e in images]
    path = root / name
    path.write_text(json.dumps({"images": clean, "annotations": annotations, "categories": categories}))
    return path
