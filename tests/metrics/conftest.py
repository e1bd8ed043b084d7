"""Metric tests run torch single-threaded: the CPU kernels work in cache-sized tiles that are
single-threaded per op anyway, and on shared / oversubscribed CI cores intra-op threads only add
barrier waits (measured: up to 8x slower). The previous setting is restored after each module."""
import pytest
import torch


@pytest.fixture(autouse=True, scope='module')
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
