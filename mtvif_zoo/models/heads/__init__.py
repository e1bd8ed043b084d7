"""Heads that turn a backbone's fused feature map into a fused image (and segmentation logits).

Contract shared by every head (so any head sits on any backbone):

* ``__init__(in_chs, out_chans, num_classes, backbone_cls=None, **cfg)``;
* ``forward(x, with_seg: bool) -> (fused, seg_logits or None)``; ``with_seg=False`` must not run
  the segmentation classifier (inference path, Sec. 3.3: "only the fused image is needed");
* ``has_segmentation`` (does the head predict segmentation at all) and ``fusion_only()`` (a copy
  without the parameters the fused image does not depend on).
"""
from typing import Callable, Dict, List, Type

import torch.nn as nn

__all__ = ['register_head', 'create_head', 'list_heads', 'get_head_cls']

_HEADS: Dict[str, Type[nn.Module]] = {}


def register_head(name: str) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    def _register(cls):
        if name in _HEADS and _HEADS[name] is not cls:
            raise ValueError(f'head {name!r} is already registered by {_HEADS[name].__name__}')
        _HEADS[name] = cls
        return cls
    return _register


def list_heads() -> List[str]:
    return sorted(_HEADS)


def get_head_cls(name: str) -> Type[nn.Module]:
    try:
        return _HEADS[name]
    except KeyError:
        raise ValueError(f'unknown head {name!r}; valid heads: {", ".join(list_heads())}') from None


def create_head(name: str, **kwargs) -> nn.Module:
    return get_head_cls(name)(**kwargs)


from .cnn import CNNHead  # noqa: E402,F401
from .mth import HIAF, MultiTaskHead  # noqa: E402,F401
