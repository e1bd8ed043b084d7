"""SeAFusion backbone and its original decoder (MultiTaskVIF variant III, Table 7).

Written from the public original (Linfeng-Tang/SeAFusion, ``FusionNet.py``; Tang et al.,
"Image fusion in the loop of high-level vision tasks", Information Fusion 2022):

* per modality ``ConvLeakyRelu2d(in->16)`` -> ``RGBD(16->32)`` -> ``RGBD(32->48)``; the two
  48-channel maps are concatenated into the 96-channel fused feature map (full resolution);
* RGBD ("gradient residual dense block") = dense block (two 3x3 conv + LeakyReLU(0.2), dense
  concat, 1x1 ``convdown``) + Sobel branch (depthwise Sobel init, trainable, ``|gx| + |gy|``,
  1x1 ``convup``), summed, LeakyReLU(0.1);
* decoder: 3x3 convs 96 -> 64 -> 32 -> 16 -> out with LeakyReLU(0.2), last ``tanh / 2 + 0.5``.

Parameter names follow the original (``vis_conv.conv``, ``vis_rgbd1.dense.conv1.conv``,
``decode4.conv`` ...). Deliberate difference: the original declares a ``BatchNorm2d`` in every
decoder layer that its ``forward`` never uses; we do not create these dead modules, so an original
checkpoint loads with ``strict=False`` (only ``decode*.bn.*`` keys are unexpected).

Parity (checked locally against the original ``FusionNet`` with ``output=1``, 1-channel inputs,
its random weights copied by name, 1x1x64x80 inputs, CPU fp32): identical parameter shapes except
the unused BN (original 166,883 parameters = ours 166,657 + 226 BN), outputs bitwise equal.
"""
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import checkpoint_call
from ..layers._fast import (
    conv_act,
    fast_enabled,
    fconv,
    image_layer,
    output_conv,
    pointwise,
    to_channels_last,
    use_fast,
)
from ._registry import register_backbone, register_original_converter

__all__ = ['SeAFusionBackbone', 'SeAFusionDecoder', 'convert_original_state_dict']


class ConvLeakyRelu2d(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=kernel_size, padding=padding)

    fast_path = True  # fast path (see ..layers._fast)

    def forward(self, x):
        if fast_enabled(self):
            x = to_channels_last(x, self)
            return fconv(self.conv, x, 'leaky_relu', [0.2], use_fast(x, self))
        return F.leaky_relu(self.conv(x), negative_slope=0.2)


class Sobelxy(nn.Module):
    """Trainable depthwise Sobel filters initialised to the x / y kernels; returns ``|gx| + |gy|``."""

    def __init__(self, channels: int):
        super().__init__()
        sobel = torch.tensor([[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]])
        self.convx = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.convy = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        with torch.no_grad():
            self.convx.weight.copy_(sobel.expand_as(self.convx.weight))
            self.convy.weight.copy_(sobel.t().expand_as(self.convy.weight))

    fast_path = True

    def forward(self, x):
        if fast_enabled(self):
            x = to_channels_last(x, self)
            if use_fast(x, self):  # the same ops, in place
                return conv_act(self.convx, x).abs_().add_(conv_act(self.convy, x).abs_())
        return self.convx(x).abs() + self.convy(x).abs()


class Conv1(nn.Module):
    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=1)

    fast_path = True

    def forward(self, x):
        if fast_enabled(self):  # a matrix product over the pixels of the channels_last map
            x = to_channels_last(x, self)
            return pointwise(self.conv, x, kernels=use_fast(x, self))
        return self.conv(x)


class DenseBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLeakyRelu2d(channels, channels)
        self.conv2 = ConvLeakyRelu2d(2 * channels, channels)

    def forward(self, x):
        x = torch.cat((x, self.conv1(x)), dim=1)
        return torch.cat((x, self.conv2(x)), dim=1)


