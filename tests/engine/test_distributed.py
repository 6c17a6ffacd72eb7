"""Distributed pieces: sharded sampling, SyncBatchNorm guard, and a real 2-process gloo run of fit."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from cvkit.data.loader import EpochSampler
from cvkit.engine import fit, load_checkpoint
from cvkit.engine.distributed import (
    DistributedEpochSampler,
    convert_sync_batchnorm,
    distributed_loader,
    get_world_size,
    init_distributed,
    is_main_process,
)
from tests.engine import _ddp_worker
from tests.engine._tiny import TinyCriterion, TinyDetector, TinyPostprocessor, tiny_loader


@pytest.mark.parametrize("num_samples", [10, 11, 3])
def test_shards_partition_the_epoch_permutation(num_samples):
    world = 4
    for epoch in (0, 1):
        full = EpochSampler(num_samples, shuffle=True, seed=5)
        full.set_epoch(epoch)
        shards = []
        for rank in range(world):
            sampler = DistributedEpochSampler(num_samples, rank, world, shuffle=True, seed=5)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler) == -(-num_samples // world)
        interleaved = [shards[r][i] for i in range(len(shards[0])) for r in range(world)]
        order = list(full)
        assert interleaved[:num_samples] == order  # rank r takes positions r, r + W, ...
        assert interleaved[num_samples:] == order[: len(interleaved) - num_samples]  # padding repeats the start
        assert all(key[1] == epoch for key in interleaved)


def test_distributed_loader_keeps_the_loader_and_refuses_plain_ones():
    loader = tiny_loader(num_images=10, batch_size=2, seed=3)
    shard = distributed_loader(loader, rank=1, world_size=2)
    assert isinstance(shard.sampler, DistributedEpochSampler) and shard.sampler.seed == 3
    assert shard.batch_size == 2 and shard.collate_fn is loader.collate_fn and shard.dataset is loader.dataset
    assert len(shard) == 3  # 5 samples of the 10 -> batches of 2, 2, 1
    assert distributed_loader(shard, rank=1, world_size=2) is shard  # already sharded: kept
    data = list(range(4))
    presharded = DataLoader(data, sampler=DistributedSampler(data, num_replicas=2, rank=0))
    assert distributed_loader(presharded, rank=0, world_size=2) is presharded
    with pytest.raises(TypeError, match="EpochSampler"):
        distributed_loader(DataLoader(list(range(4))), 0, 2)
    assert (get_world_size(), is_main_process(), init_distributed()) == (1, True, False)  # not under torchrun


def test_sync_batchnorm_needs_cuda():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="needs CUDA"):
        convert_sync_batchnorm(model, torch.device("cpu"))
    converted = convert_sync_batchnorm(model, torch.device("cuda"))  # conversion itself needs no GPU
    assert isinstance(converted[1], nn.SyncBatchNorm)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_with_the_whole_batch(tmp_path):
    # fork: the children inherit the imported torch (DDP's constructor imports torch._dynamo, slow to import
    # twice more); they run single-threaded, so no OpenMP pool crosses the fork
    import torch._dynamo  # noqa: F401

    mp.start_processes(_ddp_worker.run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["backend"] == "gloo"
    assert [r["num_steps"] for r in ranks] == [4, 4]  # 8 images / 2 ranks / batch 2, two epochs
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key  # DDP keeps the replicas identical

    torch.manual_seed(0)
    model = TinyDetector()
    criterion = TinyCriterion()
    history = fit(
        model,
        criterion,
        TinyPostprocessor(),
        tiny_loader(num_images=8, batch_size=4),
        None,
        _ddp_worker.CFG,
        tmp_path / "single",
    )
    assert len(criterion.losses) == 4
    for key, value in model.state_dict().items():  # averaged gradients of 2 x 2 == gradient of 4
        assert torch.allclose(value, ranks[0]["state"][key], atol=1e-6), key
    for single_row, ddp_row in zip(history, ranks[0]["history"]):
        assert ddp_row["loss"] == pytest.approx(single_row["loss"], rel=1e-5)  # losses averaged over ranks

    # rank 0 alone evaluated and wrote the run folder
    assert [r["eval_calls"] for r in ranks] == [2, 0]
    assert "AP" in ranks[0]["history"][-1] and "AP" not in ranks[1]["history"][-1]
    assert not (tmp_path / "run_rank1").exists()
    state = load_checkpoint(tmp_path / "run_rank0" / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and len(state["rng_per_rank"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])  # the unwrapped model is saved
    for key, value in state["model"].items():
        assert torch.equal(value, ranks[0]["state"][key])
