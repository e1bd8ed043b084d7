"""Fusion backbones: feature extraction + cross-modal fusion, one file per original network.

Every backbone follows one small contract so that any head can sit on it (Sec. 3.2 of the
MultiTaskVIF paper: "the decoder of a fusion backbone is replaced by the Multi-Task Head"):

* ``__init__(in_chans=3, **kwargs)``: ``in_chans`` is the channel count of *each* modality
  (3 = RGB visible + IR replicated to 3 channels, 1 = the Y-channel mode of Table 6, v).
* ``forward(vis, ir) -> Tensor`` returns **one** fused feature map ``B x num_features x H x W`` at
  the input resolution.
* attributes ``num_features`` (channels of that map), ``pad_multiple`` (H and W must be a
  multiple of it; :func:`mtvif_zoo.fuse` pads and crops back) and ``original_decoder`` (the class
  of the original network's decoder, built by the ``cnn`` head as
  ``original_decoder(in_chs=num_features, out_chans=in_chans)``; its ``out_conv`` names the conv
  that writes the image);
* for timm's model API: ``first_conv`` (the stem convs that read the inputs), ``feature_info`` /
  ``num_feature_levels`` and ``forward_intermediates(vis, ir) -> (output, [fused maps per stage or
  scale])``, ``set_grad_checkpointing(enable)``.
"""
from ._registry import (
    create_backbone,
    get_backbone_cls,
    get_original_converter,
    list_backbones,
    list_original_converters,
    register_backbone,
    register_original_converter,
)

__all__ = ['register_backbone', 'create_backbone', 'list_backbones', 'get_backbone_cls', 'register_original_converter',
           'get_original_converter', 'list_original_converters']

# import order = registration order; each module registers itself
from .seafusion import SeAFusionBackbone, SeAFusionDecoder  # noqa: E402,F401
from .segmif import SegMiFBackbone, SegMiFDecoder  # noqa: E402,F401
from .swinfusion import SwinFusionBackbone, SwinFusionDecoder  # noqa: E402,F401
from .ufuser import UfuserBackbone, UfuserDecoder  # noqa: E402,F401
