"""``--device`` checked the same way by every command that takes it (fuse, eval, train, bench,
profile), before any model is built."""

__all__ = ['cli_device']


def cli_device(name):
    """``--device`` as a ``torch.device`` (None: cuda if available, else cpu), checked before the model
    is built: an unknown name, a CUDA / MPS device this machine does not have, or ``meta`` (no data)
    is a one-line error naming the devices there are."""
    import torch
    if not name:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    there = 'cpu' + (f', cuda, cuda:0 ... cuda:{n_cuda - 1}' if n_cuda else ' (no CUDA device on this machine)')
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f'--device {name!r} is not a device name; use {there}') from None
    if device.type == 'cuda' and (not n_cuda or (device.index or 0) >= n_cuda):
        raise ValueError(f'--device {name!r}: no such CUDA device; use {there}')
    if device.type == 'meta':
        raise ValueError(f'--device meta holds no data (shapes only); use {there}')
    if device.type == 'mps' and not (getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()):
        raise ValueError(f'--device mps: MPS is not available on this machine; use {there}')
    return device
