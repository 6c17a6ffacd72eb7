"""What ``cvkit infer`` reads: files, folders, glob patterns and list files expanded to image and video paths,
and distinct output names for them (shared by the detection and classification paths of ``infer``).

- A **file** is taken as it is: an image, a video (by its suffix, :data:`VIDEO_SUFFIXES`) or, for a ``.txt``
  file named on the command line, a list file (below).
- A **folder** is searched recursively, always (no ``--recursive`` flag): its images and videos in every
  sub-folder, sorted by path. Other files in it (labels, ``.txt`` files, ...) are ignored.
- A **glob pattern** (``*``, ``?``, ``[``) is expanded with :func:`glob.glob`, ``**`` matching any depth;
  every file it matches is an input (a ``.txt`` it matches is not read as a list).
- A **list file** (``.txt``) names one file per line; a relative path is relative to the list file's folder,
  blank lines and lines starting with ``#`` are ignored, surrounding spaces stripped. A listed file that
  does not exist is a :class:`Skipped` entry naming the list file and line (``list.txt:3``); folders and
  patterns are not expanded inside a list.

An input seen twice (by two arguments, or a folder and a list) is read once, where it was first seen.
:class:`VideoFrames` reads a video's frames, skipping (and counting) those that fail to decode.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cvkit.cli._errors import CliError

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "LIST_SUFFIXES", "Inputs", "Skipped", "collect_inputs",
           "expand_inputs", "is_video", "output_stems", "missing_inputs", "VideoFrames"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
#: read with ``cv2.VideoCapture`` (OpenCV's FFmpeg backend) rather than as images
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
LIST_SUFFIXES = {".txt"}


class Skipped(NamedTuple):
    """An input left out, and why: ``where`` is the path, or ``list.txt:LINE`` for an entry of a list file."""

    where: str
    why: str


@dataclass
class Inputs:
    """The expanded inputs: ``files`` (images and videos, in input order) and the entries left out."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def images(self) -> list[Path]:
        return [p for p in self.files if not is_video(p)]

    @property
    def videos(self) -> list[Path]:
        return [p for p in self.files if is_video(p)]


def is_video(path: Path) -> bool:
    """Whether ``path`` is read as a video (by its suffix, case-insensitive)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def _read_list(list_file: Path) -> Iterator[tuple[Path, str]]:
    """``(path, "list.txt:LINE")`` for every entry of a list file (module docstring)."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"{list_file}: not a UTF-8 text file listing paths ({exc.reason})", "malformed",
                       hint="a .txt input lists one image or video path per line") from None
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        yield (path if path.is_absolute() else list_file.parent / path), f"{list_file}:{number}"


def _expand(inputs: Sequence[str], suffixes: set[str]) -> Iterator[tuple[Path, str | None]]:
    """``(path, list entry or None)`` for every input, in order (duplicates included)."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
            yield from ((p, None) for p in found)
        elif any(ch in item for ch in "*?["):
            yield from ((Path(p), None) for p in sorted(glob.glob(item, recursive=True)) if Path(p).is_file())
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            yield from _read_list(path)
        else:
            yield path, None


def collect_inputs(inputs: Sequence[str]) -> Inputs:
    """Files, folders, glob patterns and list files -> the images and videos to read (module docstring).

    A listed file that does not exist, or that is a folder, goes to ``skipped`` with its list file and line;
    a missing file named on the command line stays in ``files`` (reading it reports it).
    """
    out = Inputs()
    seen: set[Path] = set()
    for path, entry in _expand(inputs, IMAGE_SUFFIXES | VIDEO_SUFFIXES):
        if entry is not None and not path.is_file():
            out.skipped.append(Skipped(entry, f"{path}: {'is a folder' if path.is_dir() else 'no such file'}"))
            continue
        if path not in seen:
            seen.add(path)
            out.files.append(path)
    return out


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted, recursively), glob patterns and list files -> image paths (first
    seen wins). Listed files are kept even when missing (reading them reports it); videos in folders are left
    out (the classification path reads images only)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for path, _ in _expand(inputs, IMAGE_SUFFIXES):
        if path not in seen:
            seen.add(path)
            out.append(path)
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


def missing_inputs(inputs: Sequence[str], paths: Sequence[Path],
                   skipped: Sequence[Skipped] = ()) -> CliError | None:
    """The error to stop with before loading the model: no input names an image or a video, or none of
    them exists (``skipped``: list entries already left out, named in the message)."""
    if not paths:
        if skipped:
            more = f" (and {len(skipped) - 1} more listed files)" if len(skipped) > 1 else ""
            return CliError(f"no input exists: {skipped[0].where}: {skipped[0].why}{more}", "missing_file")
        return CliError(f"no input images or videos found in {' '.join(inputs)}", "missing_file",
                        hint="give image or video files, folders, glob patterns or .txt files listing paths")
    missing = [p for p in paths if not p.exists()]
    if len(missing) < len(paths):
        return None
    more = f" (and {len(missing) - 1} more inputs)" if len(missing) > 1 else ""
    return CliError(f"{missing[0]}: no such file{more}", "missing_file")


class VideoFrames:
    """The frames of a video file read with ``cv2.VideoCapture``: iterate for ``(index, RGB uint8 (H, W, 3))``.

    ``opened`` is False when OpenCV cannot open the file (not a video, or no codec for it). ``fps`` is the
    container's frame rate (0.0 when it declares none) and ``num_frames`` its declared frame count (None
    when unknown). ``index`` counts frames in stream order, failed ones included, so it stays the frame's
    position in the video. A frame that fails to decode is skipped and counted in ``num_bad``: failures
    followed by a good frame are bad frames; failures at the end (:attr:`MAX_GAP` in a row, or reaching the
    declared count) end the video. ``num_read`` counts the frames yielded.
    """

    #: consecutive failures taken as the end of the stream when the frame count is unknown
    MAX_GAP = 25

    def __init__(self, path: Path):
        import cv2

        self.path = path
        self._capture = cv2.VideoCapture(str(path))
        self.opened = bool(self._capture.isOpened())
        fps = float(self._capture.get(cv2.CAP_PROP_FPS)) if self.opened else 0.0
        self.fps = fps if 0.0 < fps < 1e4 else 0.0  # NaN and absurd rates: unknown
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) if self.opened else 0
        self.num_frames: int | None = count if count > 0 else None
        self.num_read = 0
        self.num_bad = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        import cv2

        index, pending = 0, 0
        while self.opened:
            ok = self._capture.grab()  # demux; retrieve decodes
            frame = self._capture.retrieve()[1] if ok else None
            if frame is None or frame.size == 0:
                pending += 1
                index += 1
                if pending >= self.MAX_GAP or (self.num_frames is not None and index >= self.num_frames):
                    break  # trailing failures: the end of the stream, not bad frames
                continue
            self.num_bad += pending
            pending = 0
            self.num_read += 1
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
        self.close()

    @property
    def num_lost(self) -> int:
        """Frames that could not be decoded: those counted bad, or the declared ones not read if more."""
        declared = self.num_frames - self.num_read if self.num_frames is not None else 0
        return max(self.num_bad, declared)

    def close(self) -> None:
        self._capture.release()
