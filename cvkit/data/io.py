"""File access for datasets: paths that cannot leave the dataset root, image decoding, image sizes.

- :func:`safe_join` turns a file name read from a dataset file into a path inside the dataset root, or
  raises ``DataError(kind="path_escape")`` for absolute names, ``..`` components, NUL bytes and symlinks
  that resolve outside the root. Nothing is opened before that check.
- :func:`read_image` decodes with OpenCV into RGB uint8 ``(H, W, 3)``: EXIF orientation applied,
  greyscale replicated to three channels, RGBA/BGRA with the alpha channel dropped, 16-bit images scaled
  to 8 bits (``v >> 8``). JPEG and PNG files cut short (no end marker) raise ``truncated_image`` rather
  than returning a partly grey image.
- :func:`read_image_size` reads ``(height, width)`` from the header (as :func:`read_image` would return
  it, EXIF rotation included) without decoding pixels; it falls back to a full decode when unsure.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from cvkit.data.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "resolve_root", "safe_join", "read_image", "decode_image", "read_image_size"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_DRIVE = re.compile(r"^[A-Za-z]:")
_READ_FLAGS = getattr(cv2, "IMREAD_COLOR_RGB", None)


def resolve_root(root: str | os.PathLike) -> Path:
    """The dataset root as an absolute, symlink-free path; raises ``missing_file`` if it is no folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "dataset root is a file, not a folder" if path.exists() else "dataset root does not exist"
        raise DataError("missing_file", path, what, hint="set data.root to the dataset folder (--set data.root=PATH)")
    return path.resolve()


def _is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def safe_join(root: Path, name: object, source: object = None, where: str | None = None, base: str = "") -> Path:
    """Join ``name`` (as found in a dataset file) to ``root / base``; the result stays inside ``root``.

    ``root`` is a resolved folder and ``base`` a trusted sub-folder (from the config). ``name`` must be a
    relative path without ``..`` components; after resolving symlinks the path must still lie inside
    ``root``. Errors are ``DataError(kind="path_escape")`` reported against ``source`` (the file that
    contained the name). The returned path is resolved; it may not exist.
    """
    src = source if source is not None else root
    if not isinstance(name, str) or not name.strip():
        raise DataError("malformed", src, f"file name must be a non-empty string, got {name!r}", where)
    if "\x00" in name:
        raise DataError("path_escape", src, f"file name {name!r} contains a NUL byte", where)
    posix = name.replace("\\", "/")
    rel = PurePosixPath(posix)
    if rel.is_absolute() or _DRIVE.match(posix) or posix.startswith("~"):
        raise DataError("path_escape", src, f"file name {name!r} is absolute; it must be relative to {root}", where)
    if ".." in rel.parts:
        raise DataError("path_escape", src, f"file name {name!r} goes up with '..' out of {root}", where)
    base_parts = PurePosixPath(base.replace("\\", "/")).parts if base not in ("", ".") else ()
    joined = os.path.join(str(root), *base_parts, *rel.parts)
    real = os.path.realpath(joined)
    if not _is_inside(real, str(root)):
        raise DataError("path_escape", src, f"file name {name!r} resolves to {real}, outside {root}", where)
    return Path(real)


def _check_complete(data: bytes, path: object) -> None:
    """Raise ``truncated_image`` for JPEG/PNG bytes without their end marker."""
    if data[:2] == b"\xff\xd8":
        if b"\xff\xd9" not in data[-64:]:  # EOI, allowing a little trailing padding
            raise DataError("truncated_image", path, "JPEG data ends without an end-of-image marker")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-64:]:
            raise DataError("truncated_image", path, "PNG data ends without an IEND chunk")


def decode_image(data: bytes, path: object = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 ``(H, W, 3)`` (see the module docstring for the rules)."""
    if not data:
        raise DataError("unreadable_image", path, "file is empty")
    _check_complete(data, path)
    buf = np.frombuffer(data, dtype=np.uint8)
    if _READ_FLAGS is not None:
        image = cv2.imdecode(buf, _READ_FLAGS)
    else:  # OpenCV < 4.10: decode BGR, then swap
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if image is not None:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise DataError("unreadable_image", path, "not a decodable image")
    if image.dtype != np.uint8:  # defensive: IMREAD_COLOR already reduces depth to 8 bits
        image = np.right_shift(image, 8).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read and decode an image file to RGB uint8 ``(H, W, 3)``; problems raise :class:`DataError`."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DataError("missing_file", path, "image file does not exist") from None
    except OSError as exc:
        raise DataError("unreadable_image", path, f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(data, path)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of the image :func:`read_image` would return, from the header when possible."""
    suffix = str(path).lower().rsplit(".", 1)[-1]
    if suffix in ("jpg", "jpeg", "png"):
        try:
            from PIL import Image

            with Image.open(path) as im:
                width, height = im.size
                orientation = im.getexif().get(0x0112, 1) if suffix != "png" else 1
                if suffix == "png" and im.getexif().get(0x0112, 1) != 1:
                    raise ValueError("PNG with EXIF orientation: decode to be sure")
            if orientation in (5, 6, 7, 8):  # rotated by 90 degrees on decode
                width, height = height, width
            if width > 0 and height > 0:
                return int(height), int(width)
        except FileNotFoundError:
            raise DataError("missing_file", path, "image file does not exist") from None
        except Exception:  # unknown header detail: fall back to a full decode below
            pass
    image = read_image(path)
    return int(image.shape[0]), int(image.shape[1])
