"""Print the README performance table (markdown) from the newest rows in benchmarks/results/*.jsonl.

Rows taken on a busy machine (a recorded 1-minute load average above the machine's core count: others' jobs
competing for the cores) stay in the record but are left out of the table, whose rows come from quiet runs.

Run: .venv/bin/python benchmarks/report.py [--threads=N] [BENCH ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def busy(row: dict) -> bool:
    """Whether ``row`` was measured while the 1-minute load average exceeded the machine's cores."""
    load = row.get("load_avg")
    return bool(load) and float(load[0]) > float(row.get("cores") or 1)


def latest_rows(name: str) -> list[dict]:
    path = RESULTS / f"{name}.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if not r.get("superseded")]  # kept for the record, measured another way
    rows = [r for r in rows if not busy(r) and "case" in r]  # accuracy.jsonl: whole runs, no timing case
    if not rows:
        return []
    latest: dict[str, dict] = {}
    for r in rows:  # the newest row of each (case, device, threads), in first-seen order
        key = json.dumps([r["case"], r["device"], r["threads"]], sort_keys=True)
        latest.pop(key, None)
        latest[key] = r
    return list(latest.values())


def main(argv: list[str]) -> None:
    threads = None
    if argv and argv[0].startswith("--threads="):
        threads = int(argv[0].split("=", 1)[1])
        argv = argv[1:]
    names = argv or sorted(p.stem for p in RESULTS.glob("*.jsonl"))
    print("| bench | case | device | threads | cvkit ms | baseline ms | ratio | target | agree |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for r in latest_rows(name):
            if threads is not None and r["threads"] != threads:
                continue
            case = ", ".join(f"{k}={v}" for k, v in r["case"].items())
            cand = r.get(f"{r['candidate']}_ms")
            base = r.get(f"{r['baseline']}_ms")
            target = "" if r.get("target") is None else f"{r['target']:g}x {'met' if r['met'] else 'not met'}"
            print(f"| {name} | {case} | {r['device']} | {r['threads']} | {cand} | {base} ({r['baseline']}) "
                  f"| {r['ratio']}x | {target} | {r['outputs_agree']} |")


if __name__ == "__main__":
    main(sys.argv[1:])
