"""Named metric conventions: every difference between the references is an explicit field.

Two published ways of computing "the same" fusion metrics disagree by large factors (SSIM ~1.4 vs
~1.0, MI on different quantisations, ...). A :class:`Convention` names one of them and spells out
each choice, so a table can say which numbers it holds. Two are built in:

``'vifb'``
    VIFB's MATLAB code (Zhang, Ye, Xiao, "VIFB: A Visible and Infrared Image Fusion Benchmark",
    CVPR Workshops 2020; github.com/xingchenzhang/VIFB ``metrics/*.m``). Colour images are handled
    per channel (a 1-channel infrared image is reused for every channel) and the per-channel values
    are averaged; a 1-channel fused image with RGB sources converts the sources with MATLAB's
    ``rgb2gray``. Checked against VIFB's own per-image values (``tests/metrics``).

``'paper'``
    The ``utils/Evaluator.py`` of CDDFuse (Zhao et al., CVPR 2023; github.com/Zhaozixiang1228/
    MMIF-CDDFuse), whose scale the MultiTaskVIF tables follow (SSIM ~1, VIF ~1). Every image is
    first converted to grey the way its ``image_read_cv2(..., 'GRAY')`` does (OpenCV ``BGR2GRAY`` on
    float32 input, then ``np.round``); SSIM is scikit-image 0.19's ``structural_similarity``
    defaults on float input (7x7 uniform window, ``data_range=2``, sample covariance, float32
    arithmetic). Checked against that evaluator run under its pinned requirements.

How the ``paper`` convention meets the MultiTaskVIF tables, measured on SeAFusion's public outputs for
the 361 MSRS test pairs (ycc568/my-seafusion ``commit/Results/SeAFusion``; ``mtvif eval --metrics
EN,MI,VIF,Qabf,SSIM,MSS,dE``) against the paper's Table 5 SeAFusion row: EN 6.652 (6.65), VIF 0.969
(0.97), Qabf 0.675 (0.67), SSIM 0.993 (0.99), MSS 1.047 (1.05) match; MI 2.794 is in nats, and
2.794 / ln 2 = 4.031 bits is Table 5's 4.03, so the paper's MI is in bits (``tools/weights.py gap``
converts); dE 1.752 does not match Table 5's 2.48 (the paper's colour difference is computed some
other way that could not be identified; compare dE only within this zoo).

Metrics that a reference does not define (VIF, MS-SSIM, dE, SCD for VIFB; MS-SSIM, dE for CDDFuse)
use the standard definitions (piq's ``vif_p``, ``pytorch_msssim.ms_ssim``, CIEDE2000) under the
convention's colour handling, combined over the two sources the way the convention combines SSIM.
Build your own with ``dataclasses.replace(CONVENTIONS['paper'], ssim_data_range=255.0, ...)``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Tuple, Union

__all__ = ['Convention', 'VIFB', 'PAPER', 'CONVENTIONS', 'get_convention']


@dataclass(frozen=True)
class Convention:
    """All the choices that make two "EN / MI / SSIM ..." numbers comparable.

    Colour handling
        colour: ``'per_channel'`` computes every metric on each channel and averages the channel
            values (VIFB); ``'gray'`` converts every image to one grey channel first (CDDFuse).
        gray: the RGB -> grey transform used when one is needed: ``'cv2'`` (OpenCV ``BGR2GRAY`` on
            float32 input, ``0.299 R + 0.587 G + 0.114 B`` with OpenCV's fused multiply-adds) or
            ``'matlab'`` (MATLAB ``rgb2gray``: first row of ``inv([1 .956 .621; 1 -.272 -.647;
            1 -1.106 1.703])``).
        gray_round: round the grey image to integers (``np.round``: half to even for ``'cv2'``;
            MATLAB's uint8 rounding, half away from zero, for ``'matlab'`` on 8-bit sources).
    EN (Shannon entropy of the fused image's grey-level histogram)
        en_log_base: 2 (bits) in both references.
        en_quantization: how values become one of 256 bins: ``'floor'`` (VIFB indexes
            ``floor(x)+1``) or ``'round'`` (CDDFuse ``np.uint8(np.round(x))``).
    MI (MI(vis, F) + MI(ir, F), joint 256x256 histogram)
        mi_log_base: e (nats) in both references.
        mi_quantization: ``'minmax'`` (VIFB: each image min-max normalised then ``int16(x*255)``,
            i.e. rounded half away from zero; a constant image maps to 0) or ``'round'`` (CDDFuse:
            the grey levels themselves, as sklearn's ``mutual_info_score`` labels).
    SSIM (Wang et al. 2004) summed over the two sources
        ssim_window: ``'gaussian'`` or ``'uniform'``; ssim_win_size; ssim_sigma (gaussian only).
        ssim_data_range: L in C1 = (K1 L)^2, C2 = (K2 L)^2 (255 for VIFB; 2 for CDDFuse, which is
            scikit-image's guess for float input -- the images are still 0..255).
        ssim_border: ``'valid'`` (MATLAB ``filter2(..., 'valid')``) or ``'reflect_crop'``
            (scikit-image: filter with reflected borders, then drop (win-1)/2 pixels per side).
        ssim_sample_covariance: N/(N-1) covariance normalisation (scikit-image default) or not.
        ssim_dtype: ``'float64'`` or ``'float32'`` (scikit-image keeps float32 input in float32;
            with CDDFuse's tiny C2 the float32 rounding of flat regions is visible in the 4th
            decimal, so the paper convention reproduces it: separable passes rounded to float32
            between axes exactly like ``scipy.ndimage.uniform_filter``).
        ssim_combine: ``'sum'`` of SSIM(vis, F) and SSIM(ir, F) (both references) or ``'mean'``.
    Q^{AB/F} (Xydeas & Petrovic 2000)
        qabf_params: (L, Tg, kg, Dg, Ta, ka, Da) = (1, 0.9994, -15, 0.5, 0.9879, -22, 0.8).
        qabf_gradient_scale: factor applied to the 0..255 images before the Sobel filters. It
            only matters through a quirk shared by both references: where a source and the fused
            image have *equal* gradient magnitude, the "relative strength" is set to the magnitude
            itself instead of 1. VIFB's ``255*im2double(double(img))`` scales by 255; CDDFuse uses 1.
        Orientation uses ``atan(Sy/Sx)`` (not atan2), pi/2 where Sx == 0, in both references.
    VIF (Sheikh & Bovik 2006, pixel-domain multi-scale VIFp) summed over the two sources
        vif_sigma_nsq: 2; vif_eps: 1e-10; vif_scales: 4; vif_combine: ``'sum'``.
    MS-SSIM (Wang et al. 2003), as ``pytorch_msssim.ms_ssim``
        msssim_data_range: 255; msssim_win_size: 11; msssim_sigma: 1.5; msssim_weights: the five
        published exponents; msssim_combine: over the two sources, like ssim_combine.
    MSS: the same MS-SSIM with ``mss_data_range`` as L: the MultiTaskVIF tables' MSS column
        (Tables 4-5, 0.73-1.08 over methods; the paper does not say how it was computed). In the
        paper convention ``mss_data_range = 2``: the scikit-image float-input guess that the
        CDDFuse evaluator's SSIM also gets while the images hold 0..255, so C1 = (0.01 L)^2 and
        C2 = (0.03 L)^2 are ~1e-4 of their 8-bit values and the score is nearly pure structure.
        Why 2: the public SeAFusion outputs for all 361 MSRS test pairs (ycc568/my-seafusion
        ``commit/Results/SeAFusion``) score MSS 1.05 with it, the paper's SeAFusion row in Table 5
        (``tests/metrics/test_mss.py`` checks the value on three of those pairs; L = 255 gives
        1.47, L = 1 the same 1.05 to 3 decimals). No public evaluator with this exact MS-SSIM
        was found (CDDFuse's ``utils/Evaluator.py`` has no MS-SSIM, Tang's MATLAB toolbox uses the
        MEF-MS-SSIM of Ma et al., which is at most 1), so this is the convention that reproduces the
        published number, not a verified copy of the authors' code. ``vifb``: 255 (MSS = MS_SSIM).
    dE: mean CIEDE2000 (Sharma et al. 2005) between the fused and the *visible* image in CIELAB
        (sRGB, D65, 2 degree observer), always on RGB (a grey image is replicated to 3 channels).
        de_reference: ``'vis'``.
    SF, AG, SD, PSNR, SCD
        sf_definition: ``'vifb'`` (sums of squared row / column differences divided by M*N; VIFB
            calls ``[m,n]=size(F)`` on an RGB image, which lays the three channels side by side,
            so the channels form one M x 3N image) or ``'mean'`` (CDDFuse: mean of squared
            horizontal differences plus mean of squared vertical differences, per channel).
        ag_normalisation: ``'vifb'`` (sum over all pixels / ((M-1)(N-1))) or ``'mean'``
            (CDDFuse). Both use MATLAB ``gradient`` (central differences, one-sided at borders)
            and sqrt((gx^2 + gy^2) / 2).
        sd_ddof: 0 (population standard deviation) in both.
        psnr_definition: ``'vifb'`` (VIFB's ``mse`` is sqrt(sum (A-F)^2) / (M N); PSNR =
            20 log10(255 / sqrt((mse_A + mse_B) / 2))) or ``'cddfuse'`` (10 log10(max(F)^2 /
            ((MSE_A + MSE_B) / 2)) with the true MSE) or ``'standard'`` (peak 255, true MSE).
        SCD (Aslantas & Bendes 2015): corr(A, F - B) + corr(B, F - A) in both.
    """

    name: str
    description: str
    colour: str
    gray: str
    gray_round: bool
    en_log_base: float = 2.0
    en_quantization: str = 'floor'
    mi_log_base: float = math.e
    mi_quantization: str = 'minmax'
    ssim_window: str = 'gaussian'
    ssim_win_size: int = 11
    ssim_sigma: float = 1.5
    ssim_data_range: float = 255.0
    ssim_k: Tuple[float, float] = (0.01, 0.03)
    ssim_border: str = 'valid'
    ssim_sample_covariance: bool = False
    ssim_dtype: str = 'float64'
    ssim_combine: str = 'sum'
    qabf_params: Tuple[float, ...] = (1.0, 0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8)
    qabf_gradient_scale: float = 255.0
    vif_sigma_nsq: float = 2.0
    vif_eps: float = 1e-10
    vif_scales: int = 4
    vif_combine: str = 'sum'
    msssim_data_range: float = 255.0
    msssim_win_size: int = 11
    msssim_sigma: float = 1.5
    msssim_weights: Tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    msssim_combine: str = 'sum'
    mss_data_range: float = 255.0
    de_reference: str = 'vis'
    sf_definition: str = 'vifb'
    ag_normalisation: str = 'vifb'
    sd_ddof: int = 0
    psnr_definition: str = 'vifb'
    references: Dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        choices = {
            'colour': ('per_channel', 'gray'), 'gray': ('cv2', 'matlab'),
            'en_quantization': ('floor', 'round'), 'mi_quantization': ('minmax', 'round'),
            'ssim_window': ('gaussian', 'uniform'), 'ssim_border': ('valid', 'reflect_crop'),
            'ssim_dtype': ('float64', 'float32'), 'ssim_combine': ('sum', 'mean'),
            'vif_combine': ('sum', 'mean'), 'msssim_combine': ('sum', 'mean'),
            'de_reference': ('vis',), 'sf_definition': ('vifb', 'mean'),
            'ag_normalisation': ('vifb', 'mean'), 'psnr_definition': ('vifb', 'cddfuse', 'standard'),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f'Convention.{name} must be one of {allowed}, got {getattr(self, name)!r}')
        if self.ssim_win_size % 2 != 1 or self.msssim_win_size % 2 != 1:
            raise ValueError('SSIM window sizes must be odd')

    def as_dict(self) -> dict:
        """The convention as plain JSON-able values (written into evaluation results)."""
        d = asdict(self)
        d['ssim_k'] = list(self.ssim_k)
        d['qabf_params'] = list(self.qabf_params)
        d['msssim_weights'] = list(self.msssim_weights)
        return d


VIFB = Convention(
    name='vifb',
    description="VIFB MATLAB metrics (Zhang et al., CVPRW 2020): per-channel, MI in nats after "
                "min-max requantisation, SSIM 11x11 Gaussian 'valid' L=255 summed",
    colour='per_channel', gray='matlab', gray_round=True,
    en_log_base=2.0, en_quantization='floor',
    mi_log_base=math.e, mi_quantization='minmax',
    ssim_window='gaussian', ssim_win_size=11, ssim_sigma=1.5, ssim_data_range=255.0,
    ssim_border='valid', ssim_sample_covariance=False, ssim_dtype='float64', ssim_combine='sum',
    qabf_gradient_scale=255.0,
    vif_combine='sum', msssim_combine='sum',
    sf_definition='vifb', ag_normalisation='vifb', sd_ddof=0, psnr_definition='vifb',
    references={
        'EN': 'VIFB metrics/metricsEntropy.m', 'MI': 'VIFB metrics/metricsMutinf.m (Qu et al. 2002)',
        'Qabf': 'VIFB metrics/metricsQabf.m (Xydeas & Petrovic 2000)',
        'SSIM': 'VIFB metrics/metricsSsim.m (Wang et al. 2004)', 'SD': 'VIFB metrics/metricsVariance.m',
        'SF': 'VIFB metrics/metricsSpatial_frequency.m', 'AG': 'VIFB metrics/metricsAvg_gradient.m',
        'PSNR': 'VIFB metrics/metricsPsnr.m', 'VIF': 'piq.vif_p per channel (not in VIFB)',
        'MS_SSIM': 'pytorch_msssim.ms_ssim per channel (not in VIFB)',
        'MSS': 'as MS_SSIM (data_range 255)',
        'SCD': 'Aslantas & Bendes 2015 per channel (not in VIFB)',
        'dE': 'CIEDE2000 vs visible (not in VIFB)',
    },
)

PAPER = Convention(
    name='paper',
    description="CDDFuse utils/Evaluator.py (Zhao et al., CVPR 2023), the scale of the MultiTaskVIF "
                "tables: cv2 grey, MI nats on grey levels, skimage-0.19 SSIM (7x7 uniform, "
                "data_range=2) summed, VIFp summed",
    colour='gray', gray='cv2', gray_round=True,
    en_log_base=2.0, en_quantization='round',
    mi_log_base=math.e, mi_quantization='round',
    ssim_window='uniform', ssim_win_size=7, ssim_sigma=1.5, ssim_data_range=2.0,
    ssim_border='reflect_crop', ssim_sample_covariance=True, ssim_dtype='float32', ssim_combine='sum',
    qabf_gradient_scale=1.0,
    vif_combine='sum', msssim_combine='sum', mss_data_range=2.0,
    sf_definition='mean', ag_normalisation='mean', sd_ddof=0, psnr_definition='cddfuse',
    references={
        'EN': 'CDDFuse Evaluator.EN', 'SD': 'Evaluator.SD', 'SF': 'Evaluator.SF', 'AG': 'Evaluator.AG',
        'MI': 'Evaluator.MI (sklearn mutual_info_score)', 'SCD': 'Evaluator.SCD (Aslantas & Bendes 2015)',
        'VIF': 'Evaluator.VIFF (vifp_mscale, Sheikh & Bovik 2006)', 'Qabf': 'Evaluator.Qabf',
        'SSIM': 'Evaluator.SSIM (skimage 0.19 structural_similarity defaults)',
        'PSNR': 'Evaluator.PSNR', 'MS_SSIM': 'pytorch_msssim.ms_ssim on grey (not in the Evaluator)',
        'MSS': 'pytorch_msssim.ms_ssim on 0..255 grey with data_range=2 (reproduces Table 5 SeAFusion MSS 1.05)',
        'dE': 'CIEDE2000 vs visible RGB (not in the Evaluator)',
    },
)

#: the built-in conventions by name
CONVENTIONS: Dict[str, Convention] = {'vifb': VIFB, 'paper': PAPER}


def get_convention(convention: Union[str, Convention]) -> Convention:
    """Look a convention up by name (``'vifb'``, ``'paper'``) or pass a :class:`Convention` through."""
    if isinstance(convention, Convention):
        return convention
    try:
        return CONVENTIONS[str(convention).lower()]
    except KeyError:
        raise ValueError(f'unknown metric convention {convention!r}; choose one of {sorted(CONVENTIONS)} '
                         'or pass a mtvif_zoo.metrics.Convention') from None
