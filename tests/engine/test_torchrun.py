"""`cvkit train` under the real torchrun launcher: 2 CPU processes (gloo), one run folder, one report."""

import csv
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_cvkit_train_under_torchrun_with_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    run_dir = tmp_path / "run"
    overrides = [
        "data.synthetic.num_train=8", "data.synthetic.num_val=4", f"data.cache_dir={tmp_path / 'cache'}",
        "data.batch_size=2", "data.num_workers=0", "train.epochs=2", "train.progress=false",
        "train.tensorboard=false", "train.plots=false",
    ]
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
           "-m", "cvkit.cli.main", "train",
           "configs/default.yaml", "--run-dir", str(run_dir)]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("done: 2 epochs") == 1  # rank 0 reports, rank 1 stays quiet
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["epoch"]) for r in rows] == [1.0, 2.0]  # one writer: no duplicated rows
