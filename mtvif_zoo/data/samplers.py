"""Deterministic, resumable, distributed batch samplers.

:class:`ResumableBatchSampler` draws each epoch's order from ``numpy.random.default_rng([seed,
epoch])`` (no global RNG state), cuts it into *global* batches of ``batch_size * world_size``
samples (the last incomplete one is dropped) and gives rank ``r`` the ``r``-th slice of
``batch_size``. One process with ``batch_size = B * N`` therefore sees exactly the samples that
``N`` processes with ``B`` each see together, step for step. ``set_epoch(epoch, start_batch)``
restarts mid-epoch after a resume: the already-done batches are skipped, the rest replay
identically. Keys are ``(epoch, index)`` so the dataset's augmentation can be keyed on them.
"""
from typing import Iterator, List, Tuple

import numpy as np
from torch.utils.data import Sampler

__all__ = ['ResumableBatchSampler', 'EvalSampler', 'epoch_permutation']


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


class ResumableBatchSampler(Sampler[List[Tuple[int, int]]]):
    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        order = epoch_permutation(self.num_samples, self.seed, self.epoch) if self.shuffle \
            else np.arange(self.num_samples)
        g = self.global_batch_size
        for b in range(self.start_batch, self.batches_per_epoch):
            chunk = order[b * g:(b + 1) * g][self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            yield [(self.epoch, int(i)) for i in chunk]


class EvalSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: the ranks together see each sample exactly once."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, num_samples, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)
