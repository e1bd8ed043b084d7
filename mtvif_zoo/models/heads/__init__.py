"""Heads that turn a backbone's fused feature map into a fused image (and segmentation logits).

Contract shared by every head (so any head sits on any backbone):

* ``__init__(in_chs, out_chans, num_classes, backbone_cls=None, **cfg)``;
* ``forward(x, with_seg: bool) -> (fused, seg_logits or None)``; ``with_seg=False`` must not run
  the segmentation classifier (inference path, Sec. 3.3: "only the fused image is needed");
* ``has_segmentation`` (does the head predict segmentation at all) and ``fusion_only()`` (a copy
  without the parameters the fused image does not depend on).
"""
from ._registry import create_head, get_head_cls, list_heads, register_head

__all__ = ['register_head', 'create_head', 'list_heads', 'get_head_cls']

from .cnn import CNNHead  # noqa: E402,F401
from .mth import HIAF, MultiTaskHead  # noqa: E402,F401
