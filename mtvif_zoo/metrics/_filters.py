"""Separable 'valid' correlation on ``... x H x W`` tensors (CPU and CUDA), and window builders.

The metric windows (Gaussian, uniform) are all separable, so every 2-D filter here is two 1-D
passes (rows first, i.e. along H, then along W, the order scipy.ndimage uses). Each pass is a sum
of shifted slices accumulated in place; on CPU the leading dimension is processed in chunks of a
few MB so the accumulation stays in cache (faster than ``conv2d`` on float64:
``benchmarks/bench_metrics.py``).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ['gaussian_taps', 'correlate_valid', 'uniform_valid_float32', 'banded_moments']

_CPU_TILE_ELEMS = (1 << 15) - 1  # CPU tile: < 32768 elements, ATen's parallel grain (single-threaded ops)


def gaussian_taps(size: int, sigma: float) -> List[float]:
    """Normalised 1-D Gaussian ``exp(-x^2 / (2 sigma^2))`` on ``x = -(size-1)/2 .. (size-1)/2``.

    The outer product of this with itself is MATLAB's ``fspecial('gaussian', size, sigma)`` (and
    the windows of piq / pytorch_msssim / the VIFp reference) up to float64 rounding, as long as no
    tap falls below ``eps * max`` (true for every window used here).
    """
    c = (size - 1) / 2.0
    t = [math.exp(-((i - c) ** 2) / (2.0 * sigma * sigma)) for i in range(size)]
    s = math.fsum(t)
    return [v / s for v in t]


def _row_tile(H_out: int, W: int, x: torch.Tensor) -> int:
    if x.device.type != 'cpu':
        return H_out
    return max(1, min(H_out, _CPU_TILE_ELEMS // max(W, 1)))


def _correlate_plane(xp: torch.Tensor, out: torch.Tensor, th: List[float], tw: List[float], rows: int,
                     scratch: torch.Tensor) -> None:
    """One ``... x H x W`` block -> ``out`` ('valid'), in row tiles that stay in cache."""
    Ho, Wo = out.shape[-2:]
    for r0 in range(0, Ho, rows):
        r1 = min(Ho, r0 + rows)
        y = scratch[..., :r1 - r0, :]
        torch.mul(xp[..., r0:r1, :], th[0], out=y)
        for j in range(1, len(th)):
            y.add_(xp[..., r0 + j:r1 + j, :], alpha=th[j])
        o = out[..., r0:r1, :]
        torch.mul(y[..., 0:Wo], tw[0], out=o)
        for j in range(1, len(tw)):
            o.add_(y[..., j:j + Wo], alpha=tw[j])


#: CPU band-matrix GEMM: output rows (columns) per block; the band of a block is (block + taps - 1)
_GEMM_BLOCK = 48
#: :func:`banded_moments` (all planes of a band side by side, so even small blocks make wide products):
#: output rows per product of the vertical pass, output columns per product of the horizontal pass
#: (chosen by timing 8 / 24 / 48 with ``benchmarks/bench_metrics.py`` for 11-17 taps)
_H_BLOCK = 8
_W_BLOCK = 24
_GEMM_MIN_TAPS = 5
_band_cache: Dict[Tuple, torch.Tensor] = {}


def _band(m: int, taps: Tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``m x (m + k - 1)`` matrix with ``taps`` on its k upper diagonals: ``band @ x[r:r+m+k-1]`` is the
    'valid' correlation of those rows. Cached (a few KB each)."""
    key = (m, taps, dtype, str(device))
    b = _band_cache.get(key)
    if b is None:
        b = torch.zeros(m, m + len(taps) - 1, dtype=dtype, device=device)
        for j, t in enumerate(taps):
            b.diagonal(j).fill_(t)
        if len(_band_cache) > 64:
            _band_cache.clear()
        _band_cache[key] = b
    return b


