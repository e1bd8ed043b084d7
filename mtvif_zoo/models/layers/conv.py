"""Conv + activation blocks of the Multi-Task Head (``Sequential(Conv2d, [BatchNorm2d,] act)``).

Kept as ``nn.Sequential`` subclasses, not timm's ``ConvNormAct``: for conv + BN + ReLU the
function is the same but ``ConvNormAct`` names its parts ``conv`` / ``bn`` where these are ``0`` /
``1`` (a swap would rename keys of the shipped safetensors files), and for conv + LeakyReLU without
a norm ``ConvNormAct(apply_norm=False)`` drops the activation too
(``tests/hub/test_library_equivalents.py`` shows both). What they add is the fast path (:mod:`._fast`).
"""
import torch.nn as nn

from ._fast import conv_bn_kernel_weights, conv_bn_weights, fast_enabled, fconv, to_channels_last, use_fast

__all__ = ['ConvLReLU', 'ConvBNReLU', 'conv_lrelu', 'conv_bn_relu']


class ConvLReLU(nn.Sequential):
    """``Sequential(Conv2d, LeakyReLU)``; fast path: channels_last, and with autograd off on CPU the
    conv + LeakyReLU as one oneDNN primitive -- the same bits as the conv and the activation run
    separately on the channels_last map (:func:`._fast.fconv`); against the two modules on an NCHW
    map oneDNN may pick another conv algorithm, so there they agree within fp32 rounding (1 ulp on
    a random 2x4x10x12 map, ``tests/test_speed_parity.py``)."""
    fast_path = True

    def forward(self, x):
        if not fast_enabled(self):
            return super().forward(x)
        x = to_channels_last(x, self)
        return fconv(self[0], x, 'leaky_relu', [self[1].negative_slope], use_fast(x, self))


class ConvBNReLU(nn.Sequential):
    """``Sequential(Conv2d, BatchNorm2d, ReLU)``; fast path in eval mode: the BatchNorm folded into
    the conv (``w * s``, ``(b - mean) * s + beta``, autograd-capable), conv + ReLU as one oneDNN
    primitive with autograd off on CPU. Training mode (batch statistics): the modules as they are."""
    fast_path = True

    def forward(self, x):
        if self.training or not fast_enabled(self):
            return super().forward(x)
        x = to_channels_last(x, self)
        k = use_fast(x, self)
        w, b = conv_bn_kernel_weights(self[0], self[1], x) if k else conv_bn_weights(self[0], self[1])
        return fconv(self[0], x, 'relu', (), k, weight=w, bias=b)


def conv_lrelu(in_chs: int, out_chs: int) -> ConvLReLU:
    """3x3 conv (bias) + LeakyReLU(0.2): the MTH's fusion-branch layer."""
    return ConvLReLU(nn.Conv2d(in_chs, out_chs, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))


def conv_bn_relu(in_chs: int, out_chs: int, stride: int = 1) -> ConvBNReLU:
    """3x3 conv (no bias) + BatchNorm + ReLU: the MTH's segmentation-branch layer."""
    return ConvBNReLU(nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False),
                      nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))
