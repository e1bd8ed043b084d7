"""Preview pictures: visible | infrared | fused | segmentation overlay, with a class legend.

People look rather than read: ``mtvif fuse --preview`` writes one such strip per pair.
Class colours are the MFNet / MSRS palette used by RTFNet, SeAFusion and the MSRS toolkits.
"""
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .models.multitaskvif import MSRS_CLASSES

__all__ = ['MSRS_PALETTE', 'colorize', 'overlay', 'make_preview']

#: RGB colour per MSRS / MFNet class id (0 unlabelled .. 8 bump)
MSRS_PALETTE = np.array([
    (0, 0, 0), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 192),
    (128, 128, 0), (64, 64, 128), (192, 128, 128), (192, 64, 0)], dtype=np.uint8)


def _palette(n: int) -> np.ndarray:
    if n <= len(MSRS_PALETTE):
        return MSRS_PALETTE[:n]
    rng = np.random.default_rng(0)
    extra = rng.integers(40, 256, size=(n - len(MSRS_PALETTE), 3), dtype=np.uint8)
    return np.concatenate([MSRS_PALETTE, extra])


def colorize(classes: np.ndarray, num_classes: int = len(MSRS_CLASSES)) -> np.ndarray:
    """``H x W`` class ids -> ``H x W x 3`` uint8 colours."""
    return _palette(max(num_classes, int(classes.max()) + 1))[classes]


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = 0.55, ignore: int = 0) -> np.ndarray:
    """Blend class colours onto an RGB image where the class is not ``ignore`` (unlabelled)."""
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    col = colorize(classes).astype(np.float32)
    mask = (classes != ignore)[..., None]
    out = np.where(mask, (1 - alpha) * rgb.astype(np.float32) + alpha * col, rgb.astype(np.float32))
    return out.round().clip(0, 255).astype(np.uint8)


def _to_rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a if a.ndim == 3 else a, mode='RGB' if a.ndim == 3 else 'L').convert('RGB')


def make_preview(vis: np.ndarray, ir: np.ndarray, fused: np.ndarray, classes: Optional[np.ndarray] = None,
                 class_names: Sequence[str] = MSRS_CLASSES, title: str = '') -> Image.Image:
    """One strip: visible | infrared | fused | segmentation overlay (+ legend); uint8 arrays in."""
    panels = [('visible', vis), ('infrared', ir), ('fused', fused)]
    if classes is not None:
        panels.append(('segmentation', overlay(fused, classes)))
    h, w = fused.shape[:2]
    font = ImageFont.load_default()
    label_h = 18
    legend_h = 0
    present = []
    if classes is not None:
        present = [c for c in np.unique(classes).tolist() if c != 0 and c < len(class_names)]
        legend_h = 22 if present else 0
    canvas = Image.new('RGB', (w * len(panels), h + label_h + legend_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (name, arr) in enumerate(panels):
        canvas.paste(_to_rgb(arr), (k * w, label_h))
        draw.text((k * w + 4, 3), f'{name}{" - " + title if title and k == 0 else ""}', fill=(0, 0, 0), font=font)
    x = 4
    pal = _palette(len(class_names))
    for c in present:
        y = h + label_h + 4
        draw.rectangle([x, y, x + 14, y + 14], fill=tuple(int(v) for v in pal[c]), outline=(0, 0, 0))
        draw.text((x + 18, y + 2), class_names[c], fill=(0, 0, 0), font=font)
        x += 30 + 7 * len(class_names[c])
    return canvas
