"""torch.distributed helpers for ``torchrun``: process group, sharded sampling, rank-0-only writing.

Under ``torchrun --nproc_per_node N`` every process gets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in its environment; :func:`init_distributed` joins the process group (NCCL on CUDA,
gloo on CPU). Without those variables (``WORLD_SIZE`` unset or 1) everything here is a no-op and the
helpers report rank 0 of 1.

Sampling: :class:`DistributedEpochSampler` is :class:`cvkit.data.loader.EpochSampler` sharded the way
``torch.utils.data.DistributedSampler`` shards: the epoch's permutation (the same on every rank, from
``(seed, epoch)``) is padded by repeating its start to a multiple of the world size, and rank ``r`` takes
positions ``r, r + W, r + 2W, ...``. It yields the same ``(index, epoch)`` keys, so augmentation stays
reproducible. :func:`distributed_loader` rebuilds a loader around it with the same dataset, batch size
(per process) and workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from cvkit.data.loader import EpochSampler

__all__ = [
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_reduce_mean",
    "broadcast_object",
    "DistributedEpochSampler",
    "distributed_loader",
    "convert_sync_batchnorm",
]


def is_distributed() -> bool:
    """True when a process group is initialized with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (or not distributed): the only process that writes files and prints."""
    return get_rank() == 0


def init_distributed(backend: str = "auto", device: str = "auto") -> bool:
    """Join the process group described by torchrun's environment; returns True when distributed.

    Does nothing (returns False) when ``WORLD_SIZE`` is unset or 1; returns True at once when a group is
    already initialized. ``backend="auto"`` picks NCCL when the run uses CUDA, else gloo. With NCCL the
    process's CUDA device is set to ``LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean over processes of each value (keys must be the same on every rank); identity when not distributed."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    packed /= dist.get_world_size()
    reduced = dict(zip(keys, packed.cpu().tolist()))
    return {k: reduced[k] for k in values}  # the caller's key order


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (identity when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class DistributedEpochSampler(EpochSampler):
    """Rank ``rank`` 's share of :class:`EpochSampler` 's ``(index, epoch)`` keys (see the module docstring).

    Every rank yields ``ceil(num_samples / world_size)`` keys (``drop_last``: ``floor``, the tail dropped
    instead of padded).
    """

    def __init__(
        self,
        num_samples: int,
        rank: int,
        world_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ):
        super().__init__(num_samples, shuffle=shuffle, seed=seed)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.world_size
        return -(-self.num_samples // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, ...]]:  # (index, epoch) or (index, epoch, True): EpochSampler
        keys = list(super().__iter__())
        total = len(self) * self.world_size
        if total > len(keys) and keys:
            repeats = -(-total // len(keys))
            keys = (keys * repeats)[:total]
        keys = keys[:total]
        return iter(keys[self.rank : total : self.world_size])


def distributed_loader(loader: DataLoader, rank: int | None = None, world_size: int | None = None) -> DataLoader:
    """A copy of ``loader`` (from ``cvkit.data.build_dataloader``) that reads only this rank's share.

    The dataset, collate function, per-process batch size, workers, pinning and worker seeding are kept;
    the sampler becomes a :class:`DistributedEpochSampler` with the original's shuffle flag and seed. A
    loader that is already sharded (:class:`DistributedEpochSampler` or torch's ``DistributedSampler``) is
    returned as it is; any other sampler is refused (its samples could not be sharded reproducibly).
    """
    sampler = loader.sampler
    if isinstance(sampler, (DistributedEpochSampler, DistributedSampler)):
        return loader  # already sharded by its builder
    if not isinstance(sampler, EpochSampler):
        raise TypeError("distributed_loader needs a loader from cvkit.data.build_dataloader (an EpochSampler)")
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    shard = DistributedEpochSampler(sampler.num_samples, rank, world_size, shuffle=sampler.shuffle, seed=sampler.seed)
    shard.set_epoch(sampler.epoch)
    generator = torch.Generator()
    generator.manual_seed((int(sampler.seed) + rank) & (2**63 - 1))
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=shard,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn,
        generator=generator,
        persistent_workers=loader.persistent_workers,
    )


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm replaced by ``nn.SyncBatchNorm`` (statistics over all processes).

    PyTorch's SyncBatchNorm runs on CUDA only: on another device this raises ``ValueError``.
    """
    if device.type != "cuda":
        raise ValueError(f"train.sync_bn needs CUDA (SyncBatchNorm does not run on {device.type})")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