def _correlate3_gemm(xs: torch.Tensor, th: List[float], tw: List[float]) -> torch.Tensor:
    """CPU: both passes as matrix products with block-banded tap matrices (few large BLAS calls
    instead of one slice-add per tap and tile: faster for 7..17 taps). The products sum the
    same terms as the slice adds, in BLAS order (float rounding only)."""
    n, H, W = xs.shape
    kh, kw = len(th), len(tw)
    Ho, Wo = H - kh + 1, W - kw + 1
    bs = _GEMM_BLOCK
    if kh > 1 or th[0] != 1.0:
        y = xs.new_empty((n, Ho, W))
        bv = _band(bs, tuple(th), xs.dtype, xs.device)
        for r0 in range(0, Ho, bs):
            m = min(bs, Ho - r0)
            for p in range(n):
                torch.mm(bv[:m, :m + kh - 1], xs[p, r0:r0 + m + kh - 1], out=y[p, r0:r0 + m])
    else:
        y = xs if xs.is_contiguous() else xs.contiguous()
    if kw == 1 and tw[0] == 1.0:
        return y
    y2 = y.view(n * Ho, W)
    z = xs.new_empty((n * Ho, Wo))
    bh = _band(bs, tuple(tw), xs.dtype, xs.device).t()
    for c0 in range(0, Wo, bs):
        m = min(bs, Wo - c0)
        torch.mm(y2[:, c0:c0 + m + kw - 1], bh[:m + kw - 1, :m], out=z[:, c0:c0 + m])
    return z.view(n, Ho, Wo)


def _row_blocks(src: torch.Tensor, out: torch.Tensor, m: int, band: torch.Tensor, band_of, stride: int = 1) -> None:
    """``out[:m]``: a band-matrix pass along the rows of the 2-D ``src`` (rows contiguous), in blocks of
    ``band.shape[0]`` output rows, block ``i`` reading ``src`` from row ``i * rows * stride``. All
    whole blocks are one batched product over overlapping views of ``src`` (no copies; 1.3-1.6x
    faster than a product per block for 9-17 taps), the remaining rows one product with
    ``band_of(rest)``. The same products as a loop over the blocks, bit for bit."""
    rows, rin = band.shape
    nb, rest = divmod(m, rows)
    cols, rs = src.shape[1], src.stride(0)
    if nb:
        blocks = src.as_strided((nb, rin, cols), (rows * stride * rs, rs, 1))
        torch.bmm(band.expand(nb, -1, -1), blocks, out=out[:nb * rows].view(nb, rows, cols))
    if rest:
        b = band_of(rest)
        r0 = nb * rows * stride
        torch.mm(b, src[r0:r0 + b.shape[1]], out=out[nb * rows:m])


