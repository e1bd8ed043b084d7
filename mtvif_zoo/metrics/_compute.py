"""``compute()``: every metric for one (fused, visible, infrared) triple, in a named convention."""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch

from . import functional as Fm
from ._colour import _gray_cv2_uint8, gray_cv2, gray_matlab
from .conventions import Convention, get_convention
from .io import to_metric_tensor

__all__ = ['METRICS', 'METRIC_INFO', 'compute', 'compute_batch', 'resolve_metrics']

#: metric keys, in the order results are reported
METRICS: Tuple[str, ...] = ('EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'MS_SSIM', 'dE', 'SD', 'SF', 'AG', 'SCD', 'PSNR',
                            'MSS')

#: per metric: (higher_is_better, one-line definition)
METRIC_INFO: Dict[str, Tuple[bool, str]] = {
    'EN': (True, 'entropy of the fused grey-level histogram (bits)'),
    'MI': (True, 'MI(vis, F) + MI(ir, F) (nats)'),
    'VIF': (True, 'pixel-domain multi-scale VIF, vis->F plus ir->F'),
    'Qabf': (True, 'Xydeas-Petrovic gradient preservation Q^{AB/F}'),
    'SSIM': (True, 'SSIM(vis, F) + SSIM(ir, F)'),
    'MS_SSIM': (True, 'MS-SSIM(vis, F) + MS-SSIM(ir, F)'),
    'dE': (False, 'mean CIEDE2000 between F and the visible image'),
    'SD': (True, 'standard deviation of F'),
    'SF': (True, 'spatial frequency of F'),
    'AG': (True, 'average gradient of F'),
    'SCD': (True, 'sum of the correlations of differences'),
    'PSNR': (True, 'PSNR of F against both sources (dB)'),
    'MSS': (True, "MS-SSIM(vis, F) + MS-SSIM(ir, F) on the paper's MSS scale (the convention's mss_data_range)"),
}

_ALIASES = {m.lower(): m for m in METRICS}
_ALIASES.update({'ms-ssim': 'MS_SSIM', 'msssim': 'MS_SSIM', 'ms_ssim': 'MS_SSIM', 'de': 'dE', 'delta_e': 'dE',
                 'deltae': 'dE', 'ciede2000': 'dE', '\u03b4e': 'dE', 'q_abf': 'Qabf', 'qabf': 'Qabf',
                 'entropy': 'EN', 'mutinf': 'MI', 'vifp': 'VIF'})

_PAIR_METRICS = {'MI', 'VIF', 'Qabf', 'SSIM', 'MS_SSIM', 'SCD', 'PSNR', 'MSS'}


