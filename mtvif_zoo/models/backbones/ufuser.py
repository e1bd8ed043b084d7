"""EMMA's Ufuser backbone and its original last decoder stage (MultiTaskVIF variant II).

Written from the public original (Zhaozixiang1228/MMIF-EMMA, ``nets/Ufuser.py``; Zhao et al.,
"Equivariant multi-modality image fusion", CVPR 2024). Ufuser is a 4-level U-net with widths
``[8, 16, 32, 32]``: separate visible / infrared encoders of ``Restormer_CNN_block``\\ s
(Restormer channel attention whose qkv is a 1x1 conv followed by a *full* 3x3 conv, a gated
depth-wise FFN, in parallel with two ResBlocks, merged by a 3x3 conv), stride-2 3x3 convs between
levels, one fusion block per scale, and a decoder with transposed-conv upsampling and skip
concatenation.

Where the split between backbone and decoder sits (the paper is silent): MultiTaskVIF's head runs
on *one* full-resolution feature map, so the backbone keeps the U-net's multi-scale aggregation
(``de_4``, ``up4``, ``de_3``, ``up3``, ``de_2``, ``up2``) and returns ``cat(up2(...), f_1)``,
16 channels at full resolution -- exactly the tensor the original feeds into ``de_1``. The
``cnn`` head (:class:`UfuserDecoder`) is the original's last stage, ``de_1`` + ``last``
(3x3 conv + sigmoid). This split makes variant II land on Table 7 (2.13 M params, 49.08 GMACs)
with a full-resolution Multi-Task Head of ~0.6 M parameters.

Layer norm: ``timm.layers.LayerNorm2d(eps=1e-5)`` equals the original ``WithBias_LayerNorm``
(biased variance, eps inside the square root); parameter names lose the original's ``.body``
level (``GlobalFeature.norm1.weight`` instead of ``GlobalFeature.norm1.body.weight``),
:func:`convert_original_state_dict` maps them. All other names follow the original.

Parity (checked locally against the original ``Ufuser`` with 1-channel inputs, its weights
re-drawn from N(0, 0.1) and copied through :func:`convert_original_state_dict`, 1x1x64x96
inputs, CPU fp32): identical parameter count (1,517,657), max abs output diff 3.3e-10 (the einops
reshapes and ``LayerNorm2d`` reorder float operations; not bitwise).
"""
from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from ..layers import checkpoint_call
from ..layers._fast import (
    conv_act,
    conv_add,
    fast_enabled,
    fconv,
    image_layer,
    output_conv,
    pointwise,
    to_channels_last,
    use_fast,
)
from ..layers.channel_attention import AttentionBase
from ._registry import register_backbone, register_original_converter

__all__ = ['RestormerCNNBlock', 'UfuserBackbone', 'UfuserDecoder', 'convert_original_state_dict']


class GatedDconvFFN(nn.Module):
    """Restormer's gated depth-wise conv feed-forward (the original's ``Mlp``)."""

    def __init__(self, in_features: int, out_features: int, ffn_expansion_factor: float = 2., bias: bool = False):
        super().__init__()
        hidden = int(in_features * ffn_expansion_factor)
        self.project_in = nn.Conv2d(in_features, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden, bias=bias,
                                padding_mode='reflect')
        self.project_out = nn.Conv2d(hidden, out_features, kernel_size=1, bias=bias)

    fast_path = True

    def forward(self, x):
        if fast_enabled(self):
            return self.forward_fast(x)
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)

    def forward_fast(self, x, residual=None):
        """``residual + ffn(x)``: the 1x1 convs as matrix products over the pixels of channels_last
        maps, the residual add fused into ``project_out``; same arithmetic with and without
        autograd (in place without)."""
        x = to_channels_last(x, self)
        k = use_fast(x, self)
        x1, x2 = fconv(self.dwconv, pointwise(self.project_in, x, kernels=k), kernels=k).chunk(2, dim=1)
        g = F.gelu(x1).mul_(x2) if k else F.gelu(x1) * x2
        return pointwise(self.project_out, g, residual=residual, kernels=k)


