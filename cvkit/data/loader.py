"""DataLoader with reproducible augmentation: sample ``i`` in epoch ``e`` is augmented from
``sample_seed(run_seed, e, i)``, whatever the number of workers or which worker loads it.

How: :class:`EpochSampler` (main process) yields keys ``(index, epoch)``; :class:`AugmentedDataset`
(in the worker) turns a key into the raw sample and calls ``transform(sample, seed=sample_seed(...))``.
Call ``loader.sampler.set_epoch(e)`` (or :func:`set_epoch`) before each epoch; the shuffling order is a
permutation drawn from ``(run_seed, e)``. Workers also get their global ``random``/``numpy``/``torch``
seeds from the run seed (for third-party code), and OpenCV runs single-threaded inside each worker.

    loader = build_dataloader(dataset, transform=ssd_train(tcfg), batch_size=32, shuffle=True, seed=0)
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        skipped = 0
        for batch in loader:
            images = batch["images"].to(device)  # uint8 (B, 3, H, W): the model normalizes them
            skipped += batch["num_skipped"]  # bad images met under on_error="skip" (decoded in the workers);
            # batch["skipped_kinds"] says which problems, e.g. {"bad_image": 1}
            ...

:func:`loader_from_config` builds the same from the ``data:`` section (batch size, workers, seed, pinning).

Images come out of the workers as uint8 ``(B, 3, H, W)`` (every preset's output; a channel-last view of
the batch buffer) and stay uint8: the engine moves them to the training device and the model's first
module normalizes them there (:class:`cvkit.models.preprocess.ImageNormalizer`).
"""

from __future__ import annotations

import ctypes
import platform
import random
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cvkit.data.collate import Skipped, collate_classification, collate_detection
from cvkit.data.config import DataConfig
from cvkit.transforms.mosaic import Mosaic
from cvkit.transforms.pipeline import BatchSlot

__all__ = [
    "sample_seed",
    "EpochSampler",
    "AugmentedDataset",
    "build_dataloader",
    "loader_from_config",
    "set_epoch",
    "seed_worker",
    "tune_worker_memory",
]

_MASK64 = (1 << 64) - 1