def _band_strided(m: int, taps: Tuple[float, ...], stride: int, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    """``m x ((m - 1) stride + k)`` matrix, row i holding ``taps`` from column ``i * stride``:
    ``band @ x[r * stride:...]`` is the 'valid' correlation of those rows, every stride-th output."""
    key = ('strided', m, taps, stride, dtype, str(device))
    b = _band_cache.get(key)
    if b is None:
        k = len(taps)
        b = torch.zeros(m, (m - 1) * stride + k, dtype=dtype, device=device)
        t = torch.tensor(taps, dtype=dtype, device=device)
        for i in range(m):
            b[i, i * stride:i * stride + k] = t
        if len(_band_cache) > 64:
            _band_cache.clear()
        _band_cache[key] = b
    return b


def _correlate_strided_gemm(xs: torch.Tensor, th: List[float], tw: List[float], stride: int,
                            Hs: int, Ws: int) -> torch.Tensor:
    """CPU ``correlate_valid(..., stride)``: both passes as products with strided band matrices
    (only the kept positions are computed; same terms as the slice adds, in BLAS order)."""
    n, H, W = xs.shape
    kw = len(tw)
    y = xs.new_empty((n, Hs, W))
    band_of = lambda m: _band_strided(m, tuple(th), stride, xs.dtype, xs.device)  # noqa: E731
    for p in range(n):
        _row_blocks(xs[p], y[p], Hs, band_of(_H_BLOCK), band_of, stride)
    y2 = y.view(n * Hs, W)
    z = xs.new_empty((n * Hs, Ws))
    bs = _W_BLOCK
    bh = _band_strided(bs, tuple(tw), stride, xs.dtype, xs.device).t()
    for c0 in range(0, Ws, bs):
        m = min(bs, Ws - c0)
        b = bh if m == bs else _band_strided(m, tuple(tw), stride, xs.dtype, xs.device).t()
        cin = (m - 1) * stride + kw
        torch.mm(y2[:, c0 * stride:c0 * stride + cin], b, out=z[:, c0:c0 + m])
    return z.view(n, Hs, Ws)


def _correlate3(xs: torch.Tensor, th: List[float], tw: List[float]) -> torch.Tensor:
    n, H, W = xs.shape
    Ho, Wo = H - len(th) + 1, W - len(tw) + 1
    if (xs.device.type == 'cpu' and xs.dtype in (torch.float64, torch.float32)
            and max(len(th), len(tw)) >= _GEMM_MIN_TAPS):
        return _correlate3_gemm(xs, th, tw)
    out = xs.new_empty((n, Ho, Wo))
    if xs.device.type != 'cpu':
        _correlate_plane(xs, out, th, tw, Ho, xs.new_empty((n, Ho, W)))
    else:
        rows = _row_tile(Ho, W, xs)
        scratch = xs.new_empty((rows, W))
        for i in range(n):
            _correlate_plane(xs[i], out[i], th, tw, rows, scratch)
    return out


def correlate_valid(x: torch.Tensor, taps_h: Sequence[float], taps_w: Optional[Sequence[float]] = None,
                    stride: int = 1) -> torch.Tensor:
    """'valid' 2-D correlation of every ``H x W`` plane of ``x`` with ``outer(taps_h, taps_w)``.

    Output ``... x (H - len(taps_h) + 1) x (W - len(taps_w) + 1)``, same dtype as ``x``. On CPU the
    planes are processed one at a time in row tiles of ~16k elements (single-threaded, cache
    resident: robust when the cores are shared); on CUDA the whole batch at once. ``stride=2``
    returns ``correlate_valid(x)[..., ::2, ::2]`` computing only the kept positions.
    """
    if taps_w is None:
        taps_w = taps_h
    th, tw = [float(v) for v in taps_h], [float(v) for v in taps_w]
    *lead, H, W = x.shape
    Ho, Wo = H - len(th) + 1, W - len(tw) + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f'image {H}x{W} is smaller than the {len(th)}x{len(tw)} window')
    if stride != 1:
        xs = x.reshape(-1, H, W)
        Hs, Ws = (Ho + stride - 1) // stride, (Wo + stride - 1) // stride
        if xs.device.type == 'cpu' and xs.dtype in (torch.float64, torch.float32):
            return _correlate_strided_gemm(xs, th, tw, stride, Hs, Ws).reshape(*lead, Hs, Ws)
        y = xs[:, 0:(Hs - 1) * stride + 1:stride, :] * th[0]
        for j in range(1, len(th)):
            y.add_(xs[:, j:j + (Hs - 1) * stride + 1:stride, :], alpha=th[j])
        o = y[:, :, 0:(Ws - 1) * stride + 1:stride] * tw[0]
        for j in range(1, len(tw)):
            o.add_(y[:, :, j:j + (Ws - 1) * stride + 1:stride], alpha=tw[j])
        return o.reshape(*lead, Hs, Ws)
    out = _correlate3(x.reshape(-1, H, W), th, tw)
    return out.reshape(*lead, Ho, Wo)


def uniform_valid_float32(x: torch.Tensor, size: int) -> torch.Tensor:
    """``scipy.ndimage.uniform_filter(x.astype(float32), size)`` restricted to the 'valid' region.

    scipy keeps float32 data in float32 between the two 1-D passes: each pass sums in float64,
    divides by ``size`` and stores float32. Reproduced here exactly (sums of ``size`` float32
    values are exact in float64, so only the two float32 roundings remain). The border mode does
    not matter for the 'valid' region, which is all scikit-image keeps after its crop.
    """
    *lead, H, W = x.shape
    Ho, Wo = H - size + 1, W - size + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f'image {H}x{W} is smaller than the {size}x{size} window')
    xs = x.reshape(-1, H, W).to(torch.float32).to(torch.float64)
    ones = [1.0] * size
    # pass 1 along H, pass 2 along W: float64 sums, / size, stored as float32 after each pass
    y = _correlate3(xs, ones, [1.0]).div_(size).to(torch.float32).to(torch.float64)
    z = _correlate3(y, [1.0], ones).div_(size).to(torch.float32)
    return z.reshape(*lead, Ho, Wo)


