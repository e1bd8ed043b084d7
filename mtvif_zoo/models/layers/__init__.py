"""Blocks shared by the backbones and heads (timm keeps its own in ``timm/layers``).

* ``_fast``: the CPU inference kernels (oneDNN fused ops) and channels_last helpers, behind a
  switch that export and tracing turn off;
* :mod:`.conv`: the conv + (BN +) activation blocks of the Multi-Task Head;
* :mod:`.channel_attention`: Restormer channel attention (Ufuser) and HIA-F's channel-context
  cross attention;
* :mod:`.window`: the shifted-window token permutation, its cache and masks (SwinFusion);
* :mod:`.checkpoint`: activation checkpointing of one block call.
"""
from .channel_attention import AttentionBase, ChannelContextAttention
from .checkpoint import checkpoint_call
from .conv import ConvBNReLU, ConvLReLU, conv_bn_relu, conv_lrelu
from .window import WindowLayout, WindowLayoutCache

__all__ = ['AttentionBase', 'ChannelContextAttention', 'checkpoint_call', 'ConvBNReLU', 'ConvLReLU', 'conv_bn_relu',
           'conv_lrelu', 'WindowLayout', 'WindowLayoutCache']
