"""Small shared harness for the benchmarks: interleaved timing, medians, ratios, JSON result rows.

Usage in a ``bench_*.py`` script::

    from _harness import Bench, parse_args
    args = parse_args("nms")                       # --threads, --repeat, --quick, --out
    bench = Bench("nms", args)
    for threads in bench.thread_settings():        # 1 thread, then all threads (unless --threads)
        row = bench.compare(
            case={"boxes": 5000, "classes": 1},
            candidate=lambda: cvkit_nms(...),      # cvkit
            baseline=lambda: torchvision_nms(...), # the reference it must beat
            check=lambda a, b: torch.equal(a, b),  # outputs must agree
            target=10.0,                           # the speed-up the issue asks for (optional)
        )
    bench.finish()                                 # prints the table and appends JSON lines

Each ``compare`` warms both callables up, then alternates them ``repeat`` times (so drifts in machine
load hit both alike), and records medians and ``ratio = baseline / candidate`` (> 1: cvkit is faster).
Rows go to ``benchmarks/results/<name>.jsonl`` with machine, date, threads, versions and the load average
(``uptime``'s three numbers, taken as the row finishes).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(name: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"cvkit benchmark: {name}")
    parser.add_argument("--threads", type=int, nargs="*", help="thread counts to run (default: 1 and all)")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs of each side (interleaved)")
    parser.add_argument("--quick", action="store_true", help="fewer cases and repeats (smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: results/<name>.jsonl)")
    parser.add_argument("--no-save", action="store_true", help="print only, append no result rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = min(args.repeat, 5)
    return args


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.node() or "unknown",
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except Exception:
        pass
    try:
        import numba

        info["numba"] = numba.__version__
    except Exception:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _load_average() -> list[float] | None:
    """The system load averages over 1, 5 and 15 minutes (``uptime``), or ``None`` where unavailable."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def set_threads(threads: int) -> None:
    """Set torch's and numba's thread counts together (cvkit's kernels follow torch's count)."""
    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except Exception:
        pass


class Bench:
    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.threads = 1
        self.machine = _machine()

    def thread_settings(self) -> Iterable[int]:
        all_threads = os.cpu_count() or 1
        settings = self.args.threads or sorted({1, all_threads})
        for threads in settings:
            set_threads(threads)
            self.threads = threads
            yield threads

    def time(self, fn: Callable[[], Any]) -> float:
        _sync(self.args.device)
        start = time.perf_counter()
        fn()
        _sync(self.args.device)
        return time.perf_counter() - start

    def compare(
        self,
        case: dict[str, Any],
        candidate: Callable[[], Any],
        baseline: Callable[[], Any],
        check: Callable[[Any, Any], bool] | None = None,
        target: float | None = None,
        candidate_name: str = "cvkit",
        baseline_name: str = "torchvision",
    ) -> dict[str, Any]:
        out_c = candidate()
        out_b = baseline()
        agree = bool(check(out_c, out_b)) if check is not None else None
        for _ in range(2):  # warm-up (JIT, caches, allocator)
            candidate()
            baseline()
        t_c: list[float] = []
        t_b: list[float] = []
        for i in range(self.args.repeat):
            if i % 2 == 0:
                t_c.append(self.time(candidate))
                t_b.append(self.time(baseline))
            else:
                t_b.append(self.time(baseline))
                t_c.append(self.time(candidate))
        med_c = statistics.median(t_c)
        med_b = statistics.median(t_b)
        row = {
            "bench": self.name,
            "case": case,
            "device": self.args.device,
            "threads": self.threads,
            f"{candidate_name}_ms": round(med_c * 1e3, 4),
            f"{baseline_name}_ms": round(med_b * 1e3, 4),
            "candidate": candidate_name,
            "baseline": baseline_name,
            "ratio": round(med_b / med_c, 2) if med_c > 0 else float("inf"),
            "target": target,
            "met": None if target is None else bool(med_b / med_c >= target),
            "outputs_agree": agree,
            "repeat": self.args.repeat,
            "load_avg": _load_average(),  # 1, 5, 15 min (as `uptime`): others' work on a shared machine
        }
        self.rows.append(row)
        case_s = " ".join(f"{k}={v}" for k, v in case.items())
        flag = "" if target is None else f"  target {target:g}x {'met' if row['met'] else 'NOT met'}"
        print(
            f"[{self.name}] {case_s:<48} thr={self.threads} {candidate_name} {med_c * 1e3:9.3f} ms  "
            f"{baseline_name} {med_b * 1e3:9.3f} ms  ratio {row['ratio']:7.2f}x  agree={agree}{flag}",
            flush=True,
        )
        return row

    def finish(self) -> None:
        if self.args.no_save or not self.rows:
            return
        out = self.args.out or RESULTS / f"{self.name}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with out.open("a", encoding="utf-8") as fh:
            for row in self.rows:
                fh.write(json.dumps({"date": stamp, **self.machine, **row}) + "\n")
        print(f"appended {len(self.rows)} rows to {out}")