def resolve_metrics(metrics: Optional[Union[str, Iterable[str]]]) -> List[str]:
    """Normalise a metric selection (``None`` = all, a name, a comma list or an iterable of names)."""
    if metrics is None:
        return list(METRICS)
    if isinstance(metrics, str):
        metrics = [m for m in metrics.replace(' ', '').split(',') if m]
    out = []
    for m in metrics:
        key = _ALIASES.get(str(m).strip().lower())
        if key is None:
            raise ValueError(f'unknown metric {m!r}; known: {", ".join(METRICS)}')
        if key not in out:
            out.append(key)
    return [m for m in METRICS if m in out]


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """Checked ``B x C x H x W``: uint8 stays uint8 (8-bit fast paths), anything else float64."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'{name}: compute_batch takes B x C x H x W tensors on 0..255; use compute() for files')
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f'{name} must be B x C x H x W with C in (1, 3), got {tuple(x.shape)}')
    if x.dtype == torch.bool:
        raise TypeError(f'{name}: boolean tensor; convert masks to uint8 0/255 (to_metric_tensor does)')
    if x.dtype != torch.uint8:
        x = x.to(torch.float64)
    return x.contiguous()  # plane-contiguous: every per-plane op runs on dense memory


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)


def _check_sizes(f: torch.Tensor, v: torch.Tensor, i: torch.Tensor):
    fh, fw = f.shape[-2:]
    for name, x in (('visible', v), ('infrared', i)):
        if x.shape[-2:] != f.shape[-2:]:
            raise ValueError(f'size mismatch: fused image is {fw}x{fh} (WxH) but the {name} image is '
                             f'{x.shape[-1]}x{x.shape[-2]}; fusion metrics need all three images the same size')
    if v.shape[0] not in (1, f.shape[0]) or i.shape[0] not in (1, f.shape[0]):
        raise ValueError(f'batch sizes differ: fused {f.shape[0]}, visible {v.shape[0]}, infrared {i.shape[0]} '
                         '(sources may also have batch size 1: shared by every fused image)')


#: metrics computed with whole-tensor ops (the others tile / loop over planes on CPU themselves)
_WHOLE_TENSOR = {'EN', 'VIF', 'MS_SSIM', 'dE', 'SD', 'SF', 'AG', 'SCD', 'PSNR', 'MSS'}
_CPU_CHUNK_BYTES = 8 << 20


def _metric_calls(c: Convention, f, f_rgb, v_rgb, srcs_exact, srcs_round, grey8=None):
    grey8 = grey8 or (f, *srcs_round)  # (the rounded grey images as uint8 when the inputs were 8-bit)
    return {
        'EN': lambda: Fm.entropy(grey8[0], log_base=c.en_log_base, quantization=c.en_quantization),
        'MI': lambda: Fm.mutual_information(*grey8, log_base=c.mi_log_base, quantization=c.mi_quantization),
        'VIF': lambda: Fm.vif(f, *srcs_exact, combine=c.vif_combine, sigma_nsq=c.vif_sigma_nsq, eps=c.vif_eps,
                              scales=c.vif_scales),
        'Qabf': lambda: Fm.qabf(f, *srcs_exact, params=c.qabf_params, gradient_scale=c.qabf_gradient_scale),
        'SSIM': lambda: Fm.ssim(*grey8, combine=c.ssim_combine, window=c.ssim_window,
                                win_size=c.ssim_win_size, sigma=c.ssim_sigma, data_range=c.ssim_data_range,
                                k=c.ssim_k, border=c.ssim_border, sample_covariance=c.ssim_sample_covariance,
                                dtype=c.ssim_dtype),
        'MS_SSIM': lambda: Fm.ms_ssim(f, *srcs_exact, combine=c.msssim_combine, data_range=c.msssim_data_range,
                                      win_size=c.msssim_win_size, sigma=c.msssim_sigma, weights=c.msssim_weights),
        'MSS': lambda: Fm.ms_ssim(f, *srcs_exact, combine=c.msssim_combine, data_range=c.mss_data_range,
                                  win_size=c.msssim_win_size, sigma=c.msssim_sigma, weights=c.msssim_weights),
        'dE': lambda: Fm.delta_e(f_rgb, v_rgb),
        'SD': lambda: Fm.standard_deviation(f, ddof=c.sd_ddof),
        'SF': lambda: Fm.spatial_frequency(f, definition=c.sf_definition),
        'AG': lambda: Fm.average_gradient(f, normalisation=c.ag_normalisation),
        'SCD': lambda: Fm.scd(f, *srcs_exact),
        'PSNR': lambda: Fm.psnr(f, *srcs_exact, definition=c.psnr_definition),
    }


def compute_batch(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor,
                  metrics: Optional[Union[str, Iterable[str]]] = None,
                  convention: Union[str, Convention] = 'paper', *,
                  on_error: str = 'raise', _reasons: Optional[Dict[str, str]] = None) -> Dict[str, torch.Tensor]:
    """Metrics of a batch of same-sized triples: ``B x C x H x W`` tensors on 0..255 (C = 1 or 3),
    on any device; float (any precision, computed in float64) or uint8 (8-bit fast paths, same
    results: grey conversion by lookup table, no per-metric integrality checks). Returns
    ``{metric: float64 tensor (B,)}`` in :data:`METRICS` order. The sources may have batch size 1
    (several fused images of one pair, e.g. one per method): their statistics are then computed once.

    Colour handling follows the convention (see :class:`~mtvif_zoo.metrics.Convention`). With
    ``on_error='nan'`` a metric that cannot be computed for these images (e.g. MS-SSIM on images
    with a side <= 160 px) gives NaN and a ``RuntimeWarning`` saying why, instead of raising.
    """
    conv = get_convention(convention)
    names = resolve_metrics(metrics)
    f, v, i = _as_batch(fused, 'fused'), _as_batch(vis, 'visible'), _as_batch(ir, 'infrared')
    _check_sizes(f, v, i)
    if on_error not in ('raise', 'nan'):
        raise ValueError("on_error must be 'raise' or 'nan'")

    f_rgb, v_rgb = f, v  # dE is always measured on colour (uint8 data: per distinct colour pair)
    grey8 = None
    if conv.colour == 'gray':
        if conv.gray == 'cv2' and conv.gray_round and all(x.dtype == torch.uint8 for x in (f, v, i)):
            # 8-bit data, rounded cv2 grey: 8-bit grey images by table lookup; EN, MI take their levels
            # from them directly and SSIM knows them integer
            grey8 = tuple(_gray_cv2_uint8(x, True, torch.uint8) for x in (f, v, i))
            f, v, i = (_f64(x) for x in grey8)
        else:
            if conv.gray == 'cv2':
                g = lambda x: gray_cv2(x, round_result=conv.gray_round)  # noqa: E731
            else:
                g = lambda x: gray_matlab(_f64(x), uint8_input=conv.gray_round)  # noqa: E731
            f, v, i = g(f), g(v), g(i)
        srcs_exact = srcs_round = (v, i)
    else:
        f, v, i = _f64(f), _f64(v), _f64(i)
        # per channel; a grey fused image with colour sources: sources through MATLAB rgb2gray,
        # rounded where VIFB passes uint8 data (MI, SSIM), unrounded where it passes doubles.
        def gray_src(x, rnd):
            if f.shape[1] == 1 and x.shape[1] == 3:
                return gray_cv2(x, rnd) if conv.gray == 'cv2' else gray_matlab(x, uint8_input=rnd)
            return x
        srcs_exact = (gray_src(v, False), gray_src(i, False))
        srcs_round = (gray_src(v, conv.gray_round), gray_src(i, conv.gray_round))

    calls = _metric_calls(conv, f, f_rgb, v_rgb, srcs_exact, srcs_round, grey8)
    out = {}
    step = max(1, _CPU_CHUNK_BYTES // (f[0].numel() * 8)) if f.device.type == 'cpu' else f.shape[0]
    for m in names:
        try:
            if m in _WHOLE_TENSOR and step < f.shape[0]:
                # whole-tensor metrics on CPU: sub-batches small enough for the allocator to reuse
                # memory (large temporaries cost page faults); a batch-1 source stays shared
                parts = []
                for s in range(0, f.shape[0], step):
                    cut = lambda x, s=s: x[s:s + step] if x.shape[0] > 1 else x  # noqa: E731
                    sub = _metric_calls(conv, cut(f), cut(f_rgb), cut(v_rgb), tuple(cut(x) for x in srcs_exact),
                                        tuple(cut(x) for x in srcs_round),
                                        None if grey8 is None else tuple(cut(x) for x in grey8))
                    parts.append(sub[m]())
                out[m] = torch.cat(parts)
            else:
                out[m] = calls[m]()
        except ValueError as e:
            if on_error == 'raise':
                raise
            if _reasons is not None:  # (evaluate() collects the reasons itself, from several threads)
                _reasons[m] = str(e)
            else:
                warnings.warn(f'{m} set to NaN: {e}', RuntimeWarning, stacklevel=2)
            out[m] = torch.full((f.shape[0],), math.nan, dtype=torch.float64, device=f.device)
    return out


def compute(fused: Any, vis: Any, ir: Any, metrics: Optional[Union[str, Iterable[str]]] = None,
            convention: Union[str, Convention] = 'paper', *, data_range: Optional[float] = None,
            device: Optional[Union[str, torch.device]] = None, on_error: str = 'raise') -> Dict[str, float]:
    """All (or the chosen) fusion metrics of one triple, as ``{metric: float}``.

    Args:
        fused, vis, ir: each a path, PIL image, numpy array (``H x W [x C]``; uint8, uint16 or float)
            or tensor (``[1 x] C x H x W``). Values are put on the 0..255 scale as documented in
            :mod:`mtvif_zoo.metrics.io` (uint8 as is; uint16 -> ``x * 255 / 65535``; float taken as
            0..255 unless ``data_range`` is given, e.g. ``data_range=1.0`` for [0, 1] model outputs;
            ``data_range`` applies to float inputs only).
        metrics: ``None`` = all of :data:`METRICS` (``EN, MI, VIF, Qabf, SSIM, MS_SSIM, dE, SD,
            SF, AG, SCD, PSNR``), or a subset (names are case-insensitive; 'MS-SSIM' works).
        convention: ``'paper'`` (CDDFuse Evaluator, the paper's scale), ``'vifb'`` (VIFB MATLAB)
            or a :class:`~mtvif_zoo.metrics.Convention`.
        device: where to compute (default: the fused tensor's device, else CPU).
        on_error: ``'raise'`` or ``'nan'`` (see :func:`compute_batch`).

    Raises:
        ValueError: images of different sizes (named in the message), unsupported layouts.
        FileNotFoundError / UnreadableImageError: for paths.
    """
    tf = to_metric_tensor(fused, data_range=data_range, name='fused', keep_uint8=True)
    tv = to_metric_tensor(vis, data_range=data_range, name='visible', keep_uint8=True)
    ti = to_metric_tensor(ir, data_range=data_range, name='infrared', keep_uint8=True)
    dev = torch.device(device) if device is not None else tf.device
    res = compute_batch(tf[None].to(dev), tv[None].to(dev), ti[None].to(dev), metrics, convention, on_error=on_error)
    return {k: float(v[0]) for k, v in res.items()}
