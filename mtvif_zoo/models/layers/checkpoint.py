"""Activation (gradient) checkpointing of one module call, switched by the module's owner.

``set_grad_checkpointing`` on a backbone sets its ``grad_checkpointing`` flag; the backbone then
runs its blocks through :func:`checkpoint_call`, which recomputes a block's activations in the
backward pass instead of storing them (less training memory, one more forward per block). It is a
plain call when the flag is off or autograd is off, so inference never pays for it.
"""
import torch
from torch.utils.checkpoint import checkpoint

__all__ = ['checkpoint_call']


def checkpoint_call(enabled: bool, module, *args):
    """``module(*args)``, through ``torch.utils.checkpoint`` (non-reentrant) when ``enabled`` and grad is on."""
    if enabled and torch.is_grad_enabled() and not torch.jit.is_scripting():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)
