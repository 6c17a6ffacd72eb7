"""ImageFolder classification reader: ``root/<split>/<class name>/<image>``, one sub-folder per class.

Classes are the sub-folder names sorted alphabetically; ``label`` is the position in that order
(``dataset.class_names[label]``). Files whose extension is not in :data:`cvkit.data.io.IMAGE_EXTENSIONS`
are ignored. Symlinks (folders or files) that resolve outside the root are ``path_escape``; under
``on_error="skip"`` they are counted and left out.

Sample (``dataset[i]``)::

    image      np.uint8 (H, W, 3)   RGB pixels
    label      int                  in 0..num_classes-1
    file_name  str                  path relative to the dataset root
    class_names tuple[str, ...]     the class names (the same tuple as ``dataset.class_names``)

An image that cannot be decoded raises :class:`cvkit.data.DataError` (``on_error="raise"``) or makes the
sample ``None`` (``"skip"``; :func:`cvkit.data.collate.collate_classification` drops it).
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from cvkit.data.errors import DataError, DataReport, OnError
from cvkit.data.io import IMAGE_EXTENSIONS, read_image, resolve_root, safe_join

__all__ = ["ImageFolderDataset"]


class ImageFolderDataset(Dataset):
    """Classification images under ``root/split`` with one sub-folder per class."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        on_error: OnError = "raise",
        report: DataReport | None = None,
    ):
        self.report = report if report is not None else DataReport(on_error)
        self.root = resolve_root(root)
        split_dir = safe_join(self.root, split)
        if not split_dir.is_dir():
            raise DataError("missing_file", split_dir, f"split folder {split!r} does not exist")
        class_dirs = sorted(e.name for e in os.scandir(split_dir) if e.is_dir(follow_symlinks=True))
        self.class_names: tuple[str, ...] = tuple(class_dirs)
        self.samples: list[tuple[str, int]] = []  # (path relative to root, label)
        self.name = f"image_folder-{split}"
        rel_split = os.path.relpath(split_dir, self.root)
        for label, class_name in enumerate(class_dirs):
            rel_class = os.path.join(rel_split, class_name)
            try:
                class_path = safe_join(self.root, rel_class, split_dir, class_name)
            except DataError as err:
                self.report.handle(err)
                continue
            files = []
            for folder, _dirs, names in os.walk(class_path, followlinks=False):
                files += [os.path.join(folder, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
            for path in sorted(files):
                rel = os.path.relpath(path, self.root).replace(os.sep, "/")
                try:
                    safe_join(self.root, rel, class_path)
                except DataError as err:
                    self.report.handle(err)
                    continue
                self.samples.append((rel, label))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"ImageFolderDataset({self.name!r}, images={len(self)}, classes={self.num_classes})"

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        rel, label = self.samples[index]
        try:
            image = read_image(safe_join(self.root, rel))
        except DataError as err:
            self.report.handle(err)
            return None
        return {"image": image, "label": label, "file_name": rel, "class_names": self.class_names}

    def validate_images(self, progress: bool = False, drop_bad: bool = True) -> int:
        """Decode every image once; returns how many are bad (see ``DetectionDataset.validate_images``)."""
        from tqdm import tqdm

        bad = []
        for index in tqdm(range(len(self)), desc=f"decoding {self.name}", unit="img", disable=not progress):
            try:
                read_image(safe_join(self.root, self.samples[index][0]))
            except DataError as err:
                self.report.handle(err)
                bad.append(index)
        if drop_bad and bad:
            dropped = set(bad)
            self.samples = [s for i, s in enumerate(self.samples) if i not in dropped]
        return len(bad)
