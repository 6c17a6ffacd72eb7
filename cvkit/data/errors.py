"""Bad dataset input: one error type, a policy (``raise`` or ``skip``) and a report of what was skipped.

Every problem cvkit finds in a dataset is a :class:`DataError` naming the file, the place inside it
(``annotations[12] (id=345)``, ``line 7``, ``object 2``) and what is wrong, with a ``kind`` from
:data:`ERROR_KINDS`. A :class:`DataReport` applies the ``on_error`` policy:

- ``raise`` (default): the first problem raises its :class:`DataError`;
- ``skip``: the bad item (one annotation, one label line, or one image when the image itself is bad) is
  dropped and counted per kind; :meth:`DataReport.format` prints the counts with a few examples.

Fixes that keep the data usable are not errors but *notes*, counted the same way under
:data:`NOTE_KINDS` (e.g. ``clipped``: a box partly outside its image, clipped to it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DataError", "DataReport", "ERROR_KINDS", "NOTE_KINDS", "OnError"]

OnError = Literal["raise", "skip"]

#: Kinds of :class:`DataError`, with what each one means.
ERROR_KINDS: dict[str, str] = {
    "malformed": "a file or entry that does not parse or lacks a required field",
    "missing_file": "a file the annotations name does not exist",
    "unreadable_image": "a file that is not a decodable image",
    "truncated_image": "an image file cut short (no end marker)",
    "size_mismatch": "the decoded image size differs from the size the annotations declare",
    "bad_box": "a box with NaN/inf coordinates or a non-positive width or height",
    "box_outside": "a box entirely outside its image",
    "unknown_category": "a class id or name the dataset does not declare",
    "unknown_image": "an annotation for an image id the dataset does not declare",
    "duplicate_id": "an image or category id declared twice",
    "path_escape": "a file name that leads outside the dataset root ('..', absolute path, symlink)",
}

#: Kinds of note: data that was fixed or ignored on purpose, not an error.
NOTE_KINDS: dict[str, str] = {
    "clipped": "a box partly outside its image, clipped to the image",
    "crowd_ignored": "a COCO crowd annotation (iscrowd=1), not used as a box",
    "difficult_ignored": "a VOC object marked difficult, dropped (data.keep_difficult=false)",
    "no_label_file": "a YOLO image without a label file (kept as a negative image)",
}


class DataError(ValueError):
    """A problem in a dataset's files: ``str(err)`` reads ``FILE[: WHERE]: WHAT [KIND]``.

    Attributes: ``kind`` (a key of :data:`ERROR_KINDS`), ``file`` (path as given), ``where`` (place inside
    the file or ``None``), ``detail`` (what is wrong), ``hint`` (how to fix it, or ``None``), ``skippable``
    (True when a :class:`DataReport` raised it under ``on_error="raise"``: ``skip`` would drop the item).
    """

    skippable = False

    def __init__(self, kind: str, file: object, detail: str, where: str | None = None, hint: str | None = None):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown DataError kind {kind!r}")
        self.kind = kind
        self.file = str(file)
        self.where = where
        self.detail = detail
        self.hint = hint
        place = f"{self.file}: {where}" if where else self.file
        super().__init__(f"{place}: {detail} [{kind}]")

    def __reduce__(self):  # picklable across DataLoader workers
        return (DataError, (self.kind, self.file, self.detail, self.where, self.hint))


@dataclass
class DataReport:
    """Apply the ``on_error`` policy and count skipped problems and notes per kind.

    ``report.handle(err)`` raises ``err`` under ``on_error="raise"``; under ``"skip"`` it counts it (the
    caller then drops the bad item). ``report.note(kind)`` counts a fix (never raises).
    """

    on_error: OnError = "raise"
    max_examples: int = 3
    errors: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def handle(self, err: DataError) -> None:
        """Raise ``err`` (policy ``raise``) or count it as skipped (policy ``skip``)."""
        if self.on_error == "raise":
            err.skippable = True
            raise err
        self.errors[err.kind] += 1
        shown = self.examples.setdefault(err.kind, [])
        if len(shown) < self.max_examples:
            shown.append(str(err))

    def note(self, kind: str, count: int = 1) -> None:
        if kind not in NOTE_KINDS:
            raise ValueError(f"unknown note kind {kind!r}")
        if count:
            self.notes[kind] += count

    @property
    def num_errors(self) -> int:
        return sum(self.errors.values())

    def merge(self, other: DataReport) -> None:
        self.errors.update(other.errors)
        self.notes.update(other.notes)
        for kind, shown in other.examples.items():
            mine = self.examples.setdefault(kind, [])
            mine.extend(shown[: max(0, self.max_examples - len(mine))])

    def format(self, title: str = "data report") -> str:
        """A few lines: skipped problems per kind (with examples), then notes per kind."""
        lines = [f"{title}: {self.num_errors} problem(s) skipped, {sum(self.notes.values())} note(s)"]
        for kind, count in sorted(self.errors.items()):
            lines.append(f"  skipped {kind:<18} {count:>7}  ({ERROR_KINDS[kind]})")
            lines += [f"      e.g. {msg}" for msg in self.examples.get(kind, [])]
        for kind, count in sorted(self.notes.items()):
            lines.append(f"  note    {kind:<18} {count:>7}  ({NOTE_KINDS[kind]})")
        return "\n".join(lines)
