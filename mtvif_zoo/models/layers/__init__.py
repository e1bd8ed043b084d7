"""Blocks shared by the backbones and heads (timm keeps its own in ``timm/layers``)."""
from .checkpoint import checkpoint_call

__all__ = ['checkpoint_call']
