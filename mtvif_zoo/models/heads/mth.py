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

from ..layers._fast import (
    conv_act,
    fast_enabled,
    linear_act,
    linear_add,
    output_conv,
    pointwise,
    to_channels_last,
    use_fast,
)
from ..layers.channel_attention import ChannelContextAttention
from ..layers.conv import conv_bn_relu, conv_lrelu
from ._registry import register_head

__all__ = ['ChannelContextAttention', 'HIAF', 'MultiTaskHead', 'MultiTaskHeadNoHIA']


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

    fast_path = True  # fast formulation (see mtvif_zoo.models.layers._fast)

    def forward(self, f_re: torch.Tensor, f_seg: torch.Tensor) -> torch.Tensor:
        if fast_enabled(self):
            return self.forward_fast(f_re, f_seg)
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

    def forward_fast(self, f_re: torch.Tensor, f_seg: torch.Tensor) -> torch.Tensor:
        """The fast formulation (autograd-capable; the same function as the plain path up to fp32
        rounding):

        * tokens are views of channels_last maps (no rearrange copies), the 1x1 ``align`` is a
          matrix product over the pixels;
        * keys and values are never materialised: with the bias-free ``kv`` projection
          ``k^T v = W_k (t^T t) W_v^T``, so each attention needs the ``C x C`` Gram matrix of its
          context tokens and two ``C x C`` products per batch item
          (:meth:`ChannelContextAttention.folded_context`);
        * ``q @ ctx`` for all heads is ``q @ blockdiag(ctx)``, and that block-diagonal matrix is
          folded into the first MLP layer, ``fc1(cat(q_h M_h, q_l M_l)) = q_h (M_h W_1a^T) +
          q_l (M_l W_1b^T) + b_1``: neither ``f_h``, ``f_l`` nor their concatenation is built;
        * with autograd off on CPU (:func:`use_fast`), ``Linear`` + ReLU and ``Linear`` + residual
          add as single oneDNN matmuls (the same bits as the separate ops).
        """
        B, C, H, W = f_re.shape
        N = H * W
        f_re = to_channels_last(f_re, self)
        k = use_fast(f_re, self)
        t_re = f_re.permute(0, 2, 3, 1).reshape(B, N, C)  # a view of a channels_last map
        f_seg = pointwise(self.align, to_channels_last(f_seg, self), kernels=k)
        if f_seg.shape[-2:] != (H, W):
            f_seg = F.interpolate(f_seg, size=(H, W), mode='bilinear', align_corners=False)
        t_seg = f_seg.permute(0, 2, 3, 1).reshape(B, N, C)
        if k:
            e_re = linear_act(self.embed_re[0], t_re, 'relu')  # [t_r^h | t_r^l]
            e_seg = linear_act(self.embed_seg[0], t_seg, 'relu')  # [t_s^h | t_s^l]
        else:
            e_re, e_seg = self.embed_re(t_re), self.embed_seg(t_seg)
        fc1, fc2 = self.mlp.fc1, self.mlp.fc2
        # C_h: query t_s^h, context t_r^h; C_l: query t_r^l, context t_s^l
        a_h = self.attn_h.folded_context(e_re[..., :C], fc1.weight[:, :C])  # B x C x C_hidden
        a_l = self.attn_l.folded_context(e_seg[..., C:], fc1.weight[:, C:])
        a_h, a_l = a_h.to(e_seg.dtype), a_l.to(e_re.dtype)  # (fp32 under autocast)
        hidden = torch.baddbmm(fc1.bias.view(1, 1, -1), e_seg[..., :C], a_h)
        hidden = hidden.baddbmm_(e_re[..., C:], a_l.to(hidden.dtype))
        hidden = self.mlp.drop1(self.mlp.act(hidden))
        if k:
            out = linear_add(fc2, hidden.view(B * N, -1), t_re.reshape(B * N, C)).view(B, N, C)
        else:
            out = fc2(hidden) + t_re
        return self.norm(out).view(B, H, W, C).permute(0, 3, 1, 2)  # channels_last B x C x H x W


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
    def __init__(self, in_chs: int, out_chans: int = 3, num_classes: int = 9, backbone_cls=None,
                 fusion_chs: Sequence[int] = (64,), fusion_tail_chs: Sequence[int] = (32, 16),
                 seg_chs: Sequence[int] = (64,), num_heads: int = 8, use_hia: bool = True, seg_stride: int = 1,
                 drop_rate: float = 0.):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0 = fusion-only, no segmentation classifier), '
                             f'got {num_classes!r}')
        self.use_hia = use_hia
        self.drop_rate = float(drop_rate)
        chs = [in_chs, *fusion_chs]
        self.fusion_branch = nn.Sequential(*[conv_lrelu(a, b) for a, b in zip(chs[:-1], chs[1:])])
        self.hiaf = HIAF(fusion_chs[-1], seg_chs[-1], num_heads) if use_hia else None
        chs = [fusion_chs[-1], *fusion_tail_chs]
        self.fusion_tail = nn.Sequential(*[conv_lrelu(a, b) for a, b in zip(chs[:-1], chs[1:])])
        self.fusion_out = nn.Conv2d(chs[-1], out_chans, 3, padding=1)
        if seg_stride not in (1, 2, 4):
            raise ValueError(f'seg_stride must be 1, 2 or 4, got {seg_stride}')
        self.seg_stride = seg_stride
        self._seg_chs = (in_chs, tuple(seg_chs))
        #: width of the features the segmentation classifier's last (1x1) conv reads (timm's pre-logits)
        self.head_hidden_size = int(seg_chs[-1])
        self.seg_branch = None
        self.seg_classifier = None
        self.num_classes = 0
        if use_hia:
            self.seg_branch = self._make_seg_branch()
        self.reset_classifier(num_classes)

    def _make_seg_branch(self) -> nn.Sequential:
        in_chs, seg_chs = self._seg_chs
        chs = [in_chs, *seg_chs]
        return nn.Sequential(*[conv_bn_relu(a, b, stride=self.seg_stride if k == 0 else 1)
                               for k, (a, b) in enumerate(zip(chs[:-1], chs[1:]))])

    @property
    def has_segmentation(self) -> bool:
        return self.seg_classifier is not None

    def get_classifier(self) -> nn.Module:
        """The segmentation classifier's last layer (the 1x1 conv to ``num_classes``; timm's ``classifier``)."""
        return self.seg_classifier[-1] if self.seg_classifier is not None else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        """timm semantics on the segmentation classifier: ``0`` removes it (fusion-only head: no
        ``seg_classifier``, and no ``seg_branch`` without HIA-F); ``n > 0`` gives a fresh last 1x1
        conv to ``n`` classes (the conv + BN + ReLU before it is kept, or built if absent)."""
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0, got {num_classes!r}')
        self.num_classes = num_classes
        if num_classes == 0:
            self.seg_classifier = None
            if self.hiaf is None:
                self.seg_branch = None
            return
        if self.seg_branch is None:
            self.seg_branch = self._make_seg_branch()
        width = self.head_hidden_size
        if self.seg_classifier is None:
            self.seg_classifier = nn.Sequential(conv_bn_relu(width, width), nn.Conv2d(width, num_classes, 1))
        else:
            self.seg_classifier[1] = nn.Conv2d(width, num_classes, 1)

    @property
    def needs_seg_features(self) -> bool:
        """Whether the fused image depends on the segmentation branch (it does through HIA-F)."""
        return self.hiaf is not None

    fast_path = True  # fast path (see mtvif_zoo.models.layers._fast)

    def forward(self, x: torch.Tensor, with_seg: bool = False,
                pre_logits: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(fused, seg_logits or None)``; ``pre_logits=True``: ``(fused, features the last 1x1
        classifier conv reads)`` (``f_seg`` when there is no classifier)."""
        x = to_channels_last(x, self)  # fast path (the blocks fuse their ops themselves)
        want_seg = with_seg or pre_logits
        if want_seg and self.seg_branch is None:
            raise ValueError('this head has no segmentation branch (num_classes=0 without HIA-F)')
        f_re = self.fusion_branch(x)
        f_seg = self.seg_branch(x) if (want_seg or self.hiaf is not None) else None
        if self.hiaf is not None:
            f_re = self.hiaf(f_re, f_seg)
        f_re = self.fusion_tail(f_re)
        fused = output_conv(self.fusion_out, f_re, 'sigmoid')  # fp32 under autocast (bf16 / fp16)
        if fused is None:
            if use_fast(f_re, self):
                fused = torch.sigmoid_(conv_act(self.fusion_out, f_re))
            else:
                fused = torch.sigmoid(self.fusion_out(f_re))
        if pre_logits:
            return fused, (self.seg_classifier[0](f_seg) if self.seg_classifier is not None else f_seg)
        seg = None
        if with_seg:
            if self.seg_classifier is None:
                raise ValueError('this head has no segmentation classifier (num_classes=0)')
            if self.drop_rate and self.training:
                seg = self.seg_classifier[1](F.dropout(self.seg_classifier[0](f_seg), self.drop_rate, True))
            else:
                seg = self.seg_classifier(f_seg)
        if seg is not None and seg.shape[-2:] != x.shape[-2:]:
            seg = F.interpolate(seg, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return fused, seg

    def fusion_only(self) -> 'MultiTaskHead':
        """A deep copy without ``seg_classifier`` (and without ``seg_branch`` when there is no HIA-F)."""
        head = copy.deepcopy(self)
        head.reset_classifier(0)
        return head


@register_head('mth_nohia')
class MultiTaskHeadNoHIA(MultiTaskHead):
    """Table 6 (ii): the Multi-Task Head without HIA-F (the two branches only share the backbone)."""

    def __init__(self, in_chs: int, out_chans: int = 3, num_classes: int = 9, backbone_cls=None, **kwargs):
        kwargs['use_hia'] = False
        super().__init__(in_chs, out_chans, num_classes, backbone_cls, **kwargs)
