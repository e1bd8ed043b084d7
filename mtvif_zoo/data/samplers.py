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

__all__ = ['ResumableBatchSampler', 'MixedBatchSampler', 'EvalSampler', 'epoch_permutation']


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


class MixedBatchSampler(Sampler[List[Tuple[int, int]]]):
    """Batches of ``n_labelled`` labelled + ``n_unlabelled`` unlabelled samples per process (semi-supervised).

    The dataset is the concatenation ``labelled (0 .. num_labelled-1) + unlabelled (num_labelled ..)``
    (:class:`mtvif_zoo.data.MixedDataset`). An epoch is one pass over the labelled pool, exactly as
    :class:`ResumableBatchSampler` makes it (order from ``default_rng([seed, epoch])``, global batches
    of ``n_labelled * world_size``, the incomplete last one dropped). The unlabelled pool is an endless
    stream of permutations ``default_rng([seed, 1, cycle])`` (``cycle`` = how many times it was used
    up), read ``n_unlabelled * world_size`` at a time, one global batch after another across epochs,
    so the unlabelled pairs are used evenly whatever their number. Every batch's content is a
    function of ``(seed, epoch, batch)`` only: ``set_epoch(epoch, start_batch)`` resumes mid-epoch.
    Unlabelled keys are ``(cycle, index)`` so their crops / flips differ from one cycle to the next.
    ``n_labelled = 0`` (fusion-only training on unlabelled pairs): an epoch is one pass over the
    unlabelled pool instead.
    """

    def __init__(self, num_labelled: int, num_unlabelled: int, n_labelled: int, n_unlabelled: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if n_labelled < 0 or n_unlabelled < 1 or (n_labelled and num_labelled < 1) or num_unlabelled < 1:
            raise ValueError(f'MixedBatchSampler needs unlabelled samples and n_unlabelled >= 1, got '
                             f'{num_unlabelled} unlabelled, n_unlabelled {n_unlabelled}')
        self.num_labelled, self.num_unlabelled = int(num_labelled), int(num_unlabelled)
        self.n_labelled, self.n_unlabelled = int(n_labelled), int(n_unlabelled)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        self.start_batch = 0

    @property
    def batch_size(self) -> int:
        return self.n_labelled + self.n_unlabelled

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        if self.n_labelled:
            return self.num_labelled // (self.n_labelled * self.world_size)
        return self.num_unlabelled // (self.n_unlabelled * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)

    def _unlabelled(self, batch: int) -> List[Tuple[int, int]]:
        g = self.n_unlabelled * self.world_size
        start = (self.epoch * self.batches_per_epoch + batch) * g + self.rank * self.n_unlabelled
        out, perms = [], {}
        for pos in range(start, start + self.n_unlabelled):
            cycle, k = divmod(pos, self.num_unlabelled)
            if cycle not in perms:
                perms[cycle] = np.random.default_rng([self.seed, 1, cycle]).permutation(self.num_unlabelled)
            out.append((cycle, self.num_labelled + int(perms[cycle][k])))
        return out

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        g = self.n_labelled * self.world_size
        order = epoch_permutation(self.num_labelled, self.seed, self.epoch) if self.n_labelled else None
        for b in range(self.start_batch, self.batches_per_epoch):
            lab = []
            if order is not None:
                chunk = order[b * g:(b + 1) * g][self.rank * self.n_labelled:(self.rank + 1) * self.n_labelled]
                lab = [(self.epoch, int(i)) for i in chunk]
            yield lab + self._unlabelled(b)


class EvalSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: the ranks together see each sample exactly once."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, num_samples, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)