class GlobalFeatureExtraction(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float = 1., qkv_bias: bool = False):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-5)
        self.attn = AttentionBase(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = LayerNorm2d(dim, eps=1e-5)
        self.mlp = GatedDconvFFN(dim, dim, ffn_expansion_factor=ffn_expansion_factor)

    fast_path = True

    def forward(self, x):
        if fast_enabled(self):  # residual adds fused into the last product of each branch
            x = self.attn.forward_fast(self.norm1(x), residual=x)
            return self.mlp.forward_fast(self.norm2(x), residual=x)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode='reflect'),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode='reflect'),
        )

    fast_path = True

    def forward(self, x):
        if use_fast(x, self):
            return conv_add(self.conv[2], conv_act(self.conv[0], x, 'relu'), x)
        return self.conv(x) + x


class LocalFeatureExtraction(nn.Module):
    def __init__(self, dim: int, num_blocks: int = 2):
        super().__init__()
        self.Extraction = nn.Sequential(*[ResBlock(dim) for _ in range(num_blocks)])

    def forward(self, x):
        return self.Extraction(x)


class RestormerCNNBlock(nn.Module):
    """The original ``Restormer_CNN_block``: 3x3 embed, (global attention || 2 ResBlocks), 3x3 merge."""

    def __init__(self, in_dim: int, out_dim: int, num_heads: int = 8):
        super().__init__()
        self.embed = nn.Conv2d(in_dim, out_dim, 3, padding=1, bias=False, padding_mode='reflect')
        self.GlobalFeature = GlobalFeatureExtraction(out_dim, num_heads=num_heads)
        self.LocalFeature = LocalFeatureExtraction(out_dim)
        self.FFN = nn.Conv2d(out_dim * 2, out_dim, 3, padding=1, bias=False, padding_mode='reflect')

    fast_path = True
    #: this block's ``embed`` reads an input image (the encoders' first blocks): fp32 under autocast
    #: (:func:`~mtvif_zoo.models.layers._fast.image_layer`); set by :class:`UfuserBackbone`
    reads_image = False

    def forward(self, x):
        x = to_channels_last(x, self)
        k = use_fast(x, self)
        if k:
            x = image_layer(lambda t: conv_act(self.embed, t), x) if self.reads_image else conv_act(self.embed, x)
            return conv_act(self.FFN, torch.cat((self.GlobalFeature(x), self.LocalFeature(x)), 1))
        x = image_layer(self.embed, x) if self.reads_image else self.embed(x)
        return self.FFN(torch.cat((self.GlobalFeature(x), self.LocalFeature(x)), 1))


def _down(chs: int) -> nn.Conv2d:
    return nn.Conv2d(chs, chs, 3, stride=2, padding=1, bias=False, padding_mode='reflect')


def _up(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(in_chs, out_chs, 4, 2, 1, bias=False), nn.ReLU())


