"""A seeded detection run is reproducible: two real ``cvkit train`` runs of one config give the same losses, and a
run killed with SIGKILL mid-epoch and resumed from ``last.pt`` gives the uninterrupted run's losses.

Both compare separate processes, so they fail when anything random (the model's initial weights) is drawn
before the run seeds torch: that was the bug (issue 16), and the in-process resume tests could not see it.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOSS_COLUMNS = ("loss", "loss_cls", "loss_box", "val_loss", "val_loss_cls", "val_loss_box")


def tiny_args(cache: Path, epochs: int, num_train: int) -> list[str]:
    """The default recipe shrunk to a 128x128 synthetic set (a few seconds per epoch on one core)."""
    sets = [
        f"data.synthetic.num_train={num_train}", "data.synthetic.num_val=4", "data.synthetic.image_size=128",
        "data.synthetic.max_object_size=64", f"data.cache_dir={cache}", "data.batch_size=4", "data.num_workers=0",
        f"train.epochs={epochs}", "train.eval_every=1", "train.progress=false", "train.tensorboard=false",
        "train.plots=false", "transforms.size=[128,128]", "anchors.image_size=[128,128]",
    ]
    return [arg for item in sets for arg in ("--set", item)]


def train_command(run_dir: Path, args: list[str], resume: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "cvkit.cli.main", "train", str(ROOT / "configs" / "default.yaml"),
           "--run-dir", str(run_dir), *args]
    return cmd + (["--resume", str(resume)] if resume is not None else [])


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run(cmd: list[str]) -> None:
    """Run ``cmd`` to completion; a failure shows the end of its stderr (CI keeps nothing else)."""
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"exit {proc.returncode}: {' '.join(cmd[3:5])}\n{proc.stderr[-3000:]}"


def losses(run_dir: Path) -> list[tuple[str, ...]]:
    """The loss columns of ``metrics.csv`` as written (strings: byte-identical means equal)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [tuple(row[c] for c in ("epoch", *LOSS_COLUMNS)) for row in csv.DictReader(f)]


def test_two_seeded_runs_give_identical_losses(tmp_path):
    args = tiny_args(tmp_path / "cache", epochs=2, num_train=8)
    for name in ("a", "b"):
        run(train_command(tmp_path / name, args))
    first, second = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(first) == 2
    assert first == second


def test_run_killed_mid_epoch_and_resumed_gives_the_uninterrupted_losses(tmp_path):
    args = tiny_args(tmp_path / "cache", epochs=3, num_train=24)
    run(train_command(tmp_path / "whole", args))
    whole = losses(tmp_path / "whole")
    assert len(whole) == 3

    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.pt"
    proc = subprocess.Popen(train_command(run_dir, args), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(random.uniform(0.0, 1.0))  # somewhere inside epoch 2 (each epoch is 6 iterations)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    run(train_command(run_dir, args, resume=last))
    assert losses(run_dir) == whole


def test_model_init_depends_only_on_the_seed(tmp_path, monkeypatch):
    """In-process: ``tasks.detect.run`` seeds before building the model, whatever was drawn before it and on
    whichever rank."""
    import torch

    import cvkit.engine.train as engine_train
    from cvkit.run_config import load_run_config
    from cvkit.tasks import detect

    initial: list[torch.Tensor] = []
    monkeypatch.setattr(engine_train, "fit", lambda model, *args, **kwargs: initial.append(
        torch.cat([p.detach().flatten() for p in model.parameters()])) or [])
    cfg = load_run_config(ROOT / "configs" / "default.yaml", tiny_args(tmp_path / "cache", 1, 4)[1::2])
    for rank, draws in (("0", 1), ("1", 7)):  # under torchrun every rank must build the same weights
        monkeypatch.setenv("RANK", rank)
        torch.rand(draws)  # the global generator's state differs before each run
        detect.run(cfg, tmp_path / f"run{rank}")
    assert len(initial) == 2 and torch.equal(initial[0], initial[1])
