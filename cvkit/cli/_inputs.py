"""What ``cvkit infer`` reads: files, folders and glob patterns expanded to image paths, and distinct output
names for them (shared by the detection and classification paths of ``infer``)."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from cvkit.cli._errors import CliError

__all__ = ["IMAGE_SUFFIXES", "expand_inputs", "output_stems", "missing_inputs"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> a list of paths (first seen wins)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        else:
            found = [path]
        for p in found:
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out


def output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct output name per input: the file stem, prefixed by its folder (then by its position)
    where two inputs share a stem, so that ``a/x.jpg`` and ``b/x.png`` do not overwrite each other."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    names: dict[Path, str] = {}
    used: set[str] = set()
    for i, p in enumerate(paths):
        name = p.stem if counts[p.stem] == 1 else f"{p.parent.name}_{p.stem}"
        if name in used:
            name = f"{name}_{i}"
        used.add(name)
        names[p] = name
    return names


def missing_inputs(inputs: Sequence[str], paths: Sequence[Path]) -> CliError | None:
    """The error to stop with before loading the model: no input names an image, or none of them exists."""
    if not paths:
        return CliError(f"no input images found in {' '.join(inputs)}", "missing_file",
                        hint="give image files, folders of images or glob patterns")
    missing = [p for p in paths if not p.exists()]
    if len(missing) < len(paths):
        return None
    more = f" (and {len(missing) - 1} more inputs)" if len(missing) > 1 else ""
    return CliError(f"{missing[0]}: no such file{more}", "missing_file")
