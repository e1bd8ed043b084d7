"""``cnn`` head: the backbone's original decoder, so the original fusion networks are reproduced.

With this head the zoo builds the baselines of Table 4/5 (SeAFusion, SwinFusion, EMMA's Ufuser,
SegMiF) exactly: same layers, same parameter names under ``head.decoder.*``. With the default
``num_classes=0`` there is no segmentation branch and the training-mode forward returns
``(fused, None)``; ``num_classes=N`` adds a 1x1 classifier on the backbone's feature map.

On a backbone other than its own (``decoder='seafusion'`` on the SegMiF backbone, say) the chosen
decoder is built with ``in_chs`` = that backbone's ``num_features``.
"""
import copy
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F

from ..backbones import get_backbone_cls
from ._registry import register_head

__all__ = ['CNNHead']


@register_head('cnn')
class CNNHead(nn.Module):
    """The original decoder; ``num_classes > 0`` adds a 1x1 segmentation classifier on the
    backbone's feature map (``seg_classifier``, timm's "fresh classifier" for a baseline)."""

    def __init__(self, in_chs: int, out_chans: int = 3, num_classes: int = 0, backbone_cls=None,
                 decoder: Optional[str] = None, drop_rate: float = 0., **decoder_kwargs):
        super().__init__()
        if decoder is not None:
            backbone_cls = get_backbone_cls(decoder)
        if backbone_cls is None:
            raise ValueError("the 'cnn' head needs the backbone whose original decoder it builds "
                             "(pass decoder='seafusion' | 'swinfusion' | 'ufuser' | 'segmif')")
        self.decoder_name = backbone_cls.backbone_name
        self.decoder = backbone_cls.original_decoder(in_chs=in_chs, out_chans=out_chans, **decoder_kwargs)
        self.head_hidden_size = int(in_chs)
        self.drop_rate = float(drop_rate)
        self.seg_classifier = None
        self.reset_classifier(num_classes)

    @property
    def has_segmentation(self) -> bool:
        return self.seg_classifier is not None

    def get_classifier(self) -> nn.Module:
        return self.seg_classifier if self.seg_classifier is not None else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0 = the original fusion network), got {num_classes!r}')
        self.num_classes = num_classes
        self.seg_classifier = nn.Conv2d(self.head_hidden_size, num_classes, 1) if num_classes else None

    def forward(self, x, with_seg: bool = False, pre_logits: bool = False):
        fused = self.decoder(x)
        if pre_logits:
            return fused, x
        if not with_seg:
            return fused, None
        if self.seg_classifier is None:
            raise ValueError('this head has no segmentation classifier (num_classes=0)')
        if self.drop_rate and self.training:
            x = F.dropout(x, self.drop_rate, True)
        return fused, self.seg_classifier(x)

    def fusion_only(self) -> 'CNNHead':
        head = copy.deepcopy(self)
        head.reset_classifier(0)
        return head
