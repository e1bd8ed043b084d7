"""SegMiF backbone (segmentation-free layout) and its original decoder (MultiTaskVIF variant IV).

Written from the public original (JinyuanLiu-CV/SegMiF, ``core/model_fusion.py``; Liu et al.,
"Multi-interactive feature learning and a full-time multi-modality benchmark for image fusion and
segmentation", ICCV 2023). SegMiF's fusion network (``Fusion_Network3_ac``) mixes SegFormer
features into the fusion path through its HIA modules; those features come from SegMiF's own
segmentation network, which is not part of MultiTaskVIF, so the zoo uses the segmentation-free
layout ``Fusion_Network_rmseg``:

* per modality ``conv1_{ir,vis}(in -> 64)`` + PReLU, then two DRDBs per modality
  (``DRDB1``/``DRDB3`` on IR, ``DRDB2``/``DRDB4`` on visible); DRDB = 5 dilated (d=2) 3x3 convs
  with growth 32 and dense concatenation, a 1x1 conv back to 64, ReLU, residual;
* fused feature map = ``cat([ir, vis])``: 128 channels at full resolution;
* decoder: 3x3 convs 128 -> 64 -> 32 -> out, each followed by the PReLU.

Choices where the original is silent or quirky:

* The original uses *one* ``nn.PReLU()`` (a single scalar) for every activation of encoder and
  decoder. Here the backbone and the decoder each own one (``relu.weight``), so the decoder can
  sit on any backbone. Both start at PReLU's default 0.25, so random-init parity holds; to load an
  original checkpoint copy ``relu.weight`` into both (:func:`convert_original_state_dict`).
* The original decoder ends in PReLU (unbounded, no clamping); kept as is. :func:`mtvif_zoo.fuse`
  clamps fused images to [0, 1].

Parity (checked locally against ``Fusion_Network_rmseg`` with 1-channel inputs, its weights
re-drawn from N(0, 0.05) and copied through :func:`convert_original_state_dict`, 1x1x48x64 inputs,
CPU fp32): same parameter shapes (original 889,346 parameters with one PReLU, ours 889,347 with
two), outputs bitwise equal.
"""
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import checkpoint_call
from ..layers._fast import fast_enabled, fconv, image_layer, output_conv, pointwise, to_channels_last, use_fast
from ._registry import register_backbone, register_original_converter

__all__ = ['DRDB', 'SegMiFBackbone', 'SegMiFDecoder', 'convert_original_state_dict']


class DRDB(nn.Module):
    """Dilated residual dense block: 5 dilated 3x3 convs (growth ``growth_rate``), 1x1 fuse, residual."""

    def __init__(self, in_ch: int = 64, growth_rate: int = 32, num_convs: int = 5):
        super().__init__()
        chs = in_ch
        for i in range(1, num_convs + 1):
            setattr(self, f'Dcov{i}', nn.Conv2d(chs, growth_rate, 3, padding=2, dilation=2))
            chs += growth_rate
        self.num_convs = num_convs
        self.conv = nn.Conv2d(chs, in_ch, 1)

    fast_path = True  # inference fast path (see ..layers._fast)

    def forward(self, x):
        if fast_enabled(self):
            return self.forward_fast(x)
        feats = x
        for i in range(1, self.num_convs + 1):
            feats = torch.cat([feats, F.relu(getattr(self, f'Dcov{i}')(feats))], dim=1)
        return x + F.relu(self.conv(feats))

    def forward_fast(self, x):
        """channels_last maps, the 1x1 fusion conv as a matrix product over the pixels; with
        autograd off on CPU conv + ReLU (+ residual) as single oneDNN primitives (same bits)."""
        x = to_channels_last(x, self)
        k = use_fast(x, self)
        feats = x
        for i in range(1, self.num_convs + 1):
            feats = torch.cat([feats, fconv(getattr(self, f'Dcov{i}'), feats, 'relu', (), k)], dim=1)
        return pointwise(self.conv, feats, 'relu', residual=x, kernels=k)


