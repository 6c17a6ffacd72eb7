"""``cvkit doctor``: versions, devices, and a diagnosis of the classic broken installs."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys

from cvkit.cli._errors import cli_errors

_TV_OPS_HINT = """\
torchvision's compiled operators did not load ("operator torchvision::nms does not exist").
This means torch and torchvision come from different builds: typically a CPU-only torch
(e.g. torch==2.13.0+cpu from a local wheel folder) next to a CUDA torchvision from PyPI.
Fix: install the matching pair from the registry, ignoring local pip configuration:
    .venv/bin/pip install --isolated --force-reinstall torch==2.13.0 torchvision==0.28.0
(`make venv` does this on a fresh machine). The CUDA build runs fine on a CPU-only machine."""


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # report, do not crash: this is the diagnostic tool
        return f"NOT IMPORTABLE ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return str(getattr(mod, "__version__", "installed"))


def diagnose() -> tuple[list[tuple[str, str]], list[str]]:
    """Return (rows of name/value, problems found)."""
    rows: list[tuple[str, str]] = [
        ("python", sys.version.split()[0]),
        ("platform", platform.platform()),
    ]
    problems: list[str] = []
    for name in ("cvkit", "torch", "torchvision", "numpy", "numba", "cv2", "albumentations", "pycocotools"):
        version = _version(name)
        rows.append((name, version))
        if version.startswith("NOT IMPORTABLE"):
            if name == "torchvision" and "torchvision::nms" in version:
                problems.append(_TV_OPS_HINT)
            else:
                problems.append(f"{name} cannot be imported: {version}")
    try:
        import torch

        rows.append(("torch threads", str(torch.get_num_threads())))
        rows.append(("cuda available", str(torch.cuda.is_available())))
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                rows.append((f"cuda:{i}", torch.cuda.get_device_name(i)))
        rows.append(("torch cuda build", str(torch.version.cuda)))
        from cvkit.engine.train import cpu_has_native_bf16

        native = cpu_has_native_bf16()
        rows.append(("cpu bfloat16", "native: training autocasts to bfloat16 (train.amp_cpu: auto)" if native
                     else "not native: CPU training runs in float32"))
    except Exception:
        pass
    try:
        import numba

        rows.append(("numba threads", str(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    except Exception:
        pass
    if not any("torchvision::nms" in p for p in problems):
        try:
            import torch
            import torchvision.ops

            torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
        except RuntimeError as exc:
            if "torchvision::nms" in str(exc):
                problems.append(_TV_OPS_HINT)
            else:
                problems.append(f"torchvision.ops.nms failed: {exc}")
        except Exception:
            pass
    return rows, problems


@cli_errors("cvkit doctor")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvkit doctor", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when a problem is found")
    args = parser.parse_args(argv)
    rows, problems = diagnose()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if problems:
        print("\nProblems:")
        for p in problems:
            print(f"- {p}")
        return 1 if args.check else 0
    print("\nAll good.")
    return 0