def sample_seed(run_seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` (a 32-bit int, well mixed)."""
    words = [run_seed & _MASK64, epoch & _MASK64, index & _MASK64]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


class EpochSampler(Sampler[tuple[int, ...]]):
    """Yield ``(index, epoch)`` keys over ``num_samples`` items; shuffled from ``(seed, epoch)``.

    ``mosaic_until``: while the run's fraction (:meth:`set_fraction`, which the training loop calls after
    every step) is below it, keys are ``(index, epoch, True)``: the sample may become a mosaic
    (:class:`AugmentedDataset`). Keys are made as the loader asks for them, so a change of the fraction
    reaches the batches a loader's prefetch depth later, the same batches on every run.
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0, mosaic_until: float = 0.0):
        self.num_samples = int(num_samples)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.mosaic_until = float(mosaic_until)
        self.fraction = 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_fraction(self, fraction: float) -> None:
        """The fraction of the run used so far (0..1)."""
        self.fraction = float(fraction)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed & _MASK64, self.epoch & _MASK64]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        epoch = self.epoch
        if self.mosaic_until <= 0:
            return iter([(int(i), epoch) for i in order])
        return ((int(i), epoch, True) if self.fraction < self.mosaic_until else (int(i), epoch) for i in order)

    def __len__(self) -> int:
        return self.num_samples


class AugmentedDataset(Dataset):
    """``dataset`` with ``transform(sample, seed=...)`` applied; keys are ``index``, ``(index, epoch)`` or
    ``(index, epoch, True)``: the last may become a mosaic (``mosaic``, a :class:`cvkit.transforms.mosaic.Mosaic`,
    applied before ``transform`` with draws from the sample's seed).

    A plain ``index`` means epoch 0. A sample the dataset skipped (``None``, bad input under
    ``on_error="skip"``) comes out as :class:`~cvkit.data.collate.Skipped` with the kinds of problem the
    dataset's report counted for it, so that the batch can say what was dropped.
    """

    #: :meth:`__getitems__` decodes images until this many bytes of pixels are held, then augments them
    DECODE_GROUP_BYTES = 32 << 20

    def __init__(self, dataset: Any, transform: Callable[..., dict[str, Any]] | None, seed: int = 0,
                 mosaic: Mosaic | None = None):
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.mosaic = mosaic

    def __len__(self) -> int:
        return len(self.dataset)

    def _raw(self, key: int | tuple[int, ...]) -> tuple[dict[str, Any] | Skipped, int]:
        """The dataset's sample for ``key`` (or :class:`Skipped`) and its augmentation seed."""
        index, epoch, mix = (key + (False,))[:3] if isinstance(key, tuple) else (key, 0, False)
        report = getattr(self.dataset, "report", None)
        before = report.errors.copy() if report is not None else None  # a few kinds at most
        sample = self.dataset[index]
        if sample is None:
            new = report.errors - before if report is not None and before is not None else {}
            return Skipped(tuple(sorted(new.items()))), 0  # the kinds this sample added to the report
        seed = sample_seed(self.seed, epoch, index)
        if mix and self.mosaic is not None:
            sample = self.mosaic.maybe_apply(sample, seed, self.dataset.__getitem__, len(self.dataset))
        return sample, seed

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any] | Skipped:
        sample, seed = self._raw(key)
        if isinstance(sample, Skipped) or self.transform is None:
            return sample
        return self.transform(sample, seed=seed)

    def __getitems__(self, keys: list[Any]) -> list[dict[str, Any] | Skipped]:
        """The samples of one batch (what a DataLoader worker calls), their images in one batch buffer.

        With a cvkit :class:`~cvkit.transforms.Pipeline` whose images are uint8 ``(3, H, W)`` channel-last
        views, the first image fixes the batch shape: a ``(B, H, W, 3)`` buffer is allocated (in shared
        memory inside a worker process, where the batch has to go anyway) and every later sample is rendered
        straight into its slot. :func:`~cvkit.data.collate.collate_detection` then hands the buffer over
        without stacking (one copy of the batch less). Samples of another shape keep their own pixels and the
        batch is stacked as usual. The values are those of ``[self[key] for key in keys]``.

        The images are decoded a group at a time (up to ``DECODE_GROUP_BYTES`` of decoded pixels), then their
        random draws and boxes are computed (``Pipeline.prepare``), then their pixels (``Pipeline.finish``):
        running the decoder, the compiled box work (``ssd_train``'s
        :class:`~cvkit.transforms.ssd_fast.SSDTrainPipeline`) and the pixel work each on many images in a row
        keeps their code and tables in the CPU caches (the decode/augment split alone is faster per image on
        one core than alternating them).
        """
        transform: Any = self.transform
        if transform is None or not (hasattr(transform, "prepare") and hasattr(transform, "finish")):
            return [self[key] for key in keys]
        samples: list[dict[str, Any] | Skipped] = []
        slots: list[BatchSlot] | None = None  # the batch buffer's slots, once the first image fixed its shape
        start = 0
        while start < len(keys):
            group: list[tuple[dict[str, Any] | Skipped, int]] = []
            decoded_bytes = 0
            while start + len(group) < len(keys) and (not group or decoded_bytes < self.DECODE_GROUP_BYTES):
                raw, seed = self._raw(keys[start + len(group)])
                group.append((raw, seed))
                image = raw.get("image") if isinstance(raw, dict) else None
                decoded_bytes += getattr(image, "nbytes", 0)
            # the draws and box work of the group, then its pixels (Pipeline.prepare / finish: same results)
            prepared = [raw if isinstance(raw, Skipped) else transform.prepare(raw, seed) for raw, seed in group]
            for slot, item in enumerate(prepared, start):
                if isinstance(item, Skipped):
                    samples.append(item)
                    continue
                sample = transform.finish(item, out=None if slots is None else slots[slot])
                image = sample.get("image")
                if slots is None and isinstance(image, torch.Tensor) and _is_channel_last_uint8(image):
                    channels, height, width = image.shape
                    buffer = _batch_buffer((len(keys), height, width, channels))
                    slots = [BatchSlot(a, t) for a, t in zip(buffer.numpy(), buffer.permute(0, 3, 1, 2).unbind(0))]
                    np.copyto(slots[slot].array, image.permute(1, 2, 0).numpy())
                    sample["image"] = slots[slot].image
                samples.append(sample)
            start += len(group)
        return samples


def _is_channel_last_uint8(image: torch.Tensor) -> bool:
    """A uint8 ``(C, H, W)`` tensor viewing contiguous ``(H, W, C)`` pixels (cvkit pipelines' output)."""
    return image.dtype == torch.uint8 and image.ndim == 3 and image.permute(1, 2, 0).is_contiguous()


def _batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialized uint8 tensor of ``shape``; in a DataLoader worker process, in shared memory (where
    the worker's batch is moved before it is sent; ``default_collate`` allocates its batches there too)."""
    if torch.utils.data.get_worker_info() is not None:
        numel = int(np.prod(shape))
        template = torch.empty(0, dtype=torch.uint8)
        try:
            storage = template._typed_storage()._new_shared(numel, device="cpu")
            return template.new(storage).view(shape)
        except (AttributeError, RuntimeError, TypeError):  # private API: fall back to ordinary memory
            pass
    return torch.empty(shape, dtype=torch.uint8)


#: glibc ``mallopt`` parameters (malloc.h) and the largest mmap threshold glibc accepts on 64-bit systems
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20


def tune_worker_memory(keep_bytes: int = 64 << 20) -> bool:
    """Let this process reuse freed batch-sized memory instead of handing it back to the kernel (glibc only).

    By default glibc serves every block above 128 KiB-32 MiB (an adaptive threshold) with its own ``mmap``
    and returns it with ``munmap`` when freed, and gives the top of the heap back once more than twice that
    is free. A loader worker allocates and frees the same few sizes over and over (decoded images,
    augmented images, the stacked batch), so the kernel hands it fresh zeroed pages each time: on a 2-core
    VM about 65 page faults per 300x300 image, a fifth of the augmentation's cost. Here blocks up to
    32 MiB come from the heap and up to ``keep_bytes`` of free heap stay mapped (at most that much more
    resident memory per process). Returns whether the settings were applied (``False`` off glibc).
    :func:`seed_worker` calls it in every worker; ``benchmarks/bench_data.py`` calls it too, since it
    times what a worker does.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return mallopt(_M_TRIM_THRESHOLD, max(int(keep_bytes), _MMAP_THRESHOLD_MAX)) == 1 and applied


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: global seeds from the worker's torch seed, and the worker's allocator
    set to reuse freed memory (:func:`tune_worker_memory`).

    OpenCV is made single-threaded in the parent before the workers fork (see :func:`build_dataloader`):
    calling ``cv2.setNumThreads`` inside a forked child whose parent had started OpenCV's thread pool
    waits forever on the parent's (absent) pool threads.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    tune_worker_memory()


def build_dataloader(
    dataset: Any,
    transform: Callable[..., dict[str, Any]] | None = None,
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    num_workers: int = 2,
    seed: int = 0,
    pin_memory: bool = True,
    drop_last: bool = False,
    collate_fn: Callable[[list[Any]], Any] = collate_detection,
    persistent_workers: bool = False,
    mosaic: Mosaic | None = None,
) -> DataLoader:
    """A DataLoader over ``AugmentedDataset(dataset, transform, seed)`` driven by an :class:`EpochSampler`.

    ``pin_memory`` is used only when CUDA is available. ``loader.sampler`` is the :class:`EpochSampler`.
    ``mosaic`` (training only): mosaic samples until the fraction ``mosaic.until`` of the run.
    """
    if num_workers > 0:
        # Workers decode and augment one image each, single-threaded; setting this before the fork
        # also keeps the children from inheriting a half-copied OpenCV thread pool (a fork deadlock).
        cv2.setNumThreads(1)
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed,
                           mosaic_until=mosaic.until if mosaic is not None and mosaic.p > 0 else 0.0)
    generator = torch.Generator()
    generator.manual_seed(seed & (2**63 - 1))
    return DataLoader(
        AugmentedDataset(dataset, transform, seed, mosaic),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory and torch.cuda.is_available(),
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=persistent_workers and num_workers > 0,
    )


def loader_from_config(
    cfg: DataConfig, dataset: Any, transform: Callable[..., dict[str, Any]] | None, train: bool = True,
    mosaic: Mosaic | None = None,
) -> DataLoader:
    """:func:`build_dataloader` with the ``data:`` section's batch size, workers, seed and pinning.

    ``train`` shuffles; the collate function follows the dataset's task (detection or classification).
    """
    from cvkit.data.build import is_detection

    return build_dataloader(
        dataset,
        transform,
        batch_size=cfg.batch_size,
        shuffle=train,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
        pin_memory=cfg.pin_memory,
        collate_fn=collate_detection if is_detection(cfg) else collate_classification,
        persistent_workers=train and cfg.num_workers > 0,
        mosaic=mosaic if train else None,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of a loader built by :func:`build_dataloader` (shuffling and augmentation seeds)."""
    sampler = loader.sampler
    if not isinstance(sampler, EpochSampler):
        raise TypeError("set_epoch needs a loader from cvkit.data.build_dataloader (an EpochSampler)")
    sampler.set_epoch(epoch)