@register_backbone('segmif')
class SegMiFBackbone(nn.Module):
    """SegMiF encoder (``Fusion_Network_rmseg`` layout); output ``cat([ir, vis])``, 128 channels.

    Feature levels: ``cat([ir, vis])`` after the stem convs + PReLU, after DRDB1/DRDB2 and after
    DRDB3/DRDB4 (the output), 128 channels each, full resolution."""
    pad_multiple = 1
    first_conv = ('conv1_vis', 'conv1_ir')
    num_feature_levels = 3  # len(feature_info)

    def __init__(self, in_chans: int = 3, width: int = 64, growth_rate: int = 32):
        super().__init__()
        self.in_chans = in_chans
        self.conv1_ir = nn.Conv2d(in_chans, width, 3, padding=1)
        self.conv1_vis = nn.Conv2d(in_chans, width, 3, padding=1)
        self.DRDB1 = DRDB(width, growth_rate)
        self.DRDB2 = DRDB(width, growth_rate)
        self.DRDB3 = DRDB(width, growth_rate)
        self.DRDB4 = DRDB(width, growth_rate)
        self.relu = nn.PReLU()
        self.num_features = 2 * width
        self.feature_info = [dict(num_chs=2 * width, reduction=1, module=m) for m in ('conv1_ir', 'DRDB1', 'DRDB3')]
        self.grad_checkpointing = False

    fast_path = True

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the four DRDBs in training."""
        self.grad_checkpointing = enable

    def forward_intermediates(self, vis, ir):
        """``(output, levels)``: ``cat([ir, vis])`` after every stage; the last is the output."""
        ck = self.grad_checkpointing
        vis, ir = to_channels_last(vis, self), to_channels_last(ir, self)
        x_ir = self.relu(image_layer(self.conv1_ir, ir))  # stems fp32 under autocast
        x_vis = self.relu(image_layer(self.conv1_vis, vis))
        out = [torch.cat([x_ir, x_vis], dim=1)]
        for b_ir, b_vis in ((self.DRDB1, self.DRDB2), (self.DRDB3, self.DRDB4)):
            x_ir, x_vis = checkpoint_call(ck, b_ir, x_ir), checkpoint_call(ck, b_vis, x_vis)
            out.append(torch.cat([x_ir, x_vis], dim=1))
        return out[-1], out

    def forward(self, vis, ir):
        if self.grad_checkpointing:
            return self.forward_intermediates(vis, ir)[0]
        vis, ir = to_channels_last(vis, self), to_channels_last(ir, self)
        if use_fast(vis, self) and self.relu.weight.numel() == 1:
            slope = [float(self.relu.weight)]  # a one-parameter PReLU is a LeakyReLU
            x_ir = image_layer(lambda t: fconv(self.conv1_ir, t, 'leaky_relu', slope, True), ir)  # fp32 stems
            x_vis = image_layer(lambda t: fconv(self.conv1_vis, t, 'leaky_relu', slope, True), vis)
            return torch.cat([self.DRDB3(self.DRDB1(x_ir)), self.DRDB4(self.DRDB2(x_vis))], dim=1)
        x_ir = self.DRDB3(self.DRDB1(self.relu(image_layer(self.conv1_ir, ir))))  # stems fp32 under autocast
        x_vis = self.DRDB4(self.DRDB2(self.relu(image_layer(self.conv1_vis, vis))))
        return torch.cat([x_ir, x_vis], dim=1)


class SegMiFDecoder(nn.Module):
    """The original SegMiF decoder: 3x3 convs ``in -> 64 -> 32 -> out``, each followed by PReLU."""

    out_conv = 'conv22'  # the conv that writes the fused image (``in_chans`` adaptation)

    def __init__(self, in_chs: int = 128, out_chans: int = 3, widths=(64, 32)):
        super().__init__()
        self.conv2 = nn.Conv2d(in_chs, widths[0], 3, padding=1)
        self.conv21 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.conv22 = nn.Conv2d(widths[1], out_chans, 3, padding=1)
        self.relu = nn.PReLU()

    fast_path = True

    def forward(self, x):
        x = to_channels_last(x, self)
        if torch.is_autocast_enabled(x.device.type):  # the output layer in fp32 (bf16 / fp16 autocast)
            fast = use_fast(x, self) and self.relu.weight.numel() == 1
            for conv in (self.conv2, self.conv21):
                x = fconv(conv, x, 'leaky_relu', [float(self.relu.weight)], True) if fast else self.relu(conv(x))
            return output_conv(self.conv22, x, self.relu)
        if use_fast(x, self) and self.relu.weight.numel() == 1:
            slope = [float(self.relu.weight)]
            for conv in (self.conv2, self.conv21, self.conv22):
                x = fconv(conv, x, 'leaky_relu', slope, True)
            return x
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv21(x))
        return self.relu(self.conv22(x))


@register_original_converter('segmif')
def convert_original_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map a ``Fusion_Network_rmseg`` state dict to ``{'backbone.*', 'head.decoder.*'}`` keys.

    The original's single shared ``relu.weight`` is copied to both PReLUs.
    """
    decoder_keys = ('conv2.', 'conv21.', 'conv22.')
    out = {}
    for k, v in state_dict.items():
        if k.startswith(decoder_keys):
            out[f'head.decoder.{k}'] = v
        elif k == 'relu.weight':
            out['backbone.relu.weight'] = v
            out['head.decoder.relu.weight'] = v.clone()
        else:
            out[f'backbone.{k}'] = v
    return out


SegMiFBackbone.original_decoder = SegMiFDecoder
