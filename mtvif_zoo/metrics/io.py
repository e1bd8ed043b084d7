"""Image loading for the metrics: anything image-like -> float64 ``C x H x W`` tensor on 0..255.

Accepted inputs and their documented conversions:

* **path** (``str`` / ``os.PathLike``): decoded with Pillow (JPEG with Pillow's libjpeg, as the VIFB
  check requires). A missing file raises ``FileNotFoundError``; an undecodable one (or a PNG whose
  image data ends before its last row, which PIL reads as black rows) raises
  :class:`UnreadableImageError` naming the file.
* **PIL image**: ``L`` / ``1`` -> 1 channel; ``RGB`` -> 3; ``RGBA`` / ``LA`` drop alpha; ``P``,
  ``CMYK``, ``YCbCr`` ... are converted to RGB; 16-bit modes (``I;16*``, and ``I`` with values in
  0..65535) are 16-bit data; ``F`` is taken as already on 0..255.
* **numpy array**: ``H x W`` or ``H x W x C`` (C = 1, 3 or 4; alpha dropped).
* **torch tensor**: ``H x W``, ``C x H x W`` or ``1 x C x H x W``.

Value scales: ``uint8`` as is; ``uint16`` (and PIL 16-bit modes) are rescaled linearly,
``x * 255 / 65535``, and kept as floats (so a 16-bit image ``v * 257`` gives exactly the metrics of
the 8-bit image ``v``; metrics with integer levels -- EN, MI, the paper convention's grey -- then
quantise per convention); ``bool`` -> {0, 255}; float data is taken **on 0..255** unless
``data_range`` says otherwise (``data_range=1.0`` for images in [0, 1]: a warning is issued when a
float image has maximum <= 1 and no ``data_range`` was given). Other integer types need an
explicit ``data_range``; ``data_range`` never changes uint8 / uint16 data, whose range is known. NaN or
inf values are an error.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
import torch

from .._png import check_png_data

__all__ = ['to_metric_tensor', 'UnreadableImageError', 'IMAGE_EXTENSIONS']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


class UnreadableImageError(ValueError):
    """An image file exists but cannot be decoded."""


def _from_pil(im, name: str) -> Tuple[np.ndarray, Optional[float]]:
    mode = im.mode
    if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N'):
        return np.asarray(im, dtype=np.uint16), None
    if mode == 'I':
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f'{name}: 32-bit integer image with values outside 0..65535 is not supported')
        return a.astype(np.uint16), None
    if mode == 'F':
        return np.asarray(im, dtype=np.float32), 255.0
    if mode in ('1', 'L', 'LA'):
        return np.asarray(im.convert('L')), None
    if mode == 'RGB':
        return np.asarray(im), None
    return np.asarray(im.convert('RGBA' if 'A' in mode or 'transparency' in im.info else 'RGB'))[..., :3], None


def _read_path(path, name: str):
    from PIL import Image, UnidentifiedImageError
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'{name} image not found: {str(p)!r}')
    try:
        with Image.open(p) as im:
            im.load()
            out = _from_pil(im, f'{name} {p}')
    except Image.DecompressionBombError as e:  # not an OSError: PIL's guard against huge declared sizes
        raise UnreadableImageError(f'cannot read {name} image {str(p)!r}: too large to decode safely ({e}); raise '
                                   'PIL.Image.MAX_IMAGE_PIXELS if the file is trusted') from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UnreadableImageError(f'cannot read {name} image {str(p)!r}: {e}') from e
    try:
        check_png_data(p, f'{name} image')  # PIL reads missing rows as black, without an error
    except ValueError as e:
        raise UnreadableImageError(f'cannot read {e}') from None
    return out


def to_metric_tensor(img: Any, *, data_range: Optional[float] = None, name: str = 'image',
                     keep_uint8: bool = False) -> torch.Tensor:
    """Convert one image to a float64 ``C x H x W`` tensor (C = 1 or 3) on the 0..255 scale.

    See the module docstring for the accepted kinds and scales. Tensors keep their device.
    ``keep_uint8=True`` returns 8-bit data as a uint8 tensor instead (same values; ``compute_batch``
    then takes its 8-bit fast paths: table grey conversion, no integrality checks).
    """
    implied_range = None
    if isinstance(img, (str, os.PathLike)):
        img, implied_range = _read_path(img, name)
    else:
        try:
            from PIL import Image
            if isinstance(img, Image.Image):
                img, implied_range = _from_pil(img, name)
        except ImportError:  # pragma: no cover
            pass
    if isinstance(img, np.ndarray):
        a = img
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise ValueError(f'{name}: numpy images must be H x W or H x W x C (C in 1, 3, 4); got shape {img.shape}')
        if a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        t = torch.from_numpy(np.array(a[:, :, :3])).permute(2, 0, 1)  # copy: arrays may be read-only
    elif isinstance(img, torch.Tensor):
        t = img.detach()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f'{name}: tensors must be H x W, C x H x W or 1 x C x H x W (C in 1, 3, 4); '
                             f'got shape {tuple(img.shape)}')
        t = t[:3]
        if t.dtype == torch.bool:
            t = t.to(torch.uint8) * 255
    else:
        raise TypeError(f'{name}: expected a path, PIL image, numpy array or torch tensor, got {type(img).__name__}')

    dtype = t.dtype
    if keep_uint8 and dtype == torch.uint8:
        return t.contiguous()
    x = t.to(torch.float64, memory_format=torch.contiguous_format)  # C x H x W planes (not HWC strides)
    if dtype == torch.uint8:
        scale = 1.0
    elif dtype == torch.uint16:
        scale = 255.0 / 65535.0
    elif dtype.is_floating_point:
        if not torch.isfinite(x).all():
            raise ValueError(f'{name} contains NaN or inf values')
        dr = data_range if data_range is not None else implied_range
        if dr is None:
            if x.numel() and float(x.max()) <= 1.0 and float(x.max()) > 0:
                warnings.warn(f'{name}: float image with maximum <= 1 is taken on the 0..255 scale; '
                              'pass data_range=1.0 if it is in [0, 1]', stacklevel=3)
            dr = 255.0
        scale = 255.0 / float(dr)
    else:
        if data_range is None:
            raise ValueError(f'{name}: integer dtype {dtype} needs an explicit data_range')
        scale = 255.0 / float(data_range)
    if scale != 1.0:
        x = x * scale
    return x
