"""Colour conversions exactly as the metric references do them (images on the 0..255 scale).

* :func:`gray_cv2` -- OpenCV ``cvtColor(img_float32, COLOR_BGR2GRAY)``: float32 arithmetic with
  OpenCV's fused multiply-adds, ``fma(R, 0.299f, fma(B, 0.114f, G * 0.587f))`` (checked bit for bit
  against opencv-python 4.5.3 on all 2^24 8-bit colours), optionally followed by ``np.round``
  (half to even) as CDDFuse's ``image_read_cv2(..., 'GRAY')`` does.
* :func:`gray_matlab` -- MATLAB ``rgb2gray``: coefficients = first row of
  ``inv([1 0.956 0.621; 1 -0.272 -0.647; 1 -1.106 1.703])``; uint8 input is rounded half away
  from zero, double input is not rounded.
* :func:`rgb_to_lab` -- sRGB (D65, 2 degree observer) to CIELAB, the formulas and constants of
  ``skimage.color.rgb2lab``.
"""
from __future__ import annotations

import torch

__all__ = ['gray_cv2', 'gray_matlab', 'rgb_to_lab', 'srgb_to_linear', 'linear_rgb_to_lab', 'MATLAB_GRAY_COEFFS',
           'round_half_away']

#: MATLAB rgb2gray coefficients (first row of inv of the NTSC YIQ matrix), to double precision
MATLAB_GRAY_COEFFS = (0.298936021293775, 0.587043074451121, 0.114020904255103)

_CV_R, _CV_G, _CV_B = (float(torch.tensor(c, dtype=torch.float32)) for c in (0.299, 0.587, 0.114))


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's rounding of a double to an integer type: halves go away from zero."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).to(torch.float64)


_GRAY_LUTS = {}


def _gray_cv2_luts(device) -> tuple:
    """float64 tables for uint8 data: ``fl32(fma(B, cb, fl32(G cg)))`` per ``256 G + B`` (the first
    two FMA steps of :func:`gray_cv2`) and ``gray_cv2`` of a grey level (for 1-channel images)."""
    key = str(device)
    if key not in _GRAY_LUTS:
        lv = torch.arange(256, dtype=torch.float64, device=device)
        gb = torch.stack(torch.meshgrid(lv, lv, indexing='ij'))   # [G, B] over the 256 x 256 grid
        zero = torch.zeros_like(gb[0])
        t = gray_cv2(torch.stack((zero, gb[0], gb[1]))[None], round_result=False)  # R = 0: exact t2
        _GRAY_LUTS[key] = (t.reshape(-1), gray_cv2(lv.view(1, 1, 256), round_result=False).reshape(-1))
    return _GRAY_LUTS[key]


def _gray_cv2_uint8(x: torch.Tensor, round_result: bool, out_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """:func:`gray_cv2` of uint8 data through tables (bit for bit the same; all 2^24 colours tested):
    the (G, B) steps are one lookup, the last FMA ``fl32(t + R cr)`` is exact in float64 before
    its float32 rounding. ``out_dtype=torch.uint8`` with ``round_result`` gives the 8-bit grey image."""
    gb_lut, grey_lut = _gray_cv2_luts(x.device)
    if x.shape[-3] == 1:
        idx = x[..., 0, :, :].to(torch.int32)
        t = grey_lut.index_select(0, idx.reshape(-1)).view(idx.shape)
    else:
        r, g, b = x.unbind(-3)
        idx = g.to(torch.int32).mul_(256).add_(b)
        t = gb_lut.index_select(0, idx.reshape(-1)).view(idx.shape).add_(r, alpha=_CV_R).to(torch.float32)
    if round_result:
        t = t.round_()  # float32 values: rounding in float64 is the same
    return t.to(out_dtype).unsqueeze(-3)


def gray_cv2(rgb: torch.Tensor, round_result: bool = True) -> torch.Tensor:
    """``... x 3 x H x W`` RGB (0..255) -> ``... x 1 x H x W`` grey, as OpenCV computes it on float32.

    A fused multiply-add is emulated in float64: for float32 operands the product is exact in
    float64 and so is the sum (the exponents of 0..255 data are close), leaving exactly the one
    float32 rounding that the hardware FMA does. uint8 input goes through lookup tables (same bits).
    """
    if rgb.dtype == torch.uint8 and rgb.shape[-2] * rgb.shape[-1] > 1024:
        return _gray_cv2_uint8(rgb, round_result)
    if rgb.shape[-3] == 1:
        r = g = b = rgb.to(torch.float32)[..., 0, :, :]
    else:
        r, g, b = rgb.to(torch.float32).unbind(-3)
    # float32 product = the float32 rounding of the exact product (same as _f32(g64 * c))
    t = torch.mul(g, _CV_G)
    # fma in float64: the product of two float32 values is exact in float64, one rounding in the sum,
    # then the float32 rounding; in-place alpha-adds avoid float64 temporaries of the channels
    t = t.to(torch.float64).add_(b, alpha=_CV_B).to(torch.float32)
    t = t.to(torch.float64).add_(r, alpha=_CV_R).to(torch.float32)
    if round_result:
        t = torch.round(t)  # half to even, like np.round (exact on float32 values)
    return t.to(torch.float64).unsqueeze(-3)


def gray_matlab(rgb: torch.Tensor, uint8_input: bool) -> torch.Tensor:
    """MATLAB ``rgb2gray`` of ``... x 3 x H x W`` (0..255). ``uint8_input`` rounds like MATLAB."""
    if rgb.shape[-3] == 1:
        return rgb.to(torch.float64)
    r, g, b = rgb.to(torch.float64).unbind(-3)
    cr, cg, cb = MATLAB_GRAY_COEFFS
    y = r * cr + g * cg + b * cb
    if uint8_input:
        y = round_half_away(y).clamp_(0, 255)
    return y.unsqueeze(-3)


_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                 (0.212671, 0.715160, 0.072169),
                 (0.019334, 0.119193, 0.950227))
_D65_2DEG = (0.95047, 1.0, 1.08883)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB 0..255 -> linear RGB 0..1 (skimage's ``rgb2xyz`` first step); 8-bit values via a table."""
    x = rgb.to(torch.float64)
    if x.numel() > 4096 and bool(((x >= 0) & (x <= 255) & (x == torch.floor(x))).all()):
        v = torch.arange(256, dtype=torch.float64, device=x.device) / 255.0
        lut = torch.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
        return lut[x.to(torch.int64)]
    x = x / 255.0
    return torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)


def linear_rgb_to_lab(lin: torch.Tensor) -> torch.Tensor:
    """Linear RGB (``... x 3 x H x W``, 0..1) -> CIELAB, D65 / 2 degrees (skimage ``xyz2lab``)."""
    r, g, b = lin.unbind(-3)
    out = []
    for m, w in zip(_XYZ_FROM_RGB, _D65_2DEG):
        t = (r * m[0] + g * m[1] + b * m[2]) / w
        out.append(torch.where(t > 0.008856, torch.pow(t.clamp(min=0.0), 1.0 / 3.0), 7.787 * t + 16.0 / 116.0))
    fx, fy, fz = out
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """``... x 3 x H x W`` sRGB on 0..255 -> CIELAB (L, a, b), as ``skimage.color.rgb2lab``."""
    return linear_rgb_to_lab(srgb_to_linear(rgb))
