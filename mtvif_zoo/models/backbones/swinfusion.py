"""SwinFusion backbone and its original decoder (MultiTaskVIF variant I, Table 7).

MultiTaskVIF (Zhao et al., arXiv 2505.06665) builds variant I of Table 7 on SwinFusion (Tang et
al., "SwinFusion: cross-domain long-range learning for general image fusion via Swin
Transformer", IEEE/CAA J. Autom. Sinica 2022). Written from the public original
(Linfeng-Tang/SwinFusion, ``models/network_swinfusion1.py``, the network the released
infrared-visible options build: ``net_type 'swinfusion1'``, ``in_chans 1``, ``img_size 128``,
``window_size 8``, ``embed_dim 60``, ``mlp_ratio 2``, ``upsampler None``, ``resi_connection
'1conv'``; the per-stage depths are the constructor defaults ``Ex_depths [4]``, ``Fusion_depths
[2, 2]``, ``Re_depths [4]``, 6 heads everywhere, ``drop_path_rate 0.1``):

* shallow stem, one per network but applied to both modalities: ``conv_first1`` (in -> 30) and
  ``conv_first2`` (30 -> 60), 3x3, LeakyReLU(0.2); one token per pixel;
* the shared "patch embedding" LayerNorm (``patch_norm``) in front of every Swin stage;
* intra-modal extraction, per modality: one "RSTB" of 4 Swin blocks (window 8, shift 4 on odd
  blocks) + LayerNorm (``layers_Ex_A`` / ``norm_Ex_A``, ``layers_Ex_B`` / ``norm_Ex_B``);
* fusion: 2 CRSTBs, each = 2 self-attention Swin blocks per modality, then 2 cross-attention
  blocks (``attn_A``: queries from A, keys/values from B; ``attn_B`` the reverse), then
  ``norm_Fusion_A/B``; concat -> ``conv_after_body_Fusion`` (3x3, 120 -> 60) + LeakyReLU(0.2).
  That 60-channel full-resolution map is the backbone output (the original's
  ``forward_features_Fusion``);
* decoder (the original's ``forward_features_Re``, :class:`SwinFusionDecoder`): ``patch_norm``,
  one RSTB of 4 Swin blocks, ``norm_Re``, 3x3 convs 60 -> 30 -> 15 -> out with LeakyReLU(0.2)
  between, plus the image mean.

Despite their names, the released RSTB/CRSTB have no residual connection and no conv (both are
commented out in the original); reproduced as released. Parameter names follow the original
(``layers_Ex_A.0.residual_group.blocks.1.attn.qkv.weight``, ``layers_Fusion.0.residual_group
.blocks.0.attn_A.kv.weight`` ...), so :func:`convert_original_state_dict` renames the stem and the
patch norm, splits the checkpoint, and swaps the A / B branches (the released options feed A =
infrared, B = visible; the zoo's first input, visible, runs through the ``_A`` modules).

Deliberate differences from the original (none changes the function a converted checkpoint
computes):

* ``forward_features_Ex_B`` reuses ``conv_first1_A`` / ``conv_first2_A``, so the original's
  ``conv_first1_B`` / ``conv_first2_B`` are dead parameters; they are not created here.
* The original has one ``patch_embed.norm`` LayerNorm shared by all stages, the decoder's
  included. Here the backbone and the decoder each own one (``patch_norm``) so that the decoder can
  sit on any backbone; :func:`convert_original_state_dict` copies the original's into both (so
  backbone + decoder = original - dead stem convs + one extra 120-parameter LayerNorm). Same
  function at conversion; when trained, the two copies are no longer tied.
* Padding: the original reflect-pads to a multiple of ``window_size`` inside ``forward``; here
  :func:`mtvif_zoo.fuse` pads outside (``pad_multiple = window_size``) and the modules raise a
  ``ValueError`` for other sizes. No ``img_size`` argument: every block always partitions into
  ``window_size`` windows and the odd blocks always shift by ``window_size // 2``, at any H, W
  that is a multiple of the window -- exactly what the released network (built at
  ``img_size=128``) does at any test size.
* Mean: the original subtracts ``self.mean`` from both inputs and adds it back to the output;
  with ``in_chans=1`` (the released VIF model) it is 0, with ``in_chans=3`` SwinIR's RGB mean
  ``(0.4488, 0.4371, 0.4040)``, applied to the 3-channel IR too. Reproduced: the backbone
  subtracts it for ``in_chans=3`` and the decoder adds it back for ``out_chans=3``.
  ``img_range`` is 1 in the released options and is dropped (a multiplication by 1).
* The decoder returns the original's arithmetic unchanged (no sigmoid, no clamp: values can leave
  [0, 1]); :func:`mtvif_zoo.fuse` clamps fused images to [0, 1].
* ``SwinFusionDecoder(in_chs != embed_dim)`` (the decoder on another backbone) starts with a 1x1
  conv ``proj`` to ``embed_dim`` channels; absent when ``in_chs == embed_dim`` (the original).
* Un-embedding to ``B x C x H x W`` and re-embedding between stages is a pure reshape in the
  original and is skipped.
* ``drop_path_rate`` defaults to the original's 0.1 (the released options do not override it)
  with the original schedule: ``linspace(0, rate, depth)`` per stage (Ex, Fusion, Re), the
  same list for both modalities and for the self/cross groups of a CRSTB. Inactive in eval.

Window attention (speed): timm's ``SwinTransformerBlock`` (timm 1.0.31) has the same parameter
layout and, with its default plain attention, the same arithmetic as the original self-attention
block (``tests/models/test_swinfusion.py`` checks it), but it is not used because at a new input
size it either needs ``set_input_size`` (rebuilds the mask buffer, one size at a time) or
``dynamic_mask=True`` (rebuilds the mask on every call), and its SDPA path (off by default for
Swin, "experimental") materialises a ``B*nW x heads x 64 x 64`` mask on every call. The blocks
here keep the original's layout and arithmetic but, on the default fused path (``fused_attn = True``):

* the cyclic shift and window partition are one cached token permutation (gather) per input
  size, ordering the windows by *mask class*: with a shift of ``window_size // 2`` only the last
  window row / column are masked, and every window of one class has the same 64x64 mask
  (interior: none; last column; last row; corner);
* attention runs through ``F.scaled_dot_product_attention``, one call per class (at most 4), with
  a broadcast ``1 x heads x 64 x 64`` bias (relative-position bias + class mask, the original's
  -100 mask value); training on the CPU, where the bias needs its gradient and SDPA would fall
  back to its math kernel (whose safe softmax adds an eq / all / where pass over the scores, and
  whose bias gradient was 7e-4 relative off the plain path's on a 2x3x128x128 ``mtvif_i`` batch),
  writes the same arithmetic out (gradients within 4e-7 relative of the plain path);
* the permutations (per input size, batch size, shift, device) live in a
  :class:`WindowLayoutCache` shared by all blocks of a network; the bias+mask tensor is cached per
  attention module while autograd is off (with autograd on, it is rebuilt from the table each
  call -- a gather of a few hundred KB -- so the table gets its gradient).

Inference fast path (eval mode, CPU fp32, autograd off, :mod:`._fast` enabled; a layer takes it
when all its blocks are ``fused_attn``): each block runs on *chunks of whole windows*
(``INFERENCE_CHUNK_ROWS`` = 16384 tokens, ~4 MB of 60-channel tokens per chunk): per chunk one gather of its tokens
through the cached permutation, LayerNorm, qkv / proj / MLP as oneDNN matmuls with bias, GELU and
the residual adds fused (``torch.ops.mkldnn._linear_pointwise``), one SDPA call per mask class
present in the chunk (one for all but the chunks holding the last window row / column; SDPA's
output memory already is the token matrix, no concatenation), one scatter back to token order.
Intermediates (qkv, the MLP hidden layer) stay small enough to live in cache and to be reused by
the allocator instead of page-faulting in fresh memory for every op (timings:
``benchmarks/bench_fuse.py``, README "Performance"). The loop is over chunks of many windows (19 at 480x640),
never over single windows or pixels. Backbone and decoder keep their
feature maps channels_last, so the token views of the stem / output convs are free.

``fused_attn = False`` on a block (or :func:`set_fused_attn`), or :func:`._fast.exporting`, selects the plain path: the
original's roll / window partition / ``softmax(q k^T * scale + bias + mask)`` with the mask built
by the original's ``calculate_mask`` algorithm at every call -- the reference for parity tests.

On CUDA the fused path also zero-pads the head dim (10) to 16 through the q/k/v weights
(``pad_head_dim``): PyTorch's memory-efficient SDPA kernel (the one that takes a bias) needs a
head dim divisible by 4 (fp32) / 8 (fp16, bf16), otherwise SDPA falls back to its math kernel. The
padding is exact (bitwise equal to the unpadded path on CPU).

Parity (checked locally on CPU, fp32, against the original ``SwinFusion(upscale=1, in_chans=1,
img_size=128, window_size=8, img_range=1., embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2,
upsampler=None, resi_connection='1conv')`` -- the released VIF options -- in eval mode, its random
weights (LayerNorm and bias parameters perturbed off their init) loaded through
:func:`convert_original_state_dict` with ``strict=True``, 1x1x64x96 inputs in [0, 1]):

* plain path: backbone feature map and end-to-end output bitwise equal (max abs diff 0);
* fused path: max abs diff 6.0e-7 on the feature map, 1.9e-7 on the output (2.7e-7 at
  2x1x48x40; ``in_chans=3``: 6.3e-7 / 2.7e-7); training-mode gradients (``drop_path_rate=0``)
  within 6e-7 relative of the original's;
* timm's ``SwinTransformerBlock`` (plain, ``always_partition=True``, ``dynamic_mask=True``) with
  the original block's weights: bitwise equal to the original block (the DESIGN.md claim holds),
  so are our plain blocks; our fused blocks within 7.2e-7.

Parameters (``in_chans=1``): the original has 973,681 = 8,430 dead + 821,460 used by the
feature/fusion path (shared patch norm included) + 143,791 reconstruction-only; here backbone
821,460, decoder 143,911 (its own 120-parameter patch norm). ``in_chans=3``: 975,033 original
(8,970 dead); backbone 822,000, decoder 144,183. MACs at 1x3x256x256 (FlopCounterMode, FLOPs / 2,
plain path or ``meta`` device; on CPU the fused path's SDPA kernel is not counted by
FlopCounterMode): backbone 63.85 G, decoder 10.92 G. The released code has
~0.97 M parameters; Table 7's 1.71 M for SwinFusion is not reproduced (see DESIGN.md).
"""
import re
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, calculate_drop_path_rates, to_2tuple, trunc_normal_
from timm.models.swin_transformer import get_relative_position_index, window_partition, window_reverse

