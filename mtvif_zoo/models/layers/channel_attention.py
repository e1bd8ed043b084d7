"""Channel attention blocks: attention over channels, cost linear in the pixels.

* :class:`AttentionBase`: Restormer transposed (channel) attention, as EMMA's Ufuser uses it.
  Zamir et al., "Restormer: efficient transformer for high-resolution image restoration" (CVPR
  2022), Sec. 3.1 (MDTA): ``C/heads x C/heads`` attention per head, L2-normalised q / k, a
  learnable temperature; EMMA's variant computes qkv with a 1x1 conv followed by a *full* 3x3
  conv. Parameter names follow the original (``scale``, ``qkv1``, ``qkv2``, ``proj``).
* :class:`ChannelContextAttention`: the cross attention of MultiTaskVIF's HIA-F (Sec. 3.3), as in
  SegMiF's ``CrossAttention`` (from CMX): per head a ``d x d`` context ``softmax(k^T v * d^-0.5)``
  over the keys, output ``q @ ctx``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ._fast import fast_enabled, fconv, pointwise, to_channels_last, use_fast

__all__ = ['AttentionBase', 'ChannelContextAttention']


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

    def folded_context(self, context: torch.Tensor, w_next: torch.Tensor) -> torch.Tensor:
        """Fast path: ``blockdiag(ctx_1 .. ctx_heads) @ w_next^T`` (``B x C x out``) for ``context``
        ``B x N x C`` (any row stride), so that ``q @ ctx`` followed by a linear layer ``w_next``
        is the single product ``q @ result``. Needs the bias-free ``kv`` projection
        (``k^T v = W_k (t^T t) W_v^T``)."""
        if self.kv.bias is not None:
            raise ValueError('folded_context needs the bias-free kv projection (qkv_bias=False); use forward()')
        B, _, C = context.shape
        h, d = self.num_heads, C // self.num_heads
        # the C x C products in fp32 even under autocast: k^T v sums over every pixel, its entries
        # reach 1e4 and bf16 would round them by tens before a softmax (cheap: N C^2 + 2 C^3)
        with torch.autocast(context.device.type, enabled=False):
            wk, wv = self.kv.weight[:C].float(), self.kv.weight[C:].float()
            context = context.float()
            gram = context.transpose(1, 2) @ context  # B x C x C
            full = wk @ gram @ wv.t()  # B x C x C: k^T v for all pairs of heads
            ctx = torch.diagonal(full.view(B, h, d, h, d), dim1=1, dim2=3)  # B x d x d x h
            ctx = (ctx.permute(0, 3, 1, 2) * self.scale).softmax(dim=-2)  # B x h x d x d
            w = w_next.float().t().reshape(h, d, -1)  # (h d) x out -> h x d x out
            folded = (ctx @ w.unsqueeze(0)).reshape(B, C, -1)  # block-diagonal product, per head
        if folded.device.type == 'cpu':
            # a saturated softmax (k^T v sums over every pixel) leaves subnormal entries (|x| < 1.2e-38;
            # with the published weights on an MSRS pair 0-8 % of them); every pixel's product with
            # them then takes the CPU's slow subnormal path. Flushed to 0 they change no fp32 output
            # by more than ~1e-38: fuse() with the published weights on 4 MSRS pairs gave bitwise the
            # same images, 1.08x (ii), 1.03x (iii), 1.01x (iv), 1.035x (i) faster
            folded = folded.masked_fill(folded.abs() < torch.finfo(folded.dtype).tiny, 0)
        return folded
