"""Shared fixtures: the real image pairs in ``../shared/data`` (skipped when absent) and small inputs."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
EXAMPLES = REPO / 'examples'

# the suite never touches the network: a test that needs the Hub runs the loopback server
os.environ.setdefault('HF_HUB_OFFLINE', '1')
# the suite compares fuse()'s default against fp32 references: on CPUs with native bf16 units the
# default would be bf16 (issue 16), so it is pinned to fp32 here, for CLI subprocesses too;
# tests/test_bf16.py checks the bf16 default and path explicitly
os.environ['MTVIF_CPU_BF16'] = '0'
torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_data(sub: str = '') -> Path:
    """Path under ``../shared/data``; skips the test with the reason when it is not there."""
    p = SHARED_DATA / sub
    if not p.exists():
        pytest.skip(f'real image data not available: {p} is missing (it ships beside the repo, not in it)')
    return p


@pytest.fixture
def shared():
    return shared_data


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def small_pair(rng):
    """A 40x56 RGB visible uint8 image and a grey infrared uint8 image (not multiples of 8 on purpose)."""
    vis = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    ir = rng.integers(0, 256, size=(40, 56), dtype=np.uint8)
    return vis, ir
