"""Colour conversions used by the fusion API, the losses and the 1-channel (Y) mode.

YCbCr is the full-range BT.601 transform used by SeAFusion / MultiTaskVIF's fusion code
(``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cr = 0.713 (R - Y) + 0.5``, ``Cb = 0.564 (B - Y) + 0.5``),
on images in [0, 1], channel dimension -3.
"""
import torch

__all__ = ['rgb_to_ycbcr', 'ycbcr_to_rgb', 'rgb_to_gray']


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma, keeps a channel dimension of size 1."""
    r, g, b = rgb.unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """``... x 3 x H x W`` RGB in [0, 1] -> ``... x 3 x H x W`` (Y, Cb, Cr) in [0, 1]."""
    r, g, b = rgb.unbind(-3)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = (r - y) * 0.713 + 0.5
    cb = (b - y) * 0.564 + 0.5
    return torch.stack((y, cb, cr), dim=-3)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    y, cb, cr = ycbcr.unbind(-3)
    r = y + 1.403 * (cr - 0.5)
    g = y - 0.714 * (cr - 0.5) - 0.344 * (cb - 0.5)
    b = y + 1.773 * (cb - 0.5)
    return torch.stack((r, g, b), dim=-3)
