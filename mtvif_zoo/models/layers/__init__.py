"""Blocks shared by the backbones and heads (timm keeps its own in ``timm/layers``): the CPU
inference kernels and channels_last helpers (``_fast``) and activation checkpointing."""
from .checkpoint import checkpoint_call

__all__ = ['checkpoint_call']