class RGBD(nn.Module):
    """Gradient residual dense block (the original's ``RGBD``, "GRDB" in the SeAFusion paper)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.dense = DenseBlock(in_chs)
        self.convdown = Conv1(3 * in_chs, out_chs)
        self.sobelconv = Sobelxy(in_chs)
        self.convup = Conv1(in_chs, out_chs)

    fast_path = True  # fast path (see ..layers._fast)

    def forward(self, x):
        if fast_enabled(self):
            return self.forward_fast(x)
        x1 = self.convdown(self.dense(x))
        x2 = self.convup(self.sobelconv(x))
        return F.leaky_relu(x1 + x2, negative_slope=0.1)

    def forward_fast(self, x):
        """channels_last maps, the 1x1 convs as matrix products over the pixels with the sum fused
        into ``convup``'s; with autograd off on CPU every conv + activation / add is one oneDNN
        primitive (the same bits as with autograd on)."""
        x = to_channels_last(x, self)
        k = use_fast(x, self)
        x1 = self.convdown(self.dense(x))
        y = pointwise(self.convup.conv, self.sobelconv(x), residual=x1, kernels=k)  # convup(...) + x1 fused
        return F.leaky_relu_(y, 0.1) if k else F.leaky_relu(y, 0.1)


@register_backbone('seafusion')
class SeAFusionBackbone(nn.Module):
    """SeAFusion feature extraction + fusion (concatenation); output 96 channels, full resolution.

    Feature levels (``feature_info``, :meth:`forward_intermediates`): ``cat(vis, ir)`` after each
    of the three stages (stem conv, RGBD 1, RGBD 2), 32 / 64 / 96 channels, all at full resolution."""
    pad_multiple = 1
    first_conv = ('vis_conv.conv', 'inf_conv.conv')
    num_feature_levels = 3  # len(feature_info)

    def __init__(self, in_chans: int = 3, widths=(16, 32, 48)):
        super().__init__()
        self.in_chans = in_chans
        c0, c1, c2 = widths
        self.vis_conv = ConvLeakyRelu2d(in_chans, c0)
        self.vis_rgbd1 = RGBD(c0, c1)
        self.vis_rgbd2 = RGBD(c1, c2)
        self.inf_conv = ConvLeakyRelu2d(in_chans, c0)
        self.inf_rgbd1 = RGBD(c0, c1)
        self.inf_rgbd2 = RGBD(c1, c2)
        self.num_features = 2 * c2
        self.feature_info = [dict(num_chs=2 * c, reduction=1, module=m)
                             for c, m in zip(widths, ('vis_conv', 'vis_rgbd1', 'vis_rgbd2'))]
        self.grad_checkpointing = False

    fast_path = True

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the RGBD blocks in training."""
        self.grad_checkpointing = enable

    def forward_intermediates(self, vis, ir):
        """``(output, levels)``: the fused (concatenated) map after every stage; the last is the output."""
        ck = self.grad_checkpointing
        vis, ir = to_channels_last(vis, self), to_channels_last(ir, self)
        v, i = image_layer(self.vis_conv, vis), image_layer(self.inf_conv, ir)  # fp32 under autocast
        out = [torch.cat((v, i), dim=1)]
        for bv, bi in ((self.vis_rgbd1, self.inf_rgbd1), (self.vis_rgbd2, self.inf_rgbd2)):
            v, i = checkpoint_call(ck, bv, v), checkpoint_call(ck, bi, i)
            out.append(torch.cat((v, i), dim=1))
        return out[-1], out

    def forward(self, vis, ir):
        if self.grad_checkpointing:
            return self.forward_intermediates(vis, ir)[0]
        vis, ir = to_channels_last(vis, self), to_channels_last(ir, self)  # fast path: the blocks fuse their ops
        v = self.vis_rgbd2(self.vis_rgbd1(image_layer(self.vis_conv, vis)))  # stems fp32 under autocast
        i = self.inf_rgbd2(self.inf_rgbd1(image_layer(self.inf_conv, ir)))
        return torch.cat((v, i), dim=1)


class SeAFusionDecoder(nn.Module):
    """The original SeAFusion decoder: 3x3 convs ``in -> 64 -> 32 -> 16 -> out``, ``tanh/2 + 0.5``."""

    out_conv = 'decode1.conv'  # the conv that writes the fused image (``in_chans`` adaptation)

    def __init__(self, in_chs: int = 96, out_chans: int = 3, widths=(64, 32, 16)):
        super().__init__()
        c0, c1, c2 = widths
        self.decode4 = ConvLeakyRelu2d(in_chs, c0)
        self.decode3 = ConvLeakyRelu2d(c0, c1)
        self.decode2 = ConvLeakyRelu2d(c1, c2)
        self.decode1 = nn.Module()
        self.decode1.conv = nn.Conv2d(c2, out_chans, 3, padding=1)

    fast_path = True

    def forward(self, x):
        x = self.decode2(self.decode3(self.decode4(to_channels_last(x, self))))
        out = output_conv(self.decode1.conv, x, 'tanh')  # fp32 under autocast (bf16 / fp16)
        if out is not None:
            return out / 2 + 0.5
        if use_fast(x, self):
            return torch.tanh_(conv_act(self.decode1.conv, x)).div_(2).add_(0.5)
        return torch.tanh(self.decode1.conv(x)) / 2 + 0.5
        x = self.decode2(self.decode3(self.decode4(x)))
        return torch.tanh(self.decode1.conv(x)) / 2 + 0.5


@register_original_converter('seafusion')
def convert_original_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map an original ``FusionNet`` state dict to ``{'backbone.*', 'head.decoder.*'}`` keys (unused BN dropped)."""
    return {(f'head.decoder.{k}' if k.startswith('decode') else f'backbone.{k}'): v
            for k, v in state_dict.items() if '.bn.' not in k}


SeAFusionBackbone.original_decoder = SeAFusionDecoder
