"""The Multi-Task Head (MTH) with HIA-F, Sec. 3.3 of MultiTaskVIF (Zhao, Howes, Zhang, 2025).

The MTH replaces a fusion backbone's decoder. It has two CNN branches on the backbone's fused
feature map, both at full resolution:

* **fusion reconstruction branch** (``fusion_branch``): 3x3 conv + LeakyReLU(0.2) layers give
  ``f_re``; :class:`HIAF` injects segmentation semantics into it (``f_RE``); further 3x3 conv +
  LeakyReLU layers and a sigmoid give the fused image in [0, 1];
* **segmentation branch** (``seg_branch`` + ``seg_classifier``): 3x3 conv + BN + ReLU layers give
  ``f_seg`` (which HIA-F also consumes), then the classifier (3x3 conv + BN + ReLU + 1x1 conv)
  gives per-pixel logits for ``num_classes`` classes.

At inference only the fused image is needed: ``forward(x, with_seg=False)`` never runs
``seg_classifier`` and :meth:`MultiTaskHead.fusion_only` drops it (for ``mth_nohia`` the whole
segmentation branch goes, since the fused image no longer depends on it).

HIA-F ("hierarchical interactive attention for fusion"), following the paper's description and
the closest public code, SegMiF's ``CrossPath`` / ``CrossAttention`` (itself from CMX):

1. a 1x1 conv aligns ``f_seg`` to the width of ``f_re``;
2. channel embedding per stream: ``Linear(C -> 2C) + ReLU``, split in two halves -> high-level
   tokens ``t^h`` and low-level tokens ``t^l`` (``t_s^h, t_s^l`` from f_seg; ``t_r^h, t_r^l`` from
   f_re);
3. ``C_h``: query ``t_s^h``, key / value from ``t_r^h``; ``C_l``: query ``t_r^l``, key / value from
   ``t_s^l``. Both are channel-context ("efficient") attention as in SegMiF: per head,
   ``ctx = softmax_over_keys(k^T v * d^-0.5)`` (d x d), output ``q @ ctx``; cost linear in H*W;
4. aggregation: ``f_RE = LayerNorm(f_re + MLP(concat(f_h, f_l)))`` with timm's ``Mlp``
   (2C -> C -> C, GELU).

Choices where the paper is silent: the activation/normalisation of each branch (fusion branch
without normalisation like the SeAFusion / SegMiF decoders it replaces, segmentation branch with
BN as usual for segmentation), the classifier layout, 8 attention heads, sigmoid output, and the
branch widths, which are set per variant so that the whole multi-task model matches Table 7's
parameter count and MACs (see ``mtvif_zoo.models.multitaskvif.MTH_CFGS``).
"""
import copy
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp

from . import register_head

__all__ = ['ChannelContextAttention', 'HIAF', 'MultiTaskHead', 'MultiTaskHeadNoHIA']


def _conv_lrelu(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))


def _conv_bn_relu(in_chs: int, out_chs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))