@register_backbone('ufuser')
class UfuserBackbone(nn.Module):
    """Ufuser encoders + per-scale fusion + U-net aggregation; output 16 channels at full resolution.

    Feature levels: the per-scale fusion blocks ``f_1`` .. ``f_4`` (8 / 16 / 32 / 32 channels at
    1 / 2 / 4 / 8 x reduction); the output aggregates them (16 channels, full resolution)."""
    pad_multiple = 8
    fast_path = True
    first_conv = ('V_en_1.embed', 'I_en_1.embed')
    num_feature_levels = 4  # len(feature_info)

    def __init__(self, in_chans: int = 3, channels: Sequence[int] = (8, 16, 32, 32)):
        super().__init__()
        c = list(channels)
        self.in_chans = in_chans
        for m in ('V', 'I'):
            setattr(self, f'{m}_en_1', RestormerCNNBlock(in_chans, c[0]))
            getattr(self, f'{m}_en_1').reads_image = True  # the stems (first_conv): fp32 under autocast
            for lvl in (2, 3, 4):
                setattr(self, f'{m}_en_{lvl}', RestormerCNNBlock(c[lvl - 2], c[lvl - 1]))
            for lvl in (1, 2, 3):
                setattr(self, f'{m}_down{lvl}', _down(c[lvl - 1]))
        for lvl in (1, 2, 3, 4):
            setattr(self, f'f_{lvl}', RestormerCNNBlock(c[lvl - 1] * 2, c[lvl - 1]))
        self.up4 = _up(c[3], c[2])
        self.up3 = _up(c[2], c[1])
        self.up2 = _up(c[1], c[0])
        self.de_2 = RestormerCNNBlock(c[1] * 2, c[1])
        self.de_3 = RestormerCNNBlock(c[2] * 2, c[2])
        self.de_4 = RestormerCNNBlock(c[3], c[3])
        self.num_features = 2 * c[0]
        self.feature_info = [dict(num_chs=c[k], reduction=2 ** k, module=f'f_{k + 1}') for k in range(4)]
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every Restormer-CNN block in training."""
        self.grad_checkpointing = enable

    def _block(self, name: str, x):
        return checkpoint_call(self.grad_checkpointing, getattr(self, name), x)

    def _encode(self, x, m: str):
        f1 = self._block(f'{m}_en_1', x)
        f2 = self._block(f'{m}_en_2', getattr(self, f'{m}_down1')(f1))
        f3 = self._block(f'{m}_en_3', getattr(self, f'{m}_down2')(f2))
        f4 = self._block(f'{m}_en_4', getattr(self, f'{m}_down3')(f3))
        return f1, f2, f3, f4

    def forward_intermediates(self, vis, ir):
        """``(output, [f_1, f_2, f_3, f_4])``: :meth:`forward`'s output and the fused map of every scale."""
        h, w = vis.shape[-2:]
        if h % self.pad_multiple or w % self.pad_multiple:
            raise ValueError(
                f'Ufuser needs H and W divisible by {self.pad_multiple}, got {h}x{w}; '
                'pad the inputs (mtvif_zoo.fuse() does this for you)')
        vis, ir = to_channels_last(vis, self), to_channels_last(ir, self)
        fi = self._encode(ir, 'I')
        fv = self._encode(vis, 'V')
        f1, f2, f3, f4 = (self._block(f'f_{n}', torch.cat((a, b), 1)) for n, a, b in zip((1, 2, 3, 4), fi, fv))
        out = self.up4(self._block('de_4', f4))
        out = self.up3(self._block('de_3', torch.cat((out, f3), 1)))
        out = self.up2(self._block('de_2', torch.cat((out, f2), 1)))
        return torch.cat((out, f1), 1), [f1, f2, f3, f4]

    def forward(self, vis, ir):
        return self.forward_intermediates(vis, ir)[0]


class UfuserDecoder(nn.Module):
    """The original Ufuser's last stage: ``de_1`` (Restormer-CNN block ``in -> 8``) + 3x3 conv + sigmoid."""

    out_conv = 'last.0'  # the conv that writes the fused image (``in_chans`` adaptation)

    def __init__(self, in_chs: int = 16, out_chans: int = 3, width: int = 8):
        super().__init__()
        self.de_1 = RestormerCNNBlock(in_chs, width)
        self.last = nn.Sequential(nn.Conv2d(width, out_chans, 3, padding=1, padding_mode='reflect'), nn.Sigmoid())

    fast_path = True

    def forward(self, x):
        x = self.de_1(to_channels_last(x, self))
        out = output_conv(self.last[0], x, 'sigmoid')  # fp32 under autocast (bf16 / fp16)
        if out is not None:
            return out
        if use_fast(x, self):
            return torch.sigmoid_(conv_act(self.last[0], x))
        return self.last(x)


@register_original_converter('ufuser')
def convert_original_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map an original ``Ufuser`` state dict to this zoo's ``{'backbone.*', 'head.decoder.*'}`` keys."""
    out = {}
    for k, v in state_dict.items():
        k2 = k.replace('.body.', '.')
        if k2.startswith(('de_1.', 'last.')):
            out[f'head.decoder.{k2}'] = v
        else:
            out[f'backbone.{k2}'] = v
    return out


UfuserBackbone.original_decoder = UfuserDecoder
