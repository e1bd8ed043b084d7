"""Restormer transposed (channel) attention, as EMMA's Ufuser uses it (``AttentionBase``).

Zamir et al., "Restormer: efficient transformer for high-resolution image restoration" (CVPR
2022), Sec. 3.1 (MDTA): attention over channels (``C/heads x C/heads`` per head, linear in the
pixels), L2-normalised q / k, a learnable temperature; EMMA's variant computes qkv with a 1x1 conv
followed by a *full* 3x3 conv. Parameter names follow the original (``scale``, ``qkv1``, ``qkv2``,
``proj``).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ._fast import fast_enabled, fconv, pointwise, to_channels_last, use_fast

__all__ = ['AttentionBase']


class AttentionBase(nn.Module):
    """Restormer transposed (channel) attention with L2-normalised q/k and a learnable temperature."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv1 = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=qkv_bias)
        self.qkv2 = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, bias=qkv_bias)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1, bias=qkv_bias)

    fast_path = True  # fast formulation (see ._fast)

    def forward(self, x):
        if fast_enabled(self):
            return self.forward_fast(x)
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv2(self.qkv1(x)), 'b (three head c) h w -> three b head c (h w)',
                            three=3, head=self.num_heads)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = rearrange(attn @ v, 'b head c (h w) -> b (head c) h w', h=h, w=w)
        return self.proj(out)

    def forward_fast(self, x, residual=None):
        """The fast formulation (autograd-capable; same function up to fp32 rounding), returning
        ``residual + attn(x)``. With ``C`` channels, ``c = C / heads`` per head (1 to 4 in Ufuser)
        and ``N`` pixels:

        * the 1x1 ``qkv1`` is a matrix product over the pixels; q, k, v are views of the
          channels_last ``qkv`` map (no rearrange copies);
        * one ``2C x 2C`` Gram matrix of ``[q | k]`` gives both the L2 norms (its diagonal) and
          ``q^T k``, whose diagonal ``c x c`` blocks divided by the norms are the per-head
          ``q_n k_n^T`` (``F.normalize`` moved after the product);
        * ``attn @ v``, the 1x1 ``proj`` and the residual add are one product
          ``residual + v @ (blockdiag(attn)^T W_proj^T)``: the attention output is never built.
        """
        B, C, H, W = x.shape
        k_ = use_fast(x, self)
        qkv = fconv(self.qkv2, pointwise(self.qkv1, x, kernels=k_), kernels=k_)
        t = qkv.permute(0, 2, 3, 1).reshape(B, H * W, 3 * C)  # a view of the channels_last map
        qk, v = t[..., :2 * C], t[..., 2 * C:]
        h, c = self.num_heads, C // self.num_heads
        with torch.autocast(x.device.type, enabled=False):  # the small C x C algebra in fp32
            qk = qk.float()
            gram = qk.transpose(1, 2) @ qk  # B x 2C x 2C
            norms = torch.diagonal(gram, dim1=1, dim2=2).sqrt().clamp_min(1e-12)  # F.normalize's eps
            cos = gram[:, :C, C:] / (norms[:, :C].unsqueeze(2) * norms[:, C:].unsqueeze(1))  # B x C x C
            blocks = torch.diagonal(cos.reshape(B, h, c, h, c), dim1=1, dim2=3).permute(0, 3, 1, 2)  # B x h x c x c
            attn = (blocks * self.scale.float()).softmax(dim=-1)
            wp = self.proj.weight.float().view(C, C).t().reshape(h, c, C)  # [(h i), o] -> h x i x o
            m = (attn.transpose(-2, -1) @ wp).reshape(B, C, C)  # [(h j), o] = sum_i attn[h, i, j] W[o, (h i)]
        m = m.to(v.dtype)
        if residual is None:
            out = v @ m
        else:
            r = to_channels_last(residual, self).permute(0, 2, 3, 1).reshape(B, H * W, C)
            out = torch.baddbmm(r, v, m)
        if self.proj.bias is not None:
            out = out + self.proj.bias
        return out.view(B, H, W, C).permute(0, 3, 1, 2)
