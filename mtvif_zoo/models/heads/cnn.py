"""``cnn`` head: the backbone's original decoder, so the original fusion networks are reproduced.

With this head the zoo builds the baselines of Table 4/5 (SeAFusion, SwinFusion, EMMA's Ufuser,
SegMiF) exactly: same layers, same parameter names under ``head.decoder.*``. There is no
segmentation branch; the model's training-mode forward returns ``(fused, None)``.

On a backbone other than its own (``decoder='seafusion'`` on the SegMiF backbone, say) the chosen
decoder is built with ``in_chs`` = that backbone's ``num_features``.
"""
from typing import Optional

import copy

import torch.nn as nn

from . import register_head
from ..backbones import get_backbone_cls

__all__ = ['CNNHead']


@register_head('cnn')
class CNNHead(nn.Module):
    has_segmentation = False

    def __init__(self, in_chs: int, out_chans: int = 3, num_classes: int = 0, backbone_cls=None,
                 decoder: Optional[str] = None, **decoder_kwargs):
        super().__init__()
        if decoder is not None:
            backbone_cls = get_backbone_cls(decoder)
        if backbone_cls is None:
            raise ValueError("the 'cnn' head needs the backbone whose original decoder it builds "
                             "(pass decoder='seafusion' | 'swinfusion' | 'ufuser' | 'segmif')")
        self.decoder_name = backbone_cls.backbone_name
        self.decoder = backbone_cls.original_decoder(in_chs=in_chs, out_chans=out_chans, **decoder_kwargs)
        self.num_classes = 0

    def forward(self, x, with_seg: bool = False):
        return self.decoder(x), None

    def fusion_only(self) -> 'CNNHead':
        return copy.deepcopy(self)
