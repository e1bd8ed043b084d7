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
  ``original_decoder(in_chs=num_features, out_chans=in_chans)``).
"""
from typing import Callable, Dict, List, Type

import torch.nn as nn

__all__ = ['register_backbone', 'create_backbone', 'list_backbones', 'get_backbone_cls']

_BACKBONES: Dict[str, Type[nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    """Class decorator: make a backbone buildable by name (``create_model(..., backbone=name)``)."""
    def _register(cls: Type[nn.Module]) -> Type[nn.Module]:
        if name in _BACKBONES and _BACKBONES[name] is not cls:
            raise ValueError(f'backbone {name!r} is already registered by {_BACKBONES[name].__name__}')
        _BACKBONES[name] = cls
        cls.backbone_name = name
        return cls
    return _register


def list_backbones() -> List[str]:
    return sorted(_BACKBONES)


def get_backbone_cls(name: str) -> Type[nn.Module]:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ValueError(
            f'unknown backbone {name!r}; valid backbones: {", ".join(list_backbones())}') from None


def create_backbone(name: str, in_chans: int = 3, **kwargs) -> nn.Module:
    if in_chans not in (1, 3):
        raise ValueError(
            f'in_chans must be 1 (Y-channel mode) or 3 (RGB + IR replicated to 3 channels), got {in_chans!r}')
    return get_backbone_cls(name)(in_chans=in_chans, **kwargs)


# import order = registration order; each module registers itself
from .seafusion import SeAFusionBackbone, SeAFusionDecoder  # noqa: E402,F401
from .segmif import SegMiFBackbone, SegMiFDecoder  # noqa: E402,F401
from .swinfusion import SwinFusionBackbone, SwinFusionDecoder  # noqa: E402,F401
from .ufuser import UfuserBackbone, UfuserDecoder  # noqa: E402,F401