class ChannelContextAttention(nn.Module):
    """Cross attention whose context is a per-head ``d x d`` channel matrix (linear in tokens).

    ``query`` is used as is (as in SegMiF); keys and values are a linear projection of ``context``.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'HIA-F width {dim} must be divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = rearrange(query, 'b n (h d) -> b h n d', h=self.num_heads)
        k, v = rearrange(self.kv(context), 'b n (two h d) -> two b h n d', two=2, h=self.num_heads)
        ctx = ((k.transpose(-2, -1) @ v) * self.scale).softmax(dim=-2)
        return rearrange(q @ ctx, 'b h n d -> b n (h d)')


class HIAF(nn.Module):
    """HIA-F: segmentation features guide the fusion reconstruction feature (Sec. 3.3, Fig. 3)."""

    def __init__(self, dim: int, seg_dim: int, num_heads: int = 8):
        super().__init__()
        self.align = nn.Conv2d(seg_dim, dim, 1)
        self.embed_re = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(inplace=True))
        self.embed_seg = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(inplace=True))
        self.attn_h = ChannelContextAttention(dim, num_heads)
        self.attn_l = ChannelContextAttention(dim, num_heads)
        self.mlp = Mlp(2 * dim, hidden_features=dim, out_features=dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, f_re: torch.Tensor, f_seg: torch.Tensor) -> torch.Tensor:
        h, w = f_re.shape[-2:]
        t_re = rearrange(f_re, 'b c h w -> b (h w) c')
        f_seg = self.align(f_seg)
        if f_seg.shape[-2:] != (h, w):  # segmentation branch at reduced resolution
            f_seg = F.interpolate(f_seg, size=(h, w), mode='bilinear', align_corners=False)
        t_seg = rearrange(f_seg, 'b c h w -> b (h w) c')
        t_r_h, t_r_l = self.embed_re(t_re).chunk(2, dim=-1)
        t_s_h, t_s_l = self.embed_seg(t_seg).chunk(2, dim=-1)
        f_h = self.attn_h(t_s_h, t_r_h)
        f_l = self.attn_l(t_r_l, t_s_l)
        out = self.norm(t_re + self.mlp(torch.cat((f_h, f_l), dim=-1)))
        return rearrange(out, 'b (h w) c -> b c h w', h=h, w=w)


@register_head('mth')
class MultiTaskHead(nn.Module):
    """Multi-Task Head: fusion reconstruction branch with HIA-F + segmentation branch.

    Args:
        in_chs: channels of the backbone's fused feature map.
        out_chans: channels of the fused image (3, or 1 in the Y-channel mode).
        num_classes: segmentation classes (9 for MSRS / MFNet).
        fusion_chs: widths of the fusion-branch convs before HIA-F (the last one is ``f_re``'s).
        fusion_tail_chs: widths of the convs after HIA-F, before the output conv.
        seg_chs: widths of the segmentation-branch convs (the last one is ``f_seg``'s).
        num_heads: attention heads in HIA-F.
        use_hia: ``False`` gives Table 6 (ii), the MTH without HIA-F (registered as ``mth_nohia``).
        seg_stride: 1 runs the segmentation branch at full resolution; 2 starts it with a stride-2
            conv (``f_seg`` and the logits are upsampled bilinearly to full resolution), which
            variant I uses to meet Table 7's parameter and MAC budgets together.
    """
    has_segmentation = True

    def __init__(self, in_chs: int, out_chans: int = 3, num_classes: int = 9, backbone_cls=None,
                 fusion_chs: Sequence[int] = (64,), fusion_tail_chs: Sequence[int] = (32, 16),
                 seg_chs: Sequence[int] = (64,), num_heads: int = 8, use_hia: bool = True, seg_stride: int = 1):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f'the multi-task head needs num_classes >= 1, got {num_classes}; '
                             "use head='cnn' for a fusion-only network")
        self.num_classes = num_classes
        self.use_hia = use_hia
        chs = [in_chs, *fusion_chs]
        self.fusion_branch = nn.Sequential(*[_conv_lrelu(a, b) for a, b in zip(chs[:-1], chs[1:])])
        self.hiaf = HIAF(fusion_chs[-1], seg_chs[-1], num_heads) if use_hia else None
        chs = [fusion_chs[-1], *fusion_tail_chs]
        self.fusion_tail = nn.Sequential(*[_conv_lrelu(a, b) for a, b in zip(chs[:-1], chs[1:])])
        self.fusion_out = nn.Conv2d(chs[-1], out_chans, 3, padding=1)
        if seg_stride not in (1, 2, 4):
            raise ValueError(f'seg_stride must be 1, 2 or 4, got {seg_stride}')
        self.seg_stride = seg_stride
        chs = [in_chs, *seg_chs]
        self.seg_branch = nn.Sequential(*[_conv_bn_relu(a, b, stride=seg_stride if k == 0 else 1)
                                          for k, (a, b) in enumerate(zip(chs[:-1], chs[1:]))])
        self.seg_classifier = nn.Sequential(_conv_bn_relu(seg_chs[-1], seg_chs[-1]),
                                            nn.Conv2d(seg_chs[-1], num_classes, 1))

    @property
    def needs_seg_features(self) -> bool:
        """Whether the fused image depends on the segmentation branch (it does through HIA-F)."""
        return self.hiaf is not None

    def forward(self, x: torch.Tensor, with_seg: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        f_re = self.fusion_branch(x)
        f_seg = self.seg_branch(x) if (with_seg or self.hiaf is not None) else None
        if self.hiaf is not None:
            f_re = self.hiaf(f_re, f_seg)
        fused = torch.sigmoid(self.fusion_out(self.fusion_tail(f_re)))
        seg = self.seg_classifier(f_seg) if with_seg else None
        if seg is not None and seg.shape[-2:] != x.shape[-2:]:
            seg = F.interpolate(seg, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return fused, seg

    def fusion_only(self) -> 'MultiTaskHead':
        """A deep copy without ``seg_classifier`` (and without ``seg_branch`` when there is no HIA-F)."""
        head = copy.deepcopy(self)
        head.seg_classifier = None
        if head.hiaf is None:
            head.seg_branch = None
        head.has_segmentation = False
        return head


@register_head('mth_nohia')
class MultiTaskHeadNoHIA(MultiTaskHead):
    """Table 6 (ii): the Multi-Task Head without HIA-F (the two branches only share the backbone)."""

    def __init__(self, in_chs: int, out_chans: int = 3, num_classes: int = 9, backbone_cls=None, **kwargs):
        kwargs['use_hia'] = False
        super().__init__(in_chs, out_chans, num_classes, backbone_cls, **kwargs)