def banded_moments(y: torch.Tensor, xs: Sequence[torch.Tensor], taps: Sequence[float], rows: int, *,
                   uniform_float32: bool = False):
    """Gaussian-window moments of one ``H x W`` plane ``y`` and of each plane in ``xs``, in bands.

    Yields ``(r0, Z)`` per band of at most ``rows`` output rows, ``Z`` of shape ``m x P x Wo`` with
    ``P = 2 + 3 len(xs)`` planes: ``filt(y), filt(y*y)``, then per ``x``: ``filt(x), filt(x*x),
    filt(x*y)`` ('valid', same taps both ways). The planes of one band are laid side by side so
    each 1-D pass is one band-matrix product for all of them (few large BLAS calls), and a band
    with its squares and products stays in cache (``Z`` is a view of a buffer reused by the next
    band: consume or clone it first): the same sums as :func:`correlate_valid` of the
    whole images, in BLAS order (float rounding only; tested to 1e-12 against the whole-tensor path).

    ``uniform_float32=True`` (``taps`` = its size k, a uniform window): ``scipy.ndimage.uniform_filter``
    on float32 data, bit for bit, for **integer** planes with ``|value| <= 255`` (the caller checks).
    scipy sums in float64, divides by k and stores float32 after each 1-D pass. Pass 1 sums
    integers (exact in any order). Every non-zero pass-1 result is a float32 ``fl(S / k)`` with
    ``1 <= |S| <= k * 255^2``, hence at least ``1/k`` and so a multiple of ``q = ulp_float32(1/k)``
    (2^-26 for k = 7) of magnitude at most 255^2; a running sum of ``n`` of them is exact in
    float64 while ``n * 255^2 < 2^53 q`` (n < 2064 for k = 7). So pass 2 is a cumsum and one
    difference per output (exact, hence the same sums as scipy's), in column chunks within that
    bound. ``Z`` is then float32.
    """
    if uniform_float32:
        k = int(taps)
        th = (1.0,) * k
        q = 2.0 ** (math.floor(math.log2(1.0 / k)) - 23)
        chunk = min(1024, int(2.0 ** 53 * q / 255.0 ** 2) - k)
        if chunk < 1:
            raise ValueError(f'uniform window {k} too large for the exact float32 path')
    else:
        th = tuple(float(v) for v in taps)
    k = len(th)
    H, W = y.shape
    Ho, Wo = H - k + 1, W - k + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f'image {H}x{W} is smaller than the {k}x{k} window')
    P = 2 + 3 * len(xs)
    bs = _W_BLOCK
    bh = None if uniform_float32 else _band(bs, th, y.dtype, y.device).t()
    rows = max(1, min(rows, Ho))
    S = y.new_empty((rows + k - 1, P, W))
    V = y.new_empty((rows, P * W))
    Zb = y.new_empty((rows * P, Wo))
    plans = {}  # horizontal pass: (input, band, output) views per band height, made once

    def plan(m: int):
        if m not in plans:
            v2, z = V[:m].view(m * P, W), Zb[:m * P]
            plans[m] = [(v2[:, c0:c0 + mc + k - 1], bh[:mc + k - 1, :mc], z[:, c0:c0 + mc])
                        for c0, mc in ((c0, min(bs, Wo - c0)) for c0 in range(0, Wo, bs))]
        return plans[m]

    for r0 in range(0, Ho, rows):
        m = min(rows, Ho - r0)
        rin = m + k - 1
        s = S[:rin]
        yb = y[r0:r0 + rin]
        s[:, 0] = yb
        torch.mul(yb, yb, out=s[:, 1])
        for j, x in enumerate(xs):
            xb = x[r0:r0 + rin]
            s[:, 2 + 3 * j] = xb
            torch.mul(xb, xb, out=s[:, 3 + 3 * j])
            torch.mul(xb, yb, out=s[:, 4 + 3 * j])
        v = V[:m]
        # small blocks of rows: fewer multiplications by band zeros
        _row_blocks(s.view(rin, P * W), v, m, _band(_H_BLOCK, th, y.dtype, y.device),
                    lambda r: _band(r, th, y.dtype, y.device))
        v2 = v.view(m * P, W)
        z = Zb[:m * P]
        if uniform_float32:
            v2 = v2.div_(k).to(torch.float32).to(torch.float64)
            for c0 in range(0, Wo, chunk):
                c1 = min(Wo, c0 + chunk)
                cs = torch.cumsum(v2[:, c0:c1 + k - 1], dim=1)
                zc = z[:, c0:c1]
                zc[:, 0] = cs[:, k - 1]
                torch.sub(cs[:, k:], cs[:, :-k], out=zc[:, 1:])
            yield r0, z.div_(k).to(torch.float32).view(m, P, Wo)
            continue
        for a, b, o in plan(m):
            torch.mm(a, b, out=o)
        yield r0, z.view(m, P, Wo)
