"""Tiny datasets and models for the training tests (a few 24x28 images, ~10 k-parameter models)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: a ~11 k-parameter MultiTaskVIF III (SeAFusion backbone + MTH with HIA-F)
TINY_MTVIF = dict(head_args=dict(fusion_chs=(8, 8), fusion_tail_chs=(8,), seg_chs=(8,)),
                  backbone_args=dict(widths=(4, 8, 8)))
#: a tiny SeAFusion baseline (cnn head, no BatchNorm anywhere)
TINY_SEAFUSION = dict(backbone_args=dict(widths=(4, 8, 8)), head_args=dict(widths=(8, 8, 8)))


def make_dataset(root: Path, n: int = 8, size=(24, 28), num_classes: int = 9, seed: int = 0,
                 labels: bool = True, splits=None) -> Path:
    """``root/{vi,ir,label}/NNN.png`` random images (``splits``: dict split -> list of indices)."""
    r = np.random.default_rng(seed)
    for d in ('vi', 'ir') + (('label',) if labels else ()):
        (root / d).mkdir(parents=True, exist_ok=True)
    h, w = size
    for k in range(n):
        Image.fromarray(r.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / 'vi' / f'{k:03d}.png')
        Image.fromarray(r.integers(0, 256, (h, w), dtype=np.uint8)).save(root / 'ir' / f'{k:03d}.png')
        if labels:
            Image.fromarray(r.integers(0, num_classes, (h, w), dtype=np.uint8)).save(root / 'label' / f'{k:03d}.png')
    if splits:
        (root / 'splits').mkdir(exist_ok=True)
        for name, idx in splits.items():
            (root / 'splits' / f'{name}.txt').write_text(''.join(f'{k:03d}\n' for k in idx))
    return root


@pytest.fixture
def tiny_data(tmp_path):
    return make_dataset(tmp_path / 'data')


@pytest.fixture
def make_data():
    return make_dataset


@pytest.fixture
def tiny_mtvif():
    return {k: dict(v) for k, v in TINY_MTVIF.items()}


@pytest.fixture
def tiny_seafusion():
    return {k: dict(v) for k, v in TINY_SEAFUSION.items()}


@pytest.fixture(autouse=True)
def _one_thread():
    """The training tests run tiny tensors: one intra-op thread is as fast and does not stall on a busy CPU."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
