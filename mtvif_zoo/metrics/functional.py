"""Fusion metrics as torch functions over batches.

Every function takes ``B x C x H x W`` tensors on the **0..255 scale** (any float or integer dtype;
computed in float64 on the tensors' device, CPU or CUDA) and returns a float64 tensor of shape
``(B,)``. Multi-channel images are handled **per channel** and the channel values averaged (VIFB's
rule); a source with one channel is reused for every channel of the fused image. To compute on
grey images, convert first (:func:`mtvif_zoo.metrics.compute` does this per convention). The
keyword defaults are the VIFB convention unless stated; :mod:`.conventions` lists both.

Degenerate inputs never give NaN; the documented results are:

* EN of a constant image is 0; MI involving a constant image is 0 (its entropy is 0).
* SSIM / MS-SSIM stay finite (C1, C2 > 0); two equal constant images give exactly 1 per source.
* Qabf is 0 when neither source has any gradient (0/0 in the references). Like the references,
  the Sobel filters zero-pad, so the border of a non-zero constant image is an edge.
* VIF of a source without texture (reference variance < eps everywhere) is 1, CDDFuse's rule
  for its 0/0 (piq's ``(0 + eps) / (0 + eps)`` gives the same).
* SCD: a correlation whose variance term is 0 counts as 0.
* PSNR is ``inf`` when the fused image equals both sources.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ._colour import linear_rgb_to_lab, srgb_to_linear
from ._filters import banded_moments, correlate_valid, gaussian_taps, uniform_valid_float32

__all__ = [
    'entropy', 'standard_deviation', 'spatial_frequency', 'average_gradient',
    'mutual_information', 'mutual_information_pair', 'qabf', 'ssim', 'ssim_pair', 'ms_ssim',
    'ms_ssim_pair', 'vif', 'vif_pair', 'scd', 'psnr', 'delta_e', 'ciede2000',
]

_F64 = torch.float64


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------

def _as4d(x: torch.Tensor, name: str, keep_uint8: bool = False) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor (B x C x H x W, 0..255), got {type(x).__name__}')
    if x.dim() == 2:
        x = x[None, None]
    elif x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f'{name} must be B x C x H x W, got shape {tuple(x.shape)}')
    return x if keep_uint8 and x.dtype == torch.uint8 else x.to(_F64)


def _match(fused: torch.Tensor, *others: Tuple[torch.Tensor, str],
           keep_uint8: bool = False) -> Tuple[torch.Tensor, ...]:
    """Check shapes. Sources keep batch 1 or B and channels 1 or C (they broadcast against the
    fused image), so statistics of a source shared by a batch are computed once. ``keep_uint8``:
    uint8 tensors are returned as they are (for integer-level metrics), others as float64."""
    f = _as4d(fused, 'fused', keep_uint8)
    B, C, H, W = f.shape
    out = [f]
    for x, name in others:
        x = _as4d(x, name, keep_uint8)
        if x.shape[-2:] != f.shape[-2:]:
            raise ValueError(f'{name} image is {x.shape[-1]}x{x.shape[-2]} (WxH) but the fused image is '
                             f'{W}x{H}; metrics need images of one size (resize or crop first)')
        if x.shape[0] not in (1, B):
            raise ValueError(f'{name} batch size {x.shape[0]} does not match fused batch size {B}')
        if x.shape[1] not in (1, C):
            raise ValueError(f'{name} has {x.shape[1]} channels but the fused image has {C}; convert the '
                             'sources to grey first (mtvif_zoo.metrics.compute does this per convention)')
        out.append(x)
    return tuple(out)


def _plane_dot(x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-(batch, channel) sum over H x W of ``x * y`` (``x * x`` without ``y``) as one batched
    BLAS dot product: no product image is made (faster than ``(x * y).sum((2, 3))`` on CPU,
    ``benchmarks/bench_metrics.py``; the same sum in another order, float rounding only). Broadcasts like ``x * y``."""
    y = x if y is None else y
    shape = torch.broadcast_shapes(x.shape, y.shape)
    x, y = x.expand(shape), y.expand(shape)
    n, L = shape[0] * shape[1], shape[2] * shape[3]
    return torch.bmm(x.reshape(n, 1, L), y.reshape(n, L, 1)).view(shape[0], shape[1])