from ..layers import checkpoint_call
from ..layers._fast import (
    conv_act,
    exporting,
    image_layer,
    layer_norm,
    linear_act,
    linear_add,
    output_conv,
    to_channels_last,
    use_fast,
)
from ..layers.window import WindowLayout, WindowLayoutCache, permute_rows, reference_shift_mask
from ._registry import register_backbone, register_original_converter

__all__ = [
    'SwinFusionBackbone', 'SwinFusionDecoder', 'SwinTransformerBlock', 'CrossSwinTransformerBlock',
    'WindowLayoutCache', 'convert_original_state_dict', 'set_fused_attn',
]

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # SwinIR's (DIV2K) mean, used by the original for in_chans=3
_HEAD_DIM_MULTIPLE = 8


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------

class _WindowAttentionBase(nn.Module):
    # zero-pad the head dim (10 here) to a multiple of 8 on the fused path: None = on CUDA only
    # (its memory-efficient SDPA kernel needs it; otherwise SDPA falls back to the math kernel)
    pad_head_dim: Optional[bool] = None

    def __init__(self, dim: int, window_size: int, num_heads: int, attn_drop: float = 0.):
        super().__init__()
        self.dim = dim
        self.window_size = to_2tuple(window_size)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer('relative_position_index', get_relative_position_index(wh, ww), persistent=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self._bias_cache: Optional[Tuple[tuple, torch.Tensor]] = None
        trunc_normal_(self.relative_position_bias_table, std=.02)

    def __getstate__(self):  # pickling / deepcopy carry no cached tensors
        state = self.__dict__.copy()
        state['_bias_cache'] = None
        return state

    def rel_pos_bias(self) -> torch.Tensor:
        """``heads x N x N`` relative position bias (the original's gather)."""
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous()

    def _combined_bias(self, class_masks: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        bias = self.rel_pos_bias().unsqueeze(0)
        if class_masks is not None:
            bias = bias + class_masks.unsqueeze(1)
        return bias.to(dtype)  # K x heads x N x N

    def attn_bias(self, class_masks: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        table = self.relative_position_bias_table
        if torch.is_grad_enabled() and table.requires_grad:
            return self._combined_bias(class_masks, dtype)
        try:
            version = table._version
        except RuntimeError:  # inference tensor (model built under inference_mode): no version counter
            return self._combined_bias(class_masks, dtype)
        key = (table.device, dtype, version, table.data_ptr(), class_masks is None)
        if self._bias_cache is None or self._bias_cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                self._bias_cache = (key, self._combined_bias(class_masks, dtype))
        return self._bias_cache[1]

    def _use_head_pad(self, x: torch.Tensor) -> bool:
        pad = self.pad_head_dim
        return (x.is_cuda if pad is None else bool(pad)) and self.head_dim % _HEAD_DIM_MULTIPLE != 0

    def _project(self, linear: nn.Linear, x: torch.Tensor, chunks: int, pad: bool) -> torch.Tensor:
        """``linear(x)`` viewed as ``rows x N x chunks x heads x d``; with ``pad``, d is zero-padded to a
        multiple of 8 through the weight (zero q/k columns leave q k^T unchanged, zero v columns give
        zero outputs that are sliced off), so CUDA can use its memory-efficient SDPA kernel."""
        n = self.window_size[0] * self.window_size[1]
        d = self.head_dim
        if not pad:
            return linear(x).view(-1, n, chunks, self.num_heads, d)
        dp = -(-d // _HEAD_DIM_MULTIPLE) * _HEAD_DIM_MULTIPLE
        w = F.pad(linear.weight.view(chunks, self.num_heads, d, -1), (0, 0, 0, dp - d)).view(-1, linear.in_features)
        b = None if linear.bias is None else F.pad(linear.bias.view(chunks, self.num_heads, d), (0, dp - d)).view(-1)
        return F.linear(x, w, b).view(-1, n, chunks, self.num_heads, dp)

    def _attention_fused(self, q, k, v, layout: WindowLayout, batch: int) -> torch.Tensor:
        """q, k, v: ``(nW*B) x heads x N x d`` window-major; one SDPA call per mask class (written
        out instead when training on the CPU, see the module docstring)."""
        bias = self.attn_bias(layout.class_masks, q.dtype)
        p = self.attn_drop.p if self.training else 0.
        # training on the CPU (the bias needs its gradient): SDPA's CPU flash kernel takes no
        # gradient for attn_mask and falls back to its math path, whose "safe" softmax adds an
        # eq / all / where pass over every score tensor (~8 % of a mtvif_i training step); the same
        # arithmetic written out here skips it
        explicit = q.device.type == 'cpu' and bias.requires_grad and torch.is_grad_enabled()
        outs = []
        for cls, s, e in layout.groups:
            rows = slice(s * batch, e * batch)
            if explicit:
                a = torch.matmul(q[rows] * self.scale, k[rows].transpose(-2, -1)) + bias[cls:cls + 1]
                o = F.dropout(a.softmax(dim=-1), p, self.training) @ v[rows]
            else:
                o = F.scaled_dot_product_attention(
                    q[rows], k[rows], v[rows], attn_mask=bias[cls:cls + 1], dropout_p=p, scale=self.scale)
            outs.append(o[..., :self.head_dim].transpose(1, 2))
        o = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
        return o.reshape(-1, self.dim)

    def _attention_inference(self, q, k, v, layout: WindowLayout, batch: int, w0: int = 0) -> torch.Tensor:
        """Inference fast path of :meth:`_attention_fused` for the windows ``w0 ..`` of a chunk
        (``q`` / ``k`` / ``v``: their ``(windows * B) x heads x N x d``): one SDPA call per mask class
        present in the chunk (one for all but the chunks holding the last window row / column);
        SDPA's output memory already is the ``rows x C`` token matrix, so a single-class chunk
        needs no copy."""
        bias = self.attn_bias(layout.class_masks, q.dtype)
        w1 = w0 + q.shape[0] // batch
        parts = [(c, max(s, w0), min(e, w1)) for c, s, e in layout.groups if max(s, w0) < min(e, w1)]
        if len(parts) == 1:
            c = parts[0][0]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[c:c + 1], scale=self.scale).transpose(1, 2)
        else:
            out = q.new_empty(q.shape[0], q.shape[2], self.num_heads, self.head_dim)
            for c, s, e in parts:
                rows = slice((s - w0) * batch, (e - w0) * batch)
                out[rows] = F.scaled_dot_product_attention(
                    q[rows], k[rows], v[rows], attn_mask=bias[c:c + 1], scale=self.scale).transpose(1, 2)
        return out.reshape(-1, self.dim)

    def _attention_plain(self, q, k, v, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The original arithmetic; q, k, v: ``(B*nW) x heads x N x d``; mask ``nW x N x N``."""
        b_, _, n, _ = q.shape
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        attn = attn + self.rel_pos_bias().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return (attn @ v).transpose(1, 2).reshape(b_, n, -1)

    def extra_repr(self) -> str:
        return f'dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}'


class WindowAttention(_WindowAttentionBase):
    """Window self-attention with relative position bias (the original ``WindowAttention``)."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.):
        super().__init__(dim, window_size, num_heads, attn_drop)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward_fused(self, xw: torch.Tensor, layout: WindowLayout, batch: int) -> torch.Tensor:
        qkv = self._project(self.qkv, xw, 3, self._use_head_pad(xw)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.proj(self._attention_fused(q, k, v, layout, batch))

    def attend_inference(self, xw: torch.Tensor, layout: WindowLayout, batch: int, w0: int = 0) -> torch.Tensor:
        """Inference fast path: window-ordered ``rows x C`` tokens of the windows ``w0 ..`` ->
        attention output *before* ``proj``."""
        n = self.window_size[0] * self.window_size[1]
        qkv = linear_act(self.qkv, xw).view(-1, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return self._attention_inference(qkv[0], qkv[1], qkv[2], layout, batch, w0)

    def forward_plain(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        return self.proj(self._attention_plain(q, k, v, mask))


class CrossWindowAttention(_WindowAttentionBase):
    """Window cross-attention (the original ``Cross_WindowAttention``): queries from ``x``, keys
    and values from ``y``."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.):
        super().__init__(dim, window_size, num_heads, attn_drop)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward_fused(self, xw: torch.Tensor, yw: torch.Tensor, layout: WindowLayout, batch: int) -> torch.Tensor:
        pad = self._use_head_pad(xw)
        q = self._project(self.q, xw, 1, pad)[:, :, 0].transpose(1, 2)
        k, v = self._project(self.kv, yw, 2, pad).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(self._attention_fused(q, k, v, layout, batch))

    def attend_inference(self, xw: torch.Tensor, yw: torch.Tensor, layout: WindowLayout, batch: int,
                         w0: int = 0) -> torch.Tensor:
        """Inference fast path: queries from ``xw``, keys / values from ``yw`` -> output before ``proj``."""
        n = self.window_size[0] * self.window_size[1]
        q = linear_act(self.q, xw).view(-1, n, self.num_heads, self.head_dim).transpose(1, 2)
        kv = linear_act(self.kv, yw).view(-1, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return self._attention_inference(q, kv[0], kv[1], layout, batch, w0)

    def forward_plain(self, x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b_, n, c = x.shape
        q = self.q(x).reshape(b_, n, 1, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        kv = self.kv(y).reshape(b_, n, 2, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(self._attention_plain(q[0], kv[0], kv[1], mask))


# --------------------------------------------------------------------------------------------
# blocks and layers
# --------------------------------------------------------------------------------------------

_ln = layer_norm  # LayerNorm in the input's dtype (a bf16 token matrix stays bf16)
_linear_add = linear_add  # ``residual + linear(x)`` as one oneDNN matmul with a fused add (2-D, contiguous)


def _mlp_residual(mlp: Mlp, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``x + mlp(norm(x))`` with fc1 + GELU and fc2 + residual add fused (inference fast path)."""
    return _linear_add(mlp.fc2, linear_act(mlp.fc1, _ln(norm, x), 'gelu'), x)


#: inference fast path: rows (tokens) per chunk; a block runs chunk by chunk so that its
#: intermediates (qkv, MLP hidden) stay in cache and are small enough for the allocator to reuse
INFERENCE_CHUNK_ROWS = 16384


class _WindowBlockBase(nn.Module):
    fused_attn: bool = True

    def _chunks(self, lay: 'WindowLayout', B: int):
        """``(first window, gather index of its rows)`` per chunk of whole windows."""
        per_window = B * self.window_size * self.window_size
        n_windows = lay.fwd.numel() // per_window
        step = max(1, INFERENCE_CHUNK_ROWS // per_window)
        for w0 in range(0, n_windows, step):  # chunks of many windows, not a loop over windows
            yield w0, lay.fwd[w0 * per_window:min(w0 + step, n_windows) * per_window]

    def _init_window(self, dim: int, window_size: int, shift_size: int, layout_cache: Optional[WindowLayoutCache]):
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size must be in [0, window_size), got {shift_size} for window {window_size}')
        self.dim = dim
        self.window_size = window_size
        self.shift_size = shift_size
        self.layout_cache = layout_cache if layout_cache is not None else WindowLayoutCache()
        self.fused_attn = True

    def _layout(self, H: int, W: int, B: int, device) -> WindowLayout:
        return self.layout_cache.get(H, W, B, self.window_size, self.shift_size, device)

    def _to_windows(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Plain path: ``B x L x C`` -> cyclic shift -> ``(B*nW) x N x C`` (original order)."""
        x = x.view(x.shape[0], H, W, -1)
        if self.shift_size:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        ws = self.window_size
        return window_partition(x, (ws, ws)).view(-1, ws * ws, x.shape[-1])

    def _from_windows(self, xw: torch.Tensor, B: int, H: int, W: int) -> torch.Tensor:
        ws = self.window_size
        x = window_reverse(xw.view(-1, ws, ws, xw.shape[-1]), (ws, ws), H, W)
        if self.shift_size:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        return x.reshape(B, H * W, -1)

    def _plain_mask(self, H: int, W: int, device) -> Optional[torch.Tensor]:
        if not self.shift_size:
            return None
        return reference_shift_mask(H, W, self.window_size, self.shift_size, device)

    def extra_repr(self) -> str:
        return f'dim={self.dim}, window_size={self.window_size}, shift_size={self.shift_size}'


class SwinTransformerBlock(_WindowBlockBase):
    """Swin block (the original ``SwinTransformerBlock``): ``x + attn(norm1(x))``, then
    ``x + mlp(norm2(x))``; tokens ``B x (H*W) x C``."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 8, shift_size: int = 0, mlp_ratio: float = 2.,
                 drop_path: float = 0., layout_cache: Optional[WindowLayoutCache] = None):
        super().__init__()
        self._init_window(dim, window_size, shift_size, layout_cache)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, x_size: Tuple[int, int]) -> torch.Tensor:
        H, W = x_size
        B, L, C = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.fused_attn and not exporting():  # export: plain path (layouts are per concrete size)
            lay = self._layout(H, W, B, x.device)
            xw = permute_rows(x.reshape(B * L, C), lay.fwd, lay.inv)
            x = permute_rows(self.attn.forward_fused(xw, lay, B), lay.inv, lay.fwd).view(B, L, C)
        else:
            xw = self.attn.forward_plain(self._to_windows(x, H, W), self._plain_mask(H, W, x.device))
            x = self._from_windows(xw, B, H, W)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_inference(self, x: torch.Tensor, x_size: Tuple[int, int]) -> torch.Tensor:
        """Inference fast path (eval, CPU fp32, autograd off), same function as :meth:`forward`:
        the block runs on chunks of whole windows; per chunk one gather of its tokens (cyclic shift
        + window partition), LayerNorm, attention, ``proj`` + residual add and fc1 + GELU and
        fc2 + residual add as fused oneDNN matmuls, one scatter back to token order."""
        B, L, C = x.shape
        lay = self._layout(*x_size, B, x.device)
        xf = x.reshape(B * L, C)
        out = torch.empty_like(xf)
        for w0, idx in self._chunks(lay, B):
            xw = xf.index_select(0, idx)
            xw = _linear_add(self.attn.proj, self.attn.attend_inference(_ln(self.norm1, xw), lay, B, w0), xw)
            out.index_copy_(0, idx, _mlp_residual(self.mlp, self.norm2, xw))
        return out.view(B, L, C)


class CrossSwinTransformerBlock(_WindowBlockBase):
    """Cross-attention Swin block (the original ``Cross_SwinTransformerBlock``): A attends to B
    (``attn_A``) and B to A (``attn_B``) in the same (shifted) windows; separate norms and MLPs."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 8, shift_size: int = 0, mlp_ratio: float = 2.,
                 drop_path: float = 0., layout_cache: Optional[WindowLayoutCache] = None):
        super().__init__()
        self._init_window(dim, window_size, shift_size, layout_cache)
        self.norm1_A = nn.LayerNorm(dim)
        self.norm1_B = nn.LayerNorm(dim)
        self.attn_A = CrossWindowAttention(dim, window_size, num_heads)
        self.attn_B = CrossWindowAttention(dim, window_size, num_heads)
        self.drop_path_A = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.drop_path_B = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2_A = nn.LayerNorm(dim)
        self.norm2_B = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp_A = Mlp(in_features=dim, hidden_features=hidden, act_layer=nn.GELU)
        self.mlp_B = Mlp(in_features=dim, hidden_features=hidden, act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        H, W = x_size
        B, L, C = x.shape
        shortcut_A, shortcut_B = x, y
        x = self.norm1_A(x)
        y = self.norm1_B(y)
        if self.fused_attn and not exporting():  # export: plain path (layouts are per concrete size)
            lay = self._layout(H, W, B, x.device)
            xw = permute_rows(x.reshape(B * L, C), lay.fwd, lay.inv)
            yw = permute_rows(y.reshape(B * L, C), lay.fwd, lay.inv)
            x = permute_rows(self.attn_A.forward_fused(xw, yw, lay, B), lay.inv, lay.fwd).view(B, L, C)
            y = permute_rows(self.attn_B.forward_fused(yw, xw, lay, B), lay.inv, lay.fwd).view(B, L, C)
        else:
            mask = self._plain_mask(H, W, x.device)
            xw, yw = self._to_windows(x, H, W), self._to_windows(y, H, W)
            x = self._from_windows(self.attn_A.forward_plain(xw, yw, mask), B, H, W)
            y = self._from_windows(self.attn_B.forward_plain(yw, xw, mask), B, H, W)
        x = shortcut_A + self.drop_path_A(x)
        x = x + self.drop_path_A(self.mlp_A(self.norm2_A(x)))
        y = shortcut_B + self.drop_path_B(y)
        y = y + self.drop_path_B(self.mlp_B(self.norm2_B(y)))
        return x, y

    def forward_inference(self, x: torch.Tensor, y: torch.Tensor,
                          x_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inference fast path for both streams (see :meth:`SwinTransformerBlock.forward_inference`)."""
        B, L, C = x.shape
        lay = self._layout(*x_size, B, x.device)
        xf, yf = x.reshape(B * L, C), y.reshape(B * L, C)
        out_x, out_y = torch.empty_like(xf), torch.empty_like(yf)
        for w0, idx in self._chunks(lay, B):
            xw, yw = xf.index_select(0, idx), yf.index_select(0, idx)
            nx, ny = _ln(self.norm1_A, xw), _ln(self.norm1_B, yw)
            xw = _linear_add(self.attn_A.proj, self.attn_A.attend_inference(nx, ny, lay, B, w0), xw)
            yw = _linear_add(self.attn_B.proj, self.attn_B.attend_inference(ny, nx, lay, B, w0), yw)
            out_x.index_copy_(0, idx, _mlp_residual(self.mlp_A, self.norm2_A, xw))
            out_y.index_copy_(0, idx, _mlp_residual(self.mlp_B, self.norm2_B, yw))
        return out_x.view(B, L, C), out_y.view(B, L, C)


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, shift 0 on even and ``window_size // 2`` on odd blocks."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 drop_path: Sequence[float], layout_cache: WindowLayoutCache, cross: bool = False):
        super().__init__()
        block = CrossSwinTransformerBlock if cross else SwinTransformerBlock
        self.blocks = nn.ModuleList([
            block(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio, drop_path[i],
                  layout_cache)
            for i in range(depth)])
        self.grad_checkpointing = False

    fast_path = True  # inference fast path (see ..layers._fast)

    def _use_inference_path(self, x: torch.Tensor) -> bool:
        return not self.training and use_fast(x, self) and all(b.fused_attn for b in self.blocks)

    def forward(self, x, x_size):
        if self._use_inference_path(x):
            for blk in self.blocks:
                x = blk.forward_inference(x, x_size)
            return x
        for blk in self.blocks:
            x = checkpoint_call(self.grad_checkpointing, blk, x, x_size)
        return x


class CrossBasicLayer(BasicLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, cross=True, **kwargs)

    def forward(self, x, y, x_size):
        if self._use_inference_path(x):
            for blk in self.blocks:
                x, y = blk.forward_inference(x, y, x_size)
            return x, y
        for blk in self.blocks:
            x, y = checkpoint_call(self.grad_checkpointing, blk, x, y, x_size)
        return x, y


class RSTB(nn.Module):
    """The released SwinFusion "RSTB": a :class:`BasicLayer` only (its residual conv and residual
    connection are commented out in the original)."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, drop_path, layout_cache):
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, mlp_ratio, drop_path, layout_cache)

    def forward(self, x, x_size):
        return self.residual_group(x, x_size)


class CRSTB(nn.Module):
    """The released SwinFusion "CRSTB": per-modality self-attention layers, then a cross-attention
    layer (no residual connections, as released)."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, drop_path, layout_cache):
        super().__init__()
        args = (dim, depth, num_heads, window_size, mlp_ratio, drop_path, layout_cache)
        self.residual_group = CrossBasicLayer(*args)
        self.residual_group_A = BasicLayer(*args)
        self.residual_group_B = BasicLayer(*args)

    def forward(self, x, y, x_size):
        x = self.residual_group_A(x, x_size)
        y = self.residual_group_B(y, x_size)
        return self.residual_group(x, y, x_size)


# --------------------------------------------------------------------------------------------
# backbone / decoder
# --------------------------------------------------------------------------------------------

def _init_weights(m: nn.Module) -> None:
    """The original ``_init_weights`` (convs keep PyTorch's default init)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


def _check_size(h: int, w: int, multiple: int, who: str) -> None:
    if h % multiple or w % multiple:
        raise ValueError(
            f'{who} needs H and W divisible by its window size {multiple}, got {h}x{w}; pad the inputs '
            f'(mtvif_zoo.fuse() reflect-pads to a multiple of pad_multiple and crops back, like the '
            f"original's check_image_size)")


def _dpr(rate: float, depths: Sequence[int]):
    """The original's schedule: ``linspace(0, rate, sum(depths))`` (timm's helper) split per stage."""
    flat = calculate_drop_path_rates(rate, sum(depths))
    return [flat[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # B C H W -> B (H W) C


def _image(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    B, _, C = x.shape
    # B x (H W) x C tokens -> a channels_last B x C x H x W view with the canonical strides (a
    # ``transpose().view()`` gives batch stride C when B == 1, which oneDNN reads as another layout
    # and reorders into a copy before every conv)
    return x.reshape(B, H, W, C).permute(0, 3, 1, 2)


@register_backbone('swinfusion')
class SwinFusionBackbone(nn.Module):
    """SwinFusion shallow stem + intra-modal Swin extraction + cross-modal Swin fusion.

    ``forward(vis, ir)`` -> ``B x embed_dim x H x W`` (the original ``forward_features_Fusion``);
    H and W must be multiples of ``window_size`` (``pad_multiple``).
    """

    def __init__(self, in_chans: int = 3, embed_dim: int = 60, window_size: int = 8, num_heads: int = 6,
                 mlp_ratio: float = 2., ex_depth: int = 4, fusion_depths: Sequence[int] = (2, 2),
                 drop_path_rate: float = 0.1, fused_attn: bool = True):
        super().__init__()
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.window_size = window_size
        self.pad_multiple = window_size
        self.num_features = embed_dim
        stem = int(embed_dim / 2)
        self.layout_cache = WindowLayoutCache()
        cfg = dict(dim=embed_dim, num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio,
                   layout_cache=self.layout_cache)

        self.conv_first1 = nn.Conv2d(in_chans, stem, 3, 1, 1)
        self.conv_first2 = nn.Conv2d(stem, embed_dim, 3, 1, 1)
        self.patch_norm = nn.LayerNorm(embed_dim)
        dpr_ex, = _dpr(drop_path_rate, [ex_depth])
        self.layers_Ex_A = nn.ModuleList([RSTB(depth=ex_depth, drop_path=dpr_ex, **cfg)])
        self.norm_Ex_A = nn.LayerNorm(embed_dim)
        self.layers_Ex_B = nn.ModuleList([RSTB(depth=ex_depth, drop_path=dpr_ex, **cfg)])
        self.norm_Ex_B = nn.LayerNorm(embed_dim)
        self.layers_Fusion = nn.ModuleList([
            CRSTB(depth=d, drop_path=dp, **cfg) for d, dp in zip(fusion_depths, _dpr(drop_path_rate, fusion_depths))])
        self.norm_Fusion_A = nn.LayerNorm(embed_dim)
        self.norm_Fusion_B = nn.LayerNorm(embed_dim)
        self.conv_after_body_Fusion = nn.Conv2d(2 * embed_dim, embed_dim, 3, 1, 1)
        self.register_buffer(
            'img_mean', torch.tensor(RGB_MEAN).view(1, 3, 1, 1) if in_chans == 3 else None, persistent=False)
        self.apply(_init_weights)
        set_fused_attn(self, fused_attn)
        self.feature_info = [dict(num_chs=2 * embed_dim, reduction=1, module=m)
                             for m in ('conv_first2', 'norm_Ex_A', 'norm_Fusion_A')]
        self.feature_info.append(dict(num_chs=embed_dim, reduction=1, module='conv_after_body_Fusion'))

    fast_path = True  # channels_last maps + inference kernels (see ..layers._fast)
    input_mean = RGB_MEAN  # subtracted from 3-channel inputs
    first_conv = ('conv_first1',)  # one stem, shared by both modalities (as in the original)
    num_feature_levels = 4  # len(feature_info)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every Swin block (self- and cross-attention) in training."""
        for m in self.modules():
            if isinstance(m, BasicLayer):
                m.grad_checkpointing = enable

    def forward_intermediates(self, vis: torch.Tensor, ir: torch.Tensor):
        """``cat(vis, ir)`` maps after the stem, the intra-modal (Ex) stage and the fusion stage
        (120 channels), then the output (60 channels); all full resolution. Returns ``(output, levels)``."""
        B, _, H, W = vis.shape
        _check_size(H, W, self.pad_multiple, 'SwinFusionBackbone')
        out = []
        x, y, size = self._embed(vis, ir, out)
        for layer in self.layers_Ex_A:
            x = layer(x, size)
        for layer in self.layers_Ex_B:
            y = layer(y, size)
        x, y = self.norm_Ex_A(x), self.norm_Ex_B(y)
        out.append(_image(torch.cat([x, y], -1), H, W))
        x, y = self.patch_norm(x), self.patch_norm(y)
        for layer in self.layers_Fusion:
            x, y = layer(x, y, size)
        xy = _image(torch.cat([self.norm_Fusion_A(x), self.norm_Fusion_B(y)], -1), H, W)
        out.append(xy)
        out.append(self._fuse_out(xy))
        return out[-1], out

    def _embed(self, vis, ir, out=None):
        if vis.shape != ir.shape:
            raise ValueError(f'vis and ir must have the same shape, got {tuple(vis.shape)} and {tuple(ir.shape)}')
        vis, ir = to_channels_last(vis, self), to_channels_last(ir, self)  # token views without copies
        if self.img_mean is not None:
            vis = vis - self.img_mean.to(vis.dtype)
            ir = ir - self.img_mean.to(ir.dtype)
        sv, si = self._stem(vis), self._stem(ir)
        if out is not None:
            out.append(torch.cat([sv, si], 1))
        return self.patch_norm(_tokens(sv)), self.patch_norm(_tokens(si)), tuple(vis.shape[-2:])

    def _fuse_out(self, xy):
        if use_fast(xy, self):
            return conv_act(self.conv_after_body_Fusion, xy, 'leaky_relu', [0.2])
        return F.leaky_relu(self.conv_after_body_Fusion(xy), 0.2)

    def _stem(self, x):
        if use_fast(x, self):
            x = image_layer(lambda t: conv_act(self.conv_first1, t, 'leaky_relu', [0.2]), x)  # fp32 under autocast
            return conv_act(self.conv_first2, x, 'leaky_relu', [0.2])
        x = F.leaky_relu(image_layer(self.conv_first1, x), 0.2)
        return F.leaky_relu(self.conv_first2(x), 0.2)

    def forward(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        if vis.shape != ir.shape:
            raise ValueError(f'vis and ir must have the same shape, got {tuple(vis.shape)} and {tuple(ir.shape)}')
        B, _, H, W = vis.shape
        _check_size(H, W, self.pad_multiple, 'SwinFusionBackbone')
        x, y, size = self._embed(vis, ir)
        for layer in self.layers_Ex_A:
            x = layer(x, size)
        for layer in self.layers_Ex_B:
            y = layer(y, size)
        # the original un-embeds, re-embeds (a reshape) and re-applies the shared patch norm
        x = self.patch_norm(self.norm_Ex_A(x))
        y = self.patch_norm(self.norm_Ex_B(y))
        for layer in self.layers_Fusion:
            x, y = layer(x, y, size)
        # the channel concatenation on the token matrices gives a channels_last map (``torch.cat`` of
        # the two images along dim 1 returned a contiguous NCHW map for B = 1: 2x slower with the conv)
        return self._fuse_out(_image(torch.cat([self.norm_Fusion_A(x), self.norm_Fusion_B(y)], -1), H, W))


class SwinFusionDecoder(nn.Module):
    """The original SwinFusion reconstruction (``forward_features_Re``): patch norm, one RSTB of
    ``depth`` Swin blocks, ``norm_Re``, 3x3 convs ``embed_dim -> embed_dim/2 -> embed_dim/4 ->
    out_chans`` with LeakyReLU(0.2) between; adds back the image mean (RGB mean for
    ``out_chans=3``, 0 otherwise). Not clamped. ``in_chs != embed_dim``: a 1x1 conv ``proj``
    first."""

    out_conv = 'conv_last3'  # the conv that writes the fused image (``in_chans`` adaptation)
    output_mean = RGB_MEAN  # added back to a 3-channel output

    def __init__(self, in_chs: int = 60, out_chans: int = 3, embed_dim: int = 60, depth: int = 4,
                 num_heads: int = 6, window_size: int = 8, mlp_ratio: float = 2., drop_path_rate: float = 0.1,
                 fused_attn: bool = True):
        super().__init__()
        self.in_chs = in_chs
        self.out_chans = out_chans
        self.embed_dim = embed_dim
        self.window_size = window_size
        self.pad_multiple = window_size
        self.layout_cache = WindowLayoutCache()
        self.proj = nn.Conv2d(in_chs, embed_dim, 1) if in_chs != embed_dim else None
        self.patch_norm = nn.LayerNorm(embed_dim)
        dpr_re, = _dpr(drop_path_rate, [depth])
        self.layers_Re = nn.ModuleList([
            RSTB(embed_dim, depth, num_heads, window_size, mlp_ratio, dpr_re, self.layout_cache)])
        self.norm_Re = nn.LayerNorm(embed_dim)
        stem = int(embed_dim / 2)
        self.conv_last1 = nn.Conv2d(embed_dim, stem, 3, 1, 1)
        self.conv_last2 = nn.Conv2d(stem, int(stem / 2), 3, 1, 1)
        self.conv_last3 = nn.Conv2d(int(stem / 2), out_chans, 3, 1, 1)
        self.register_buffer(
            'img_mean', torch.tensor(RGB_MEAN).view(1, 3, 1, 1) if out_chans == 3 else None, persistent=False)
        self.apply(_init_weights)
        set_fused_attn(self, fused_attn)

    fast_path = True  # channels_last maps + inference kernels (see ..layers._fast)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_channels_last(x, self)
        if self.proj is not None:
            x = self.proj(x)
        _, _, H, W = x.shape
        _check_size(H, W, self.pad_multiple, 'SwinFusionDecoder')
        t = self.patch_norm(_tokens(x))
        for layer in self.layers_Re:
            t = layer(t, (H, W))
        x = _image(self.norm_Re(t), H, W)
        if use_fast(x, self):
            x = conv_act(self.conv_last2, conv_act(self.conv_last1, x, 'leaky_relu', [0.2]), 'leaky_relu', [0.2])
            out = output_conv(self.conv_last3, x)  # fp32 under autocast (bf16 / fp16)
            x = conv_act(self.conv_last3, x) if out is None else out
        else:
            x = F.leaky_relu(self.conv_last1(x), 0.2)
            x = F.leaky_relu(self.conv_last2(x), 0.2)
            out = output_conv(self.conv_last3, x)
            x = self.conv_last3(x) if out is None else out
        if self.img_mean is not None:
            x = x + self.img_mean.to(x.dtype)
        return x


def set_fused_attn(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Select the SDPA path (``True``, default) or the plain reference path on every Swin block."""
    for m in module.modules():
        if isinstance(m, _WindowBlockBase):
            m.fused_attn = bool(enabled)
    return module


_DECODER_PREFIXES = ('layers_Re.', 'norm_Re.', 'conv_last1.', 'conv_last2.', 'conv_last3.')
_DEAD_PREFIXES = ('conv_first1_B.', 'conv_first2_B.')


def _swap_ab(key: str) -> str:
    """``..._A.`` <-> ``..._B.`` in every name component (``layers_Ex_A`` / ``attn_B`` / ``norm1_A`` ...)."""
    return re.sub(r'_([AB])(?=\.)', lambda m: '_B' if m.group(1) == 'A' else '_A', key)


@register_original_converter('swinfusion')
def convert_original_state_dict(
        state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Split an original SwinFusion (``network_swinfusion1.SwinFusion``) state dict into
    ``(backbone_state_dict, decoder_state_dict)`` for :class:`SwinFusionBackbone` /
    :class:`SwinFusionDecoder` (same ``in_chans`` / ``out_chans``).

    Branches: the released infrared-visible options train and test the original with **A =
    infrared, B = visible Y** (``dataroot_A`` = ir, ``dataroot_B`` = vi), while the zoo's backbone
    runs its first input (visible) through the ``_A`` modules. The converter therefore swaps every
    ``_A`` / ``_B`` module (``layers_Ex``, ``norm_Ex``, ``residual_group``, ``attn``, ``norm1/2``,
    ``mlp``, ``norm_Fusion``) and the two 60-channel input halves of ``conv_after_body_Fusion``
    (the original concatenates ``[A, B]`` = ``[ir, vis]``), so ``backbone(vis, ir)`` computes the
    original's ``forward(A=ir, B=vis)``. The shared stem (``conv_first{1,2}_A``, used by both
    branches) is renamed to ``conv_first{1,2}``; the dead ``conv_first*_B`` convs and the buffers
    (``attn_mask``, ``relative_position_index``) are dropped; the shared ``patch_embed.norm`` is
    copied into both ``patch_norm`` s.
    """
    if 'params' in state_dict and isinstance(state_dict['params'], dict):
        state_dict = state_dict['params']
    backbone, decoder = {}, {}
    for k, v in state_dict.items():
        if k.startswith('module.'):
            k = k[len('module.'):]
        if k.endswith(('attn_mask', 'relative_position_index')) or k.startswith(_DEAD_PREFIXES):
            continue
        if k.startswith('patch_embed.norm.'):
            name = 'patch_norm.' + k[len('patch_embed.norm.'):]
            backbone[name] = v
            decoder[name] = v.clone()
        elif k.startswith(_DECODER_PREFIXES):
            decoder[k] = v
        elif k.startswith(('conv_first1_A.', 'conv_first2_A.')):
            backbone[k.replace('_A.', '.', 1)] = v
        elif k == 'conv_after_body_Fusion.weight':
            a, b = v.chunk(2, dim=1)  # input channels [A = ir, B = vis] -> [vis, ir]
            backbone[k] = torch.cat([b, a], dim=1).contiguous()
        else:
            backbone[_swap_ab(k)] = v
    return backbone, decoder


SwinFusionBackbone.original_decoder = SwinFusionDecoder
