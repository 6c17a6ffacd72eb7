"""Checkpoints: atomic replacement, refusal of code-carrying pickles, RNG states that round-trip."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from cvkit.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cvkit.engine.seed import rng_state, seed_everything, set_rng_state

MARKER = "cvkit_pwned_marker"


class Payload:
    """Unpickling this would run ``open(path, "w")``: a stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.zeros(3))
    assert os.listdir(path.parent) == ["last.pt"]


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_a_pickle_that_runs_code_is_refused(tmp_path, writer):
    marker = tmp_path / MARKER
    path = tmp_path / "evil.pt"
    state = {"model": {"w": torch.ones(1)}, "extra": Payload(marker)}
    if writer == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    # control: an unsafe load does run the payload
    torch.load(path, weights_only=False) if writer == "torch" else pickle.loads(path.read_bytes())
    assert marker.exists()


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "list.pt", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_rng_states_round_trip_through_a_safe_checkpoint(tmp_path):
    seed_everything(123)
    random.random(), np.random.normal(), torch.rand(1)  # gauss states and positions mid-stream
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.normal(), torch.rand(4))
    seed_everything(999)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.normal(), torch.rand(4))
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])