def _bc(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-(batch, channel) result of a source to the fused image's (B, C)."""
    return x.expand(like.shape[0], like.shape[1], *x.shape[2:])


#: On CPU the heavy per-pixel pipelines (SSIM, Qabf) run plane by plane in row tiles of about this
#: many elements: cache resident, no large temporaries (page faults), single-threaded per op
#: (ATen's parallel grain is 32768), which is fast and predictable on shared cores. 0 = whole
#: tensors at once (what CUDA always does); both paths give the same numbers (tested).
TILE_ELEMENTS = (1 << 15) - 1


def _tiled(x: torch.Tensor) -> bool:
    return x.device.type == 'cpu' and TILE_ELEMENTS > 0


def _rows_per_tile(width: int) -> int:
    return max(1, TILE_ELEMENTS // max(width, 1))


def _band_rows(n_sources: int, width: int) -> int:
    """Output rows per band of :func:`banded_moments`: its stacked planes stay within ~2 MB (L2)."""
    return max(8, (8 * TILE_ELEMENTS) // ((2 + 3 * n_sources) * max(width, 1)))


def _plane(s: torch.Tensor, b: int, c: int) -> torch.Tensor:
    """Plane (b, c) of a tensor that may broadcast in batch and channel."""
    return s[b if s.shape[0] > 1 else 0, c if s.shape[1] > 1 else 0]


def _tiled_sums(fn, maps: Sequence[torch.Tensor], B: int, C: int) -> Tuple[torch.Tensor, ...]:
    """Per-(batch, channel) sums over H x W of the per-pixel terms ``fn(*maps)`` (a tuple).

    ``maps`` are ``Bx x Cx x ... x H x W`` (broadcastable to B x C). On CPU the terms are evaluated
    plane by plane in row tiles (nothing large is allocated); elsewhere in one go.
    """
    H, W = maps[0].shape[-2:]
    if not _tiled(maps[0]):
        return tuple(t.sum((-2, -1)).expand(B, C).to(_F64) for t in fn(*maps))
    per_row = max(_plane(m, 0, 0).numel() // H for m in maps)  # elements of one row of every plane
    rows = _rows_per_tile(per_row)
    acc = None
    for b in range(B):
        for c in range(C):
            planes = [_plane(m, b, c) for m in maps]
            tot = None
            for r0 in range(0, H, rows):
                terms = fn(*[p[..., r0:r0 + rows, :] for p in planes])
                part = [float(t.sum()) for t in terms]
                tot = part if tot is None else [x + y for x, y in zip(tot, part)]
            if acc is None:
                acc = [torch.zeros(B, C, dtype=_F64) for _ in tot]
            for a, v in zip(acc, tot):
                a[b, c] = v
    return tuple(acc)


# --------------------------------------------------------------------------------------------
# single-image statistics: EN, SD, SF, AG
# --------------------------------------------------------------------------------------------

def _quantize(x: torch.Tensor, how: str) -> torch.Tensor:
    if x.dtype == torch.uint8 and how in ('floor', 'round'):
        return x.to(torch.int64)  # already integer levels 0..255
    if how == 'floor':
        q = torch.floor(x)
    elif how == 'round':
        q = torch.round(x)
    else:
        raise ValueError(f"quantization must be 'floor' or 'round', got {how!r}")
    return q.clamp_(0, 255).to(torch.int64)


def _histograms(q: torch.Tensor, bins: int) -> torch.Tensor:
    """``N x P`` integer levels -> ``N x bins`` counts."""
    n = q.shape[0]
    offs = (torch.arange(n, device=q.device) * bins).unsqueeze(1)
    return torch.bincount((q + offs).reshape(-1), minlength=n * bins).reshape(n, bins)


def _entropy_from_counts(counts: torch.Tensor, total: float, dims) -> torch.Tensor:
    """-sum p log p (nats) with p = counts / total, as log(total) - sum(c log c) / total."""
    c = counts.to(_F64)
    clogc = torch.where(c > 0, c * torch.log(torch.where(c > 0, c, torch.ones_like(c))), torch.zeros_like(c))
    return math.log(total) - clogc.sum(dim=dims) / total


def entropy(fused: torch.Tensor, *, log_base: float = 2.0, quantization: str = 'floor') -> torch.Tensor:
    """EN: Shannon entropy of the 256-bin grey-level histogram, in bits for ``log_base=2``.

    ``quantization='floor'`` bins ``floor(x)`` (VIFB ``metricsEntropy.m``); ``'round'`` bins
    ``round(x)`` (CDDFuse ``np.uint8(np.round(x))``). Values are clamped to 0..255.
    Reference: Roberts, van Aardt, Ahmed, "Assessment of image fusion procedures using entropy,
    image quality, and multispectral classification", J. Appl. Remote Sens. 2008.
    """
    f = _as4d(fused, 'fused', keep_uint8=True)
    B, C, H, W = f.shape
    q = _quantize(f.reshape(B * C, H * W), quantization)
    h = _entropy_from_counts(_histograms(q, 256), H * W, dims=1) / math.log(log_base)
    return h.reshape(B, C).mean(1)


def standard_deviation(fused: torch.Tensor, *, ddof: int = 0) -> torch.Tensor:
    """SD: standard deviation of the pixel values (population, ``ddof=0``, in both references)."""
    f = _as4d(fused, 'fused')
    B, C = f.shape[:2]
    return torch.std(f.reshape(B, C, -1), dim=2, correction=ddof).mean(1)


def spatial_frequency(fused: torch.Tensor, *, definition: str = 'vifb') -> torch.Tensor:
    """SF = sqrt(RF^2 + CF^2) (Eskicioglu & Fisher 1995), row / column frequency of the fused image.

    ``'vifb'`` (``metricsSpatial_frequency.m``): RF^2 = sum of squared horizontal differences
    / (M N), CF^2 likewise; on an RGB image VIFB's ``[m,n]=size(F)`` makes N = 3W with the channels
    side by side, reproduced here. ``'mean'`` (CDDFuse): mean squared horizontal difference plus
    mean squared vertical difference, per channel, averaged over channels.
    """
    f = _as4d(fused, 'fused')
    B, C, H, W = f.shape
    if definition == 'vifb':
        g = torch.cat(f.unbind(1), dim=-1)[:, None]  # B x 1 x H x (C W)
        rf = _plane_dot(g[..., 1:] - g[..., :-1])[:, 0]
        cf = _plane_dot(g[..., 1:, :] - g[..., :-1, :])[:, 0]
        return torch.sqrt((rf + cf) / (H * C * W))
    if definition == 'mean':
        rf = _plane_dot(f[..., 1:] - f[..., :-1]) / (H * (W - 1))
        cf = _plane_dot(f[..., 1:, :] - f[..., :-1, :]) / ((H - 1) * W)
        return torch.sqrt(rf + cf).mean(1)
    raise ValueError(f"definition must be 'vifb' or 'mean', got {definition!r}")


def _matlab_gradient(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if n < 2:
        return torch.zeros_like(x)
    g = torch.empty_like(x)
    sl = lambda a, b: x.narrow(dim, a, b - a)  # noqa: E731
    torch.sub(sl(1, 2), sl(0, 1), out=g.narrow(dim, 0, 1))
    torch.sub(sl(n - 1, n), sl(n - 2, n - 1), out=g.narrow(dim, n - 1, 1))
    if n > 2:
        torch.sub(sl(2, n), sl(0, n - 2), out=g.narrow(dim, 1, n - 2)).div_(2)
    return g


def average_gradient(fused: torch.Tensor, *, normalisation: str = 'vifb') -> torch.Tensor:
    """AG: mean of sqrt((Gx^2 + Gy^2) / 2), G from MATLAB ``gradient`` (central differences inside,
    one-sided at the borders).

    ``'vifb'`` (``metricsAvg_gradient.m``) divides the sum by (M-1)(N-1); ``'mean'`` (CDDFuse)
    divides by M N. Per channel, averaged.
    """
    f = _as4d(fused, 'fused')
    B, C, H, W = f.shape
    gx, gy = _matlab_gradient(f, 3), _matlab_gradient(f, 2)
    # sqrt((gx^2 + gy^2) / 2) summed = sqrt(1/2) * sum(hypot(gx, gy)): one pass instead of five
    s = torch.hypot(gx, gy).sum((2, 3)).mul_(math.sqrt(0.5))
    if normalisation == 'vifb':
        s = s / max((H - 1) * (W - 1), 1)
    elif normalisation == 'mean':
        s = s / (H * W)
    else:
        raise ValueError(f"normalisation must be 'vifb' or 'mean', got {normalisation!r}")
    return s.mean(1)


# --------------------------------------------------------------------------------------------
# MI
# --------------------------------------------------------------------------------------------

def _mi_levels(x: torch.Tensor, quantization: str) -> torch.Tensor:
    """``N x P`` -> integer levels 0..255 per the quantization rule."""
    if quantization == 'minmax':
        x = x.to(_F64)
        mn = x.amin(1, keepdim=True)
        mx = x.amax(1, keepdim=True)
        rng = mx - mn
        v = (x - mn) / torch.where(rng > 0, rng, torch.ones_like(rng)) * 255.0
        fl = torch.floor(v)
        q = fl + ((v - fl) >= 0.5).to(v.dtype)  # int16(): half away from zero (v >= 0)
        q = torch.where(rng > 0, q, torch.zeros_like(q))
        return q.clamp_(0, 255).to(torch.int64)
    if quantization in ('round', 'floor'):
        return _quantize(x, quantization)
    raise ValueError(f"quantization must be 'minmax', 'round' or 'floor', got {quantization!r}")


def _mi_from_joint(joint: torch.Tensor, P: int) -> torch.Tensor:
    """``N x 256 x 256`` joint counts of P pixels -> MI in nats, ``N``."""
    n = joint.shape[0]
    ha = _entropy_from_counts(joint.sum(2), P, dims=1)
    hb = _entropy_from_counts(joint.sum(1), P, dims=1)
    hab = _entropy_from_counts(joint.reshape(n, -1), P, dims=1)
    return (ha + hb - hab).clamp_min(0.0)  # MI >= 0; removes -1e-16 rounding for independent images


def _mi_from_levels(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    """Levels ``Bx x Cx x P`` (broadcastable) -> MI in nats, ``B x C``."""
    qa, qb = torch.broadcast_tensors(qa, qb)
    B, C, P = qa.shape
    n = B * C
    offs = (torch.arange(n, device=qa.device) * 65536).reshape(B, C, 1)
    joint = torch.bincount((qa * 256 + qb + offs).reshape(-1), minlength=n * 65536).reshape(n, 256, 256)
    return _mi_from_joint(joint, P).reshape(B, C)


def _levels(x: torch.Tensor, quantization: str) -> torch.Tensor:
    B, C, H, W = x.shape
    return _mi_levels(x.reshape(B * C, H * W), quantization).reshape(B, C, H * W)


def _mi_core(f: torch.Tensor, sources, quantization: str):
    """MI(source; f) in nats for each (broadcastable) source -> list of ``B x C``."""
    q_src = [_levels(s, quantization) for s in sources]
    B, C, H, W = f.shape
    if not _tiled(f):
        qf = _levels(f, quantization)
        return [_mi_from_levels(q, qf) for q in q_src]
    out = [torch.empty(B, C, dtype=_F64) for _ in q_src]
    for bi in range(B):
        for ci in range(C):  # plane by plane: no large temporaries
            qf = _mi_levels(f[bi, ci].reshape(1, -1), quantization)[0]
            for k, q in enumerate(q_src):
                joint = torch.bincount(_plane(q, bi, ci) * 256 + qf, minlength=65536).reshape(1, 256, 256)
                out[k][bi, ci] = _mi_from_joint(joint, H * W)[0]
    return out


def mutual_information_pair(x: torch.Tensor, y: torch.Tensor, *, log_base: float = math.e,
                            quantization: str = 'minmax') -> torch.Tensor:
    """MI(x; y) from the joint 256 x 256 histogram of the quantised images, per channel, averaged.

    ``'minmax'``: each image min-max normalised to 0..255 and rounded half away from zero (VIFB
    ``metricsMutinf.m``; a constant image becomes all 0). ``'round'``: ``round(x)`` is the level
    (CDDFuse / sklearn ``mutual_info_score`` on integer grey levels). ``log_base=e`` gives nats.
    """
    xx, yy = _match(x, (y, 'y'), keep_uint8=True)
    return (_mi_core(xx, [yy], quantization)[0] / math.log(log_base)).mean(1)


def mutual_information(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor, *,
                       log_base: float = math.e, quantization: str = 'minmax') -> torch.Tensor:
    """MI = MI(vis; F) + MI(ir; F) (Qu, Zhang, Yan, Electronics Letters 2002), nats by default.

    Per channel (a 1-channel source is reused for each channel), channel values averaged; see
    :func:`mutual_information_pair` for the quantization rules.
    """
    f, a, b = _match(fused, (vis, 'visible'), (ir, 'infrared'), keep_uint8=True)
    ma, mb = _mi_core(f, [a, b], quantization)
    return ((ma + mb) / math.log(log_base)).mean(1)


# --------------------------------------------------------------------------------------------
# Qabf
# --------------------------------------------------------------------------------------------

def _zero_pad1(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``F.pad(x * scale, (1, 1, 1, 1))`` writing only the border zeros (F.pad fills everything first)."""
    H, W = x.shape[-2:]
    out = x.new_empty((*x.shape[:-2], H + 2, W + 2))
    inner = out[..., 1:-1, 1:-1]
    if scale != 1:
        torch.mul(x, scale, out=inner)
    else:
        inner.copy_(x)
    for border in (out[..., 0, :], out[..., -1, :], out[..., 1:-1, 0], out[..., 1:-1, -1]):
        border.zero_()
    return out


def _sobel_padded(p: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """MATLAB ``conv2(x, h3, 'same')`` and ``conv2(x, h1, 'same')`` from the zero-padded ``p``
    (true convolution) with h3 = [-1 0 1; -2 0 2; -1 0 1], h1 = [1 2 1; 0 0 0; -1 -2 -1]."""
    # (p0 + p2) + 2 p1: the two-term sum first, then the exact doubling added (fewer temporaries;
    # for integer images every value is exact, otherwise float rounding order only)
    v = torch.add(p[..., :-2, :], p[..., 2:, :]).add_(p[..., 1:-1, :], alpha=2)   # vertical [1 2 1]
    sx = torch.sub(v[..., :, :-2], v[..., :, 2:])                                # conv flips: left - right
    h = torch.add(p[..., :, :-2], p[..., :, 2:]).add_(p[..., :, 1:-1], alpha=2)  # horizontal [1 2 1]
    sy = torch.sub(h[..., 2:, :], h[..., :-2, :])                                # below - above
    return sx, sy


def _grad_angle(p: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradient magnitude and ``atan(Sy/Sx)`` (pi/2 where Sx == 0) of a zero-padded image."""
    sx, sy = _sobel_padded(p)
    g = torch.mul(sx, sx).add_(torch.mul(sy, sy)).sqrt_()
    # Sx == 0 makes Sy/Sx NaN (Sy = 0) or +-inf, and only that does (quotients of these gradients do
    # not overflow): mapping all three to +inf gives atan = pi/2 there, branch-free (a masked fill on
    # this data-dependent mask is ~15x slower)
    a = torch.div(sy, sx).nan_to_num_(nan=math.inf, posinf=math.inf, neginf=math.inf).atan_()
    return g, a


def _q_edge(gs, as_, gf, af, params):
    """Q^{SF} per pixel. G = min/max of the magnitudes, but g_F where they are equal (both references)."""
    L, Tg, kg, Dg, Ta, ka, Da = params
    G = torch.where(gs == gf, gf, torch.minimum(gs, gf) / torch.maximum(gs, gf))
    Qg = torch.sigmoid(G.sub_(Dg).mul_(-kg)).mul_(Tg)           # Tg / (1 + exp(kg (G - Dg)))
    A = torch.abs(as_ - af).mul_(-2.0 / math.pi).add_(1.0)      # 1 - |a_S - a_F| / (pi / 2)
    Qa = torch.sigmoid(A.sub_(Da).mul_(-ka)).mul_(Ta)           # Ta / (1 + exp(ka (A - Da)))
    return Qg.mul_(Qa)


def qabf(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor, *,
         params: Sequence[float] = (1.0, 0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8),
         gradient_scale: float = 255.0) -> torch.Tensor:
    """Q^{AB/F}: gradient-based edge-preservation (Xydeas & Petrovic, Electronics Letters 2000).

    Sobel gradients with MATLAB ``conv2(.., 'same')`` (zero padding); orientation ``atan(Sy/Sx)``
    (not atan2), pi/2 where Sx == 0; Q^{XF} = Tg/(1+exp(kg(G-Dg))) * Ta/(1+exp(ka(A-Da))) with
    ``params = (L, Tg, kg, Dg, Ta, ka, Da)``; result sum(Q^{AF} g_A^L + Q^{BF} g_B^L) /
    sum(g_A^L + g_B^L). Like both references (VIFB ``metricsQabf.m``, CDDFuse ``Evaluator.Qabf``),
    G is set to g_F itself where g_X == g_F; ``gradient_scale`` multiplies the images first
    (VIFB: 255, CDDFuse: 1), which changes only that case. 0 when neither source has a gradient.
    """
    f, a, b = _match(fused, (vis, 'visible'), (ir, 'infrared'))
    params = tuple(float(p) for p in params)
    L = params[0]
    fp, srcs_p = _zero_pad1(f, gradient_scale), [_zero_pad1(x, gradient_scale) for x in (a, b)]
    B, C, H, W = f.shape
    pre = None
    if not _tiled(f) or not all(x.shape[0] == B and x.shape[1] == C for x in (a, b)):
        # whole tensors, or sources shared by a batch: their gradients once, image-sized
        pre = [_grad_weight(sp, L) for sp in srcs_p]
        den = pre[0][2].sum((2, 3)) + pre[1][2].sum((2, 3))  # sources only: per (Bs, Cs)
    if not _tiled(f):
        gf, af = _grad_angle(fp)
        num = sum((_q_edge(g, ang, gf, af, params) * w).sum((2, 3)) for g, ang, w in pre)
        return _qabf_ratio(num, _bc(den, num)).mean(1)
    # CPU: row tiles of the fused image; the sources' gradients per tile too unless precomputed
    num, den_t = torch.zeros(B, C, dtype=_F64), torch.zeros(B, C, dtype=_F64)
    rows = _rows_per_tile(W + 2)
    for bi in range(B):
        for ci in range(C):
            n_acc = d_acc = 0.0
            for r0 in range(0, H, rows):
                r1 = min(H, r0 + rows)
                gf, af = _grad_angle(fp[bi, ci, r0:r1 + 2])
                for k, sp in enumerate(srcs_p):
                    if pre is not None:
                        g, ang, w = (_plane(t, bi, ci)[r0:r1] for t in pre[k])
                    else:
                        g, ang, w = _grad_weight(sp[bi, ci, r0:r1 + 2], L)
                        d_acc += float(torch.sum(w))
                    n_acc += float(torch.sum(_q_edge(g, ang, gf, af, params).mul_(w)))
            num[bi, ci], den_t[bi, ci] = n_acc, d_acc
    return _qabf_ratio(num, _bc(den, num) if pre is not None else den_t).mean(1)


def _grad_weight(p: torch.Tensor, L: float):
    """Gradient magnitude, angle and weight ``g^L`` of a zero-padded image."""
    g, ang = _grad_angle(p)
    return g, ang, (g if L == 1 else g ** L)


def _qabf_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------

class _SSIMConfig:
    def __init__(self, window='gaussian', win_size=11, sigma=1.5, data_range=255.0, k=(0.01, 0.03),
                 border='valid', sample_covariance=False, dtype='float64'):
        if window not in ('gaussian', 'uniform'):
            raise ValueError(f"window must be 'gaussian' or 'uniform', got {window!r}")
        if border not in ('valid', 'reflect_crop'):
            raise ValueError(f"border must be 'valid' or 'reflect_crop', got {border!r}")
        if dtype not in ('float64', 'float32'):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        if win_size % 2 != 1:
            raise ValueError('win_size must be odd')
        self.window, self.win_size, self.sigma = window, int(win_size), float(sigma)
        self.data_range, self.k, self.dtype = float(data_range), (float(k[0]), float(k[1])), dtype
        # 'reflect_crop' (scikit-image: filter with reflected borders, crop (win-1)/2 per side) keeps
        # exactly the positions whose window lies inside the image, i.e. the 'valid' region.
        self.border = border
        n = self.win_size ** 2
        self.cov_norm = n / (n - 1) if sample_covariance else 1.0
        self.taps = (gaussian_taps(self.win_size, self.sigma) if window == 'gaussian'
                     else [1.0 / self.win_size] * self.win_size)
        self._f32 = {}

    def f32_scalars(self, device) -> Tuple[torch.Tensor, ...]:
        """cov_norm, C1, C2 and 2 as float32 scalars (numpy casts the Python floats to float32)."""
        key = str(device)
        if key not in self._f32:
            C1 = (self.k[0] * self.data_range) ** 2
            C2 = (self.k[1] * self.data_range) ** 2
            self._f32[key] = tuple(torch.tensor(v, dtype=torch.float32, device=device)
                                   for v in (self.cov_norm, C1, C2, 2.0))
        return self._f32[key]

    def filt(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype == 'float32':
            if self.window == 'uniform':
                return uniform_valid_float32(x, self.win_size)
            # scipy.ndimage.gaussian_filter on float32: float64 accumulation, float32 between passes
            y = correlate_valid(x.to(torch.float32).to(_F64), self.taps, [1.0])
            y = y.to(torch.float32).to(_F64)
            return correlate_valid(y, [1.0], self.taps).to(torch.float32)
        return correlate_valid(x, self.taps)


def _ssim_maps(x_stats, y_stats, xy_f, cfg: _SSIMConfig):
    """SSIM map from filtered statistics (mu, E[x^2]) of x and y, and filtered x*y."""
    ux, uxx = x_stats
    uy, uyy = y_stats
    C1 = (cfg.k[0] * cfg.data_range) ** 2
    C2 = (cfg.k[1] * cfg.data_range) ** 2
    if cfg.dtype == 'float32':
        # scikit-image's float32 expression order (numpy casts the Python scalars to float32)
        cn, c1, c2, two = cfg.f32_scalars(ux.device)
        vx = cn * (uxx - ux * ux)
        vy = cn * (uyy - uy * uy)
        vxy = cn * (xy_f - ux * uy)
        A1 = two * ux * uy + c1
        A2 = two * vxy + c2
        B1 = ux * ux + uy * uy + c1
        B2 = vx + vy + c2
        return ((A1 * A2) / (B1 * B2)).to(_F64), None
    vx = cfg.cov_norm * (uxx - ux * ux)
    vy = cfg.cov_norm * (uyy - uy * uy)
    vxy = cfg.cov_norm * (xy_f - ux * uy)
    cs = (2 * vxy + C2) / (vx + vy + C2)
    return ((2 * ux * uy + C1) / (ux * ux + uy * uy + C1)) * cs, cs


def _ssim_sum_f64(mu_s, mu2_s, var_s, mu_f, mu2_f, var_f, cross, cfg: _SSIMConfig) -> float:
    """Sum of the float64 SSIM map of one tile, with the per-image terms precomputed."""
    C1 = (cfg.k[0] * cfg.data_range) ** 2
    C2 = (cfg.k[1] * cfg.data_range) ** 2
    m = mu_s * mu_f
    num2 = cross.sub_(m)
    if cfg.cov_norm != 1.0:
        num2.mul_(cfg.cov_norm)
    num2.mul_(2).add_(C2)                       # 2 cov + C2
    num1 = m.mul_(2).add_(C1)                   # 2 mu_s mu_f + C1
    den = (mu2_s + mu2_f).add_(C1).mul_((var_s + var_f).add_(C2))
    return float(num1.mul_(num2).div_(den).sum())


def _ssim_input(x: torch.Tensor, cfg: _SSIMConfig) -> torch.Tensor:
    return x.to(torch.float32).to(_F64) if cfg.dtype == 'float32' else x


def _small_integers(x: torch.Tensor) -> bool:
    """All values are integers in -255..255 (8-bit images, rounded grey images)."""
    if x.numel() == 0:
        return False
    mn, mx = torch.aminmax(x)
    return float(mn) >= -255 and float(mx) <= 255 and torch.equal(torch.round(x), x)


def _ssim_uniform_f32_banded(f: torch.Tensor, sources, cfg: _SSIMConfig):
    """CPU path of scikit-image's float32 uniform-window SSIM for integer images (the 'paper'
    convention): per plane, in bands, the moments of the fused image and every source from one
    stacked :func:`banded_moments` call (bit for bit scipy's float32 ``uniform_filter``), then the
    float32 SSIM map of each source, summed in float64 like ``S.mean(dtype=float64)``."""
    w = cfg.win_size
    B, C, H, W = f.shape
    Ho, Wo = H - w + 1, W - w + 1
    out = [torch.zeros(B, C, dtype=_F64) for _ in sources]
    for bi in range(B):
        for ci in range(C):
            fp = f[bi, ci]
            srcs = [_plane(x, bi, ci) for x in sources]
            for _, Z in banded_moments(fp, srcs, w, _band_rows(len(srcs), W), uniform_float32=True):
                for k in range(len(srcs)):
                    m, _ = _ssim_maps((Z[:, 2 + 3 * k], Z[:, 3 + 3 * k]), (Z[:, 0], Z[:, 1]), Z[:, 4 + 3 * k], cfg)
                    out[k][bi, ci] += float(m.sum())
    return [o / (Ho * Wo) for o in out]


def _ssim_core(f: torch.Tensor, sources, cfg: _SSIMConfig, integers: bool = False):
    """Mean SSIM map of ``f`` (B x C) against each (broadcastable) source -> list of ``B x C``.
    ``integers``: the images are known to be 8-bit (were uint8), no need to check."""
    w = cfg.win_size
    B, C, H, W = f.shape
    Ho, Wo = H - w + 1, W - w + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f'SSIM: image {W}x{H} is smaller than the {w}x{w} window')
    if (_tiled(f) and cfg.dtype == 'float32' and cfg.window == 'uniform'
            and (integers or all(_small_integers(x) for x in (f, *sources)))):
        return _ssim_uniform_f32_banded(f, sources, cfg)
    fx = _ssim_input(f, cfg)
    prepped = []
    for s in sources:
        sx = _ssim_input(s, cfg)
        prepped.append((sx, cfg.filt(sx), cfg.filt(sx * sx)))
    if not _tiled(f):
        stats_f = (cfg.filt(fx), cfg.filt(fx * fx))
        return [_ssim_maps((mu, e2), stats_f, cfg.filt(sx * fx), cfg)[0].mean((2, 3)).expand(B, C)
                for sx, mu, e2 in prepped]
    out = [torch.zeros(B, C, dtype=_F64) for _ in prepped]
    rows = _rows_per_tile(W)
    fast = cfg.dtype == 'float64'
    if fast:  # per-source terms once: mu, mu^2, variance
        prepped = [(sx, mu, mu * mu, cfg.cov_norm * (e2 - mu * mu)) for sx, mu, e2 in prepped]
    for bi in range(B):
        for ci in range(C):
            fp = fx[bi, ci]
            acc = [0.0] * len(prepped)
            for r0 in range(0, Ho, rows):
                r1 = min(Ho, r0 + rows)
                ft = fp[r0:r1 + w - 1]
                mu_f, e_ff = cfg.filt(ft), cfg.filt(ft * ft)
                if fast:
                    mu2_f = mu_f * mu_f
                    var_f = e_ff.sub_(mu2_f).mul_(cfg.cov_norm)
                for k, src in enumerate(prepped):
                    st = _plane(src[0], bi, ci)[r0:r1 + w - 1]
                    cross = cfg.filt(st * ft)
                    if fast:
                        _, mu, mu2, var = src
                        acc[k] += _ssim_sum_f64(_plane(mu, bi, ci)[r0:r1], _plane(mu2, bi, ci)[r0:r1],
                                                _plane(var, bi, ci)[r0:r1], mu_f, mu2_f, var_f, cross, cfg)
                    else:
                        _, mu, e2 = src
                        m, _ = _ssim_maps((_plane(mu, bi, ci)[r0:r1], _plane(e2, bi, ci)[r0:r1]), (mu_f, e_ff),
                                          cross, cfg)
                        acc[k] += float(m.sum())
            for k in range(len(prepped)):
                out[k][bi, ci] = acc[k] / (Ho * Wo)
    return out


def ssim_pair(x: torch.Tensor, y: torch.Tensor, *, window: str = 'gaussian', win_size: int = 11,
              sigma: float = 1.5, data_range: float = 255.0, k: Tuple[float, float] = (0.01, 0.03),
              border: str = 'valid', sample_covariance: bool = False, dtype: str = 'float64') -> torch.Tensor:
    """Mean SSIM (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004) of x and y, per channel, averaged.

    Defaults = Wang's reference / VIFB ``metricsSsim.m``: 11x11 Gaussian (sigma 1.5), 'valid'
    region, L = 255, population covariance, float64. scikit-image 0.19 defaults on float input
    (CDDFuse): ``window='uniform', win_size=7, data_range=2, border='reflect_crop',
    sample_covariance=True, dtype='float32'``. ``y`` may have batch / channel size 1 (broadcast).
    """
    cfg = _SSIMConfig(window, win_size, sigma, data_range, k, border, sample_covariance, dtype)
    xx, yy = _match(x, (y, 'y'))
    return _ssim_core(xx, [yy], cfg)[0].mean(1)


def ssim(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor, *, combine: str = 'sum', **kw) -> torch.Tensor:
    """SSIM(vis, F) + SSIM(ir, F) (``combine='sum'``, both references) or their mean.

    Keyword arguments as :func:`ssim_pair`. The fused image's statistics are filtered once, and a
    source shared by the batch (batch size 1) once.
    """
    cfg = _SSIMConfig(**kw)
    integers = all(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 for x in (fused, vis, ir))
    f, a, b = _match(fused, (vis, 'visible'), (ir, 'infrared'))
    sa, sb = _ssim_core(f, [a, b], cfg, integers)
    return _combine(sa.mean(1) + sb.mean(1), combine)


def _combine(total: torch.Tensor, combine: str) -> torch.Tensor:
    if combine == 'sum':
        return total
    if combine == 'mean':
        return total / 2
    raise ValueError(f"combine must be 'sum' or 'mean', got {combine!r}")


# --------------------------------------------------------------------------------------------
# MS-SSIM
# --------------------------------------------------------------------------------------------

_MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gauss_stats(x: torch.Tensor, taps) -> Tuple[torch.Tensor, torch.Tensor]:
    return correlate_valid(x, taps), correlate_valid(x * x, taps)


def _ms_ssim_terms(mu1, e1, mu2, e2, cross, C1, C2, fused_terms=None):
    """Per-pixel contrast-structure term and SSIM of pytorch_msssim's ``_ssim``, same expressions
    (in-place ops: the same roundings, fewer temporaries). ``fused_terms``: ``(mu2^2, e2 - mu2^2)``
    when already computed for another source (the same values)."""
    m22, s2 = fused_terms if fused_terms is not None else _ms_ssim_fused_terms(mu2, e2)
    m11, m12 = mu1 * mu1, mu1 * mu2
    s12 = torch.sub(cross, m12)
    den = torch.add(torch.sub(e1, m11), s2).add_(C2)                  # s1 + s2 + C2 (may broadcast)
    cs = s12.mul_(2).add_(C2).div_(den)                              # (2 s12 + C2) / (s1 + s2 + C2)
    lum = m12.mul_(2).add_(C1).div_(torch.add(m11, m22).add_(C1))    # (2 mu1 mu2 + C1) / (mu1^2 + mu2^2 + C1)
    return cs, lum.mul_(cs)


def _ms_ssim_fused_terms(mu2, e2):
    m22 = mu2 * mu2
    return m22, torch.sub(e2, m22)


def _avg_pool2(x: torch.Tensor) -> torch.Tensor:
    """pytorch_msssim's ``F.avg_pool2d(x, 2, padding=[s % 2 for s in x.shape[2:]])``; even sizes as
    the same four-term sum in the same order (bit for bit, without the pooling kernel's overhead)."""
    H, W = x.shape[-2:]
    if H % 2 or W % 2 or not x.is_contiguous():
        return F.avg_pool2d(x, kernel_size=2, padding=[H % 2, W % 2])
    v = x.view(*x.shape[:-2], H // 2, 2, W // 2, 2)
    return (v[..., 0, :, 0] + v[..., 0, :, 1]).add_(v[..., 1, :, 0]).add_(v[..., 1, :, 1]).div_(4)


def _ms_ssim_core(f: torch.Tensor, sources, *, data_range, win_size, sigma, weights, k=(0.01, 0.03)):
    """MS-SSIM of ``f`` (B x C) against each source (broadcastable); fused statistics shared."""
    taps = gaussian_taps(win_size, sigma)
    levels = len(weights)
    if min(f.shape[-2:]) <= (win_size - 1) * 2 ** (levels - 1):
        raise ValueError(f'MS-SSIM needs both image sides > {(win_size - 1) * 2 ** (levels - 1)} pixels '
                         f'({levels} scales, {win_size}x{win_size} window); got {f.shape[-1]}x{f.shape[-2]}')
    C1 = (k[0] * data_range) ** 2
    C2 = (k[1] * data_range) ** 2
    B, C = f.shape[:2]
    srcs = list(sources)
    mcs = [[] for _ in srcs]
    ssim_pc = [None] * len(srcs)
    for i in range(levels):
        npix = (f.shape[-2] - win_size + 1) * (f.shape[-1] - win_size + 1)
        if _tiled(f):
            # CPU: per plane, in bands whose moments (all sources at once) and terms stay in cache
            sums = [(torch.zeros(B, C, dtype=_F64), torch.zeros(B, C, dtype=_F64)) for _ in srcs]
            for bi in range(B):
                for ci in range(C):
                    fp = f[bi, ci]
                    for _, Z in banded_moments(fp, [_plane(x, bi, ci) for x in srcs], taps,
                                               _band_rows(len(srcs), fp.shape[-1])):
                        ft = _ms_ssim_fused_terms(Z[:, 0], Z[:, 1])  # shared by the sources
                        for n, (cs_sum, sm_sum) in enumerate(sums):
                            cs, sm = _ms_ssim_terms(Z[:, 2 + 3 * n], Z[:, 3 + 3 * n], Z[:, 0], Z[:, 1],
                                                    Z[:, 4 + 3 * n], C1, C2, ft)
                            cs_sum[bi, ci] += float(cs.sum())
                            sm_sum[bi, ci] += float(sm.sum())
        else:
            mu2, e2 = _gauss_stats(f, taps)
            sums = [_tiled_sums(lambda *t: _ms_ssim_terms(*t, C1, C2),
                                [*_gauss_stats(x, taps), mu2, e2, correlate_valid(x * f, taps)], B, C)
                    for x in srcs]
        for n, (cs, sm) in enumerate(sums):
            ssim_pc[n] = sm / npix
            if i < levels - 1:
                mcs[n].append(torch.relu(cs / npix))
        if i < levels - 1:
            f = _avg_pool2(f)
            srcs = [_avg_pool2(x) for x in srcs]
    w = torch.tensor(weights, dtype=_F64, device=f.device).view(-1, 1, 1)
    return [torch.prod(torch.stack(mc + [torch.relu(sp)], dim=0) ** w, dim=0).mean(1)
            for mc, sp in zip(mcs, ssim_pc)]


def ms_ssim_pair(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 255.0, win_size: int = 11,
                 sigma: float = 1.5, weights: Sequence[float] = _MSSSIM_WEIGHTS) -> torch.Tensor:
    """MS-SSIM (Wang, Simoncelli, Bovik, Asilomar 2003) exactly as ``pytorch_msssim.ms_ssim``:
    Gaussian 11/1.5 'valid' windows, 2x2 average pooling (zero-padded to even size) between the
    5 scales, ReLU on the contrast-structure terms, per-channel product, channels averaged.
    Both sides must exceed 160 pixels (4 downsamplings of an 11x11 window)."""
    xx, yy = _match(x, (y, 'y'))
    return _ms_ssim_core(xx, [yy], data_range=data_range, win_size=win_size, sigma=sigma,
                         weights=tuple(weights))[0]


def ms_ssim(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor, *, combine: str = 'sum',
            data_range: float = 255.0, win_size: int = 11, sigma: float = 1.5,
            weights: Sequence[float] = _MSSSIM_WEIGHTS) -> torch.Tensor:
    """MS-SSIM(vis, F) combined with MS-SSIM(ir, F) (``'sum'`` or ``'mean'``), see :func:`ms_ssim_pair`."""
    f, a, b = _match(fused, (vis, 'visible'), (ir, 'infrared'))
    va, vb = _ms_ssim_core(f, [a, b], data_range=data_range, win_size=win_size, sigma=sigma, weights=tuple(weights))
    return _combine(va + vb, combine)


# --------------------------------------------------------------------------------------------
# VIF
# --------------------------------------------------------------------------------------------

def _vif_terms(mu1, e1, mu2, s2, cross, sigma_nsq, eps):
    """Per-pixel VIFp numerator and denominator terms (CDDFuse ``compare_viff`` steps).

    ``s2`` is the (clamped) variance of the distorted image, shared by every reference. The
    reference's masking steps reduce to: the numerator term is log10(1) = 0 wherever
    ``s1 < eps``, ``s2 < eps`` or ``g < 0`` (g is zeroed there), the denominator term is 0 where
    ``s1 < eps``; elsewhere both are the reference's expressions (``addcmul`` may fuse a multiply-add:
    one rounding fewer than numpy, ~1e-16 relative)."""
    s1 = torch.addcmul(e1, mu1, mu1, value=-1.0).clamp_min_(0.0)   # relu(e1 - mu1^2)
    s12 = torch.addcmul(cross, mu1, mu2, value=-1.0)                # cross - mu1 mu2
    g = torch.div(s12, s1 + eps)
    sv = torch.addcmul(s2, g, s12, value=-1.0)                      # s2 - g s12
    m1 = s1 < eps
    # g < 0 -> 0 by clamping (branch-free; a masked fill with such a data-dependent mask costs ~15x
    # a clamp on CPU); the flat-region masks are rarely set, their fill is cheap
    g.masked_fill_((s2 < eps).logical_or_(m1), 0.0).clamp_min_(0.0)
    sv.clamp_min_(eps)  # sv <= eps -> eps
    num = torch.log10(g.mul_(g).mul_(s1).div_(sv.add_(sigma_nsq)).add_(1.0))
    den = torch.log10(s1.masked_fill_(m1, 0.0).div_(sigma_nsq).add_(1.0))
    return num, den


def _vif_core(dist: torch.Tensor, refs, *, sigma_nsq: float = 2.0, eps: float = 1e-10, scales: int = 4):
    """VIFp of ``dist`` (B x C) w.r.t. each reference (broadcastable); dist statistics shared."""
    y = dist
    xs = list(refs)
    B, C = dist.shape[:2]
    num = [torch.zeros(B, C, dtype=_F64, device=dist.device) for _ in xs]
    den = [torch.zeros(B, C, dtype=_F64, device=dist.device) for _ in xs]
    for scale in range(1, scales + 1):
        n = 2 ** (scales - scale + 1) + 1
        taps = gaussian_taps(n, n / 5.0)
        if scale > 1:
            y = correlate_valid(y, taps, stride=2)
            xs = [correlate_valid(x, taps, stride=2) for x in xs]
        if min(y.shape[-2:]) < n:
            raise ValueError(f'VIF: image too small for scale {scale} ({n}x{n} window); need about 41x41 or more')
        if _tiled(y):
            # CPU: per plane, in bands whose moments (all sources at once) and terms stay in cache
            for bi in range(B):
                for ci in range(C):
                    yp, xps = y[bi, ci], [_plane(x, bi, ci) for x in xs]
                    acc = [[0.0, 0.0] for _ in xs]
                    for _, Z in banded_moments(yp, xps, taps, _band_rows(len(xs), yp.shape[-1])):
                        mu2, e2 = Z[:, 0], Z[:, 1]
                        s2 = torch.addcmul(e2, mu2, mu2, value=-1.0).clamp_min_(0.0)  # relu(e2 - mu2^2)
                        for r in range(len(xs)):
                            nu, de = _vif_terms(Z[:, 2 + 3 * r], Z[:, 3 + 3 * r], mu2, s2, Z[:, 4 + 3 * r],
                                                sigma_nsq, eps)
                            acc[r][0] += float(nu.sum())
                            acc[r][1] += float(de.sum())
                    for r in range(len(xs)):
                        num[r][bi, ci] += acc[r][0]
                        den[r][bi, ci] += acc[r][1]
            continue
        mu2, e2 = _gauss_stats(y, taps)
        stats = [_gauss_stats(x, taps) + (correlate_valid(x * y, taps),) for x in xs]
        s2 = torch.addcmul(e2, mu2, mu2, value=-1.0).clamp_min_(0.0)   # relu(e2 - mu2^2)
        for r, (mu1, e1, cross) in enumerate(stats):
            nu, de = _vif_terms(mu1, e1, mu2, s2, cross, sigma_nsq, eps)
            num[r] = num[r] + nu.sum((-2, -1)).expand(B, C)
            den[r] = den[r] + de.sum((-2, -1)).expand(B, C)
    out = []
    for nu, de in zip(num, den):
        v = torch.where(de > 0, nu / torch.where(de > 0, de, torch.ones_like(de)), torch.ones_like(de))
        out.append(v.mean(1))
    return out


def vif_pair(ref: torch.Tensor, dist: torch.Tensor, *, sigma_nsq: float = 2.0, eps: float = 1e-10,
             scales: int = 4) -> torch.Tensor:
    """Pixel-domain multi-scale VIF (VIFp; Sheikh & Bovik, IEEE TIP 2006) of ``dist`` w.r.t. ``ref``.

    The ``vifp_mscale`` reference (as in CDDFuse ``Evaluator.compare_viff`` and ``piq.vif_p``):
    scale s = 1..4 uses an N x N Gaussian, N = 2^(5-s) + 1, sigma N/5; from s = 2 the images are
    filtered ('valid') and decimated by 2; sigma_n^2 = 2. Returns sum(num) / sum(den) over scales,
    1.0 when the reference has no variance anywhere (den = 0). Per channel, averaged. Note that
    ``piq.vif_p`` converts 3-channel input to luma first; pass grey images to compare.
    """
    d, r = _match(dist, (ref, 'ref'))
    return _vif_core(d, [r], sigma_nsq=sigma_nsq, eps=eps, scales=scales)[0]


def vif(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor, *, combine: str = 'sum', **kw) -> torch.Tensor:
    """VIF(vis -> F) + VIF(ir -> F) (CDDFuse ``Evaluator.VIFF``), or their mean; see :func:`vif_pair`."""
    f, a, b = _match(fused, (vis, 'visible'), (ir, 'infrared'))
    va, vb = _vif_core(f, [a, b], **kw)
    return _combine(va + vb, combine)


# --------------------------------------------------------------------------------------------
# SCD, PSNR
# --------------------------------------------------------------------------------------------

def _centred(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``x`` minus its per-(batch, channel) mean (a constant image gives exact zeros)."""
    m = x.mean((2, 3), keepdim=True)
    return x.sub_(m) if inplace else x - m


def _corr_centred(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Correlation of two centred images (0 where either has no variance); sums as plane dots."""
    den = torch.sqrt(_plane_dot(u) * _plane_dot(v))
    num = _plane_dot(u, v)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


def scd(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """SCD = corr(ir, F - vis) + corr(vis, F - ir): sum of the correlations of differences
    (Aslantas & Bendes, AEU 2015; CDDFuse ``Evaluator.SCD``). Per channel, averaged; a zero
    variance term makes that correlation 0 (the differences are centred as computed, so a constant
    difference is exactly zero)."""
    f, a, b = _match(fused, (vis, 'visible'), (ir, 'infrared'))
    d_b, d_a = _centred(f - b, inplace=True), _centred(f - a, inplace=True)
    return (_corr_centred(_centred(a), d_b) + _corr_centred(_centred(b), d_a)).mean(1)


def psnr(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor, *, definition: str = 'vifb') -> torch.Tensor:
    """PSNR of the fused image against both sources.

    ``'vifb'`` (``metricsPsnr.m``): VIFB's ``mse(X, F)`` is sqrt(sum (X-F)^2) / (M N) and
    PSNR = 20 log10(255 / sqrt((mse_vis + mse_ir) / 2)), per channel, averaged.
    ``'cddfuse'`` (``Evaluator.PSNR``): 10 log10(max(F)^2 / ((MSE_vis + MSE_ir) / 2)).
    ``'standard'``: 10 log10(255^2 / ((MSE_vis + MSE_ir) / 2)). ``inf`` if F equals both sources.
    """
    f, a, b = _match(fused, (vis, 'visible'), (ir, 'infrared'))
    H, W = f.shape[-2:]
    ssa, ssb = _plane_dot(a - f), _plane_dot(b - f)  # sums of squared differences
    if definition == 'vifb':
        e = (torch.sqrt(ssa) + torch.sqrt(ssb)) / (H * W) / 2
        return (20 * torch.log10(255.0 / torch.sqrt(e))).mean(1)
    mse = (ssa / (H * W) + ssb / (H * W)) / 2
    if definition == 'cddfuse':
        peak = f.amax((2, 3)) ** 2
    elif definition == 'standard':
        peak = torch.full_like(mse, 255.0 ** 2)
    else:
        raise ValueError(f"definition must be 'vifb', 'cddfuse' or 'standard', got {definition!r}")
    return (10 * torch.log10(peak / mse)).mean(1)


# --------------------------------------------------------------------------------------------
# dE (CIEDE2000)
# --------------------------------------------------------------------------------------------

_TWO_PI = 2 * math.pi
_R30, _R6, _R63 = math.radians(30), math.radians(6), math.radians(63)


def _hue(b: torch.Tensor, ap: torch.Tensor) -> torch.Tensor:
    """h' in [0, 2 pi), 0 where a' = b' = 0."""
    # remainder(h, 2 pi) of h in [-pi, pi] is h + 2 pi for h < 0, else h: the same values (and zero
    # signs) as where(h < 0, h + 2 pi, h), without a branchy select on a data-dependent mask (1.5x)
    h = torch.remainder(torch.atan2(b, ap), _TWO_PI)
    return h.masked_fill_((ap == 0) & (b == 0), 0.0)


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor, *, kL: float = 1.0, kC: float = 1.0,
              kH: float = 1.0, dim: int = -3) -> torch.Tensor:
    """CIEDE2000 colour difference (Sharma, Wu, Dalal, Color Res. Appl. 2005) of CIELAB tensors.

    ``dim`` is the (L, a, b) axis. Follows Sharma's implementation notes: h' = 0 where a' = b' = 0,
    dh' = 0 and mean hue = h1' + h2' where C1' C2' = 0. Passes Sharma's 34 test pairs to 1e-4.
    (cos(k h) terms of T from cos h, sin h by multiple-angle identities: same values to ~1e-15;
    in-place arithmetic, few temporaries: the per-pair chains run on cache-sized tiles.)
    """
    L1, a1, b1 = lab1.to(_F64).unbind(dim)
    L2, a2, b2 = lab2.to(_F64).unbind(dim)
    b1sq, b2sq = b1 * b1, b2 * b2
    Cbar = torch.addcmul(b1sq, a1, a1).sqrt_().add_(torch.addcmul(b2sq, a2, a2).sqrt_()).mul_(0.5)
    c2 = Cbar * Cbar
    c7 = (c2 * c2).mul_(c2).mul_(Cbar)
    g1 = torch.div(c7, c7 + 25.0 ** 7).sqrt_().mul_(-0.5).add_(1.5)
    a1p, a2p = g1 * a1, g1.mul_(a2)
    C1p, C2p = torch.addcmul(b1sq, a1p, a1p).sqrt_(), torch.addcmul(b2sq, a2p, a2p).sqrt_()
    h1p, h2p = _hue(b1, a1p), _hue(b2, a2p)
    CC = C1p * C2p
    zero = CC == 0
    dh = h2p - h1p
    dh = torch.where(dh > math.pi, dh - _TWO_PI, torch.where(dh < -math.pi, dh + _TWO_PI, dh)).masked_fill_(zero, 0.0)
    dHp = CC.sqrt_().mul_(2).mul_(dh.mul_(0.5).sin_())
    Cbp = torch.add(C1p, C2p).mul_(0.5)
    hs = h1p + h2p
    far = (h1p - h2p).abs_() > math.pi
    hbp = torch.where(far, torch.where(hs < _TWO_PI, hs + _TWO_PI, hs - _TWO_PI), hs).mul_(0.5)
    hbp = torch.where(zero, hs, hbp)
    c, s = torch.cos(hbp), torch.sin(hbp)
    cc = c * c
    c2h, s2h = cc * 2 - 1, (s * c).mul_(2)
    c3h = (cc * 4 - 3).mul_(c)
    s3h = (s * s).mul_(-4).add_(3).mul_(s)
    c4h = (c2h * c2h).mul_(2).sub_(1)
    s4h = (s2h * c2h).mul_(2)
    T = (c * (-0.17 * math.cos(_R30))).add_(s, alpha=-0.17 * math.sin(_R30)).add_(1)
    T.add_(c2h, alpha=0.24).add_(c3h, alpha=0.32 * math.cos(_R6)).add_(s3h, alpha=-0.32 * math.sin(_R6))
    T.add_(c4h, alpha=-0.20 * math.cos(_R63)).add_(s4h, alpha=-0.20 * math.sin(_R63))
    e = hbp.mul_(180.0 / math.pi).sub_(275.0).div_(25.0)
    dtheta = e.mul_(e).neg_().exp_().mul_(_R30)
    cb2 = Cbp * Cbp
    cb7 = (cb2 * cb2).mul_(cb2).mul_(Cbp)
    RC = torch.div(cb7, cb7 + 25.0 ** 7).sqrt_().mul_(2)
    t = (L1 + L2).mul_(0.5).sub_(50)
    t = t.mul_(t)
    SL = torch.add(t, 20).sqrt_().reciprocal_().mul_(t).mul_(0.015).add_(1)
    SC = Cbp * 0.045 + 1
    SH = (Cbp.mul_(0.015)).mul_(T).add_(1)
    RT = dtheta.mul_(2).sin_().mul_(RC).neg_()
    lt = (L2 - L1).div_(SL.mul_(kL))   # (x 1.0 is exact: the default weights cost one pass each)
    ct = (C2p - C1p).div_(SC.mul_(kC))
    ht = dHp.div_(SH.mul_(kH))
    out = torch.mul(lt, lt).addcmul_(ct, ct).addcmul_(ht, ht).add_(RT.mul_(ct).mul_(ht))
    return out.clamp_(min=0).sqrt_()


def delta_e(fused: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """dE: mean CIEDE2000 between the fused and the visible image in CIELAB (sRGB, D65, 2 deg).

    Lower is better. A 1-channel image is treated as grey RGB (replicated), so a grey fused image
    is charged for the colour it lost. Equals ``skimage.color.deltaE_ciede2000(rgb2lab(F),
    rgb2lab(V)).mean()``. 8-bit images (uint8 tensors, or float tensors holding only the integers
    0..255) are evaluated per distinct (fused, visible) colour pair.
    """
    f, v = _as4d(fused, 'fused', keep_uint8=True), _as4d(vis, 'visible', keep_uint8=True)
    if f.shape[-2:] != v.shape[-2:]:
        raise ValueError(f'visible image is {v.shape[-1]}x{v.shape[-2]} but the fused image is '
                         f'{f.shape[-1]}x{f.shape[-2]}; metrics need images of one size')
    for name, x in (('fused', f), ('visible', v)):
        if x.shape[1] not in (1, 3):
            raise ValueError(f'dE needs 1- or 3-channel images, {name} has {x.shape[1]}')
    if v.shape[0] not in (1, f.shape[0]):
        raise ValueError(f'visible batch size {v.shape[0]} does not match fused batch size {f.shape[0]}')
    f = f.expand(-1, 3, -1, -1) if f.shape[1] == 1 else f
    v = v.expand(-1, 3, -1, -1) if v.shape[1] == 1 else v
    B, _, H, W = f.shape
    fi, vi = _as_8bit(f), _as_8bit(v)
    if fi is not None and vi is not None:
        return torch.stack([_delta_e_8bit(fi[b], vi[b if vi.shape[0] > 1 else 0]) for b in range(B)])
    f, v = f.to(_F64), v.to(_F64)
    fl, vl = srgb_to_linear(f), srgb_to_linear(v)
    # (B x 1 x 3 x H x W views so that the tiler walks rows of all three colour channels together)
    tot, = _tiled_sums(lambda ft, vt: (ciede2000(linear_rgb_to_lab(ft), linear_rgb_to_lab(vt), dim=-3),),
                       [fl[:, None], vl[:, None]], B, 1)
    return tot[:, 0] / (H * W)


def _as_8bit(x: torch.Tensor):
    """``x`` as an integer tensor (uint8 as is, else int32) if it holds only the integers 0..255, else None."""
    if x.numel() == 0:
        return None
    if x.dtype == torch.uint8:
        return x
    # the uint8 conversion of a value outside 0..255 (or NaN) is some byte, never the value itself,
    # so the round trip alone decides (one pass cheaper than a separate range check)
    xu = x.to(torch.uint8)
    if not torch.equal(xu.to(x.dtype), x):
        return None
    return xu.to(torch.int32)


def _unique(x: torch.Tensor, return_inverse: bool = False, return_counts: bool = False):
    """``torch.unique`` (sorted); on CPU through numpy's sort, several times faster than torch's."""
    if x.device.type != 'cpu':
        return torch.unique(x, sorted=True, return_inverse=return_inverse, return_counts=return_counts)
    res = np.unique(x.numpy(), return_inverse=return_inverse, return_counts=return_counts)
    if not (return_inverse or return_counts):
        return torch.from_numpy(res)
    return tuple(torch.from_numpy(np.ascontiguousarray(r).reshape(-1)) for r in res)


def _lab_of_codes(codes: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """24-bit RGB codes ``(N,)`` -> CIELAB ``3 x 1 x N``."""
    rgb = torch.stack([lut.index_select(0, (codes >> sh) & 255) for sh in (16, 8, 0)])
    return linear_rgb_to_lab(rgb[:, None])


def _gather_lab(lab: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``lab[..., idx]`` of a ``3 x 1 x N`` tensor, one 1-D ``index_select`` per channel (on CPU
    several times faster than advanced indexing or ``index_select`` along the last dim)."""
    out = lab.new_empty((3, 1, idx.numel()))
    for c in range(3):
        torch.index_select(lab[c, 0], 0, idx, out=out[c, 0])
    return out


def _pair_keys(fi: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """48-bit keys ``(fused RGB << 24) | visible RGB`` of the pixels of two 8-bit ``3 x H x W``
    images (uint8 or int32 holding 0..255), flattened, int64. On CPU through numpy (in-place shifts
    into one int64 array: faster than the same in torch)."""
    planes = (*fi.unbind(0), *vi.unbind(0))
    if fi.device.type != 'cpu':
        key = planes[0].to(torch.int64)
        for p in planes[1:]:
            key = key.bitwise_left_shift_(8).bitwise_or_(p.to(torch.int64))
        return key.reshape(-1)
    arrs = [p.numpy() for p in planes]
    key = arrs[0].astype(np.int64)
    for a in arrs[1:]:
        key <<= 8
        key |= a
    return torch.from_numpy(key.reshape(-1))


def _delta_e_8bit(fi: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 of two 8-bit ``3 x H x W`` (integer) images over their distinct (fused,
    visible) colour pairs, weighted by pair counts: the same sum with 3-10x fewer evaluations. The
    CIELAB values are computed once per distinct colour of each image and gathered per pair."""
    dev = fi.device
    uniq, counts = _unique(_pair_keys(fi, vi), return_counts=True)
    # fused colours: the high halves of the sorted pair keys are sorted -> consecutive runs
    uf, inv_f = torch.unique_consecutive(uniq >> 24, return_inverse=True)
    uv, inv_v = _unique(uniq & 0xFFFFFF, return_inverse=True)
    lut = srgb_to_linear(torch.arange(256, dtype=_F64, device=dev))
    lab_f, lab_v = _lab_of_codes(uf, lut), _lab_of_codes(uv, lut)
    counts = counts.to(_F64)
    total = torch.zeros((), dtype=_F64, device=dev)
    n = uniq.numel()
    step = (TILE_ELEMENTS + 1) if _tiled(fi) else n
    for s in range(0, n, max(1, step)):
        lf, lv = _gather_lab(lab_f, inv_f[s:s + step]), _gather_lab(lab_v, inv_v[s:s + step])
        total += torch.dot(ciede2000(lf, lv, dim=-3)[0], counts[s:s + step])
    return total / (fi.shape[-2] * fi.shape[-1])
