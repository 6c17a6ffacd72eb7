"""TrainingState: the checkpoint schema with its version, round-tripped and read from older versions."""

import pytest
import torch

from cvkit.checkpoint import CHECKPOINT_VERSION, CheckpointError, TrainingState, load_checkpoint, save_checkpoint


def test_training_state_round_trips_through_a_checkpoint_file(tmp_path):
    state = TrainingState(model={"w": torch.ones(2)}, optimizer={"state": {}}, scheduler={"last_iter": 3}, epoch=2,
                          global_step=3, best_metric=0.5, budget={"time_used": 1.5, "images_seen": 12})
    path = save_checkpoint(tmp_path / "last.pt", state.to_dict())
    raw = load_checkpoint(path)
    assert raw["format"] == "cvkit-checkpoint" and raw["version"] == CHECKPOINT_VERSION
    again = TrainingState.from_dict(raw, path)
    assert again.epoch == 2 and again.best_metric == 0.5 and again.budget["images_seen"] == 12
    assert torch.equal(again.model["w"], torch.ones(2)) and again.ema is None


def test_a_version_1_checkpoint_loads_with_an_empty_budget():
    v1 = {"format": "cvkit-checkpoint", "version": 1, "model": {}, "optimizer": {}, "scheduler": {"last_iter": 8},
          "epoch": 4, "global_step": 8, "ema": None, "best_metric": None, "history": [{"epoch": 1.0}]}
    state = TrainingState.from_dict(v1)
    assert state.budget == {} and state.epoch == 4 and state.history == [{"epoch": 1.0}] and state.extra == {}


@pytest.mark.parametrize(("state", "message"), [
    ({"format": "other"}, "not a cvkit training checkpoint"),
    ({"format": "cvkit-checkpoint", "version": CHECKPOINT_VERSION + 1, "model": {}, "optimizer": {},
      "scheduler": {}}, "newer than this cvkit"),
    ({"format": "cvkit-checkpoint", "version": 1, "model": {}}, "without optimizer, scheduler"),
])
def test_from_dict_refuses_what_it_cannot_resume(state, message):
    with pytest.raises(CheckpointError, match=message):
        TrainingState.from_dict(state, "x.pt")
