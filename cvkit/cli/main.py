"""``cvkit COMMAND [ARGS]``: dispatch to ``cvkit.cli.<module>.main(argv)``.

Commands are a plain dict (name -> module); a module is imported only when its command runs, so
``cvkit doctor`` works even when a heavy dependency is broken.
"""

from __future__ import annotations

import difflib
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("cvkit.cli.train", "train a detector from a YAML config (tools/train.py)"),
    "infer": ("cvkit.cli.infer", "detect objects in images with a checkpoint (tools/infer.py)"),
    "eval": ("cvkit.cli.eval", "COCO metrics of a detection checkpoint on a split (tools/eval.py)"),
    "export": ("cvkit.cli.export", "export a detector to TorchScript or ONNX, checked against the eager model"),
    "doctor": ("cvkit.cli.doctor", "print versions and devices; diagnose broken torch/torchvision installs"),
    "demo": ("cvkit.cli.demo", "train the default detector on the built-in data, evaluate it, run inference"),
    "ops-demo": ("cvkit.cli.ops_demo", "NMS ops on synthetic detector outputs vs torchvision, with timings"),
    "anchors": ("cvkit.cli.anchors", "anchor coverage report of a config's anchors on its dataset"),
    "check-data": ("cvkit.cli.check_data", "validate a config's dataset up front and print the report"),
    "augment-preview": ("cvkit.cli.augment_preview", "save a grid of augmented samples with their boxes"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: cvkit COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `cvkit COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name in ("-V", "--version"):
        from cvkit import __version__

        print(f"cvkit {__version__}")
        return 0
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"cvkit: unknown command {name!r}.{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
