"""``fuse()``: the user-facing inference API (any input kind in, the same kind out).

Input conventions (documented conversions, everything else is a clear error):

* **kinds**: file path (``str`` / ``pathlib.Path``), ``PIL.Image``, ``numpy.ndarray``
  (``HxW``, ``HxWxC`` or a batch ``BxHxWxC``), ``torch.Tensor`` (``HxW``, ``CxHxW`` or ``BxCxHxW``),
  or a list / tuple of paths, PIL images or arrays (a batch). The result has the kind and layout of
  the *visible* input: PIL in -> PIL out, ``HxWxC`` uint8 array in -> ``HxWxC`` uint8 array out,
  ``CHW`` tensor in -> ``CHW`` float tensor in [0, 1] out (on the input's device), list in -> list
  out.
* **value ranges**: uint8 is divided by 255. 16-bit (uint16 arrays, PIL ``I;16`` / ``I`` images,
  integer tensors) is rescaled explicitly: the infrared image by ``ir_range`` (default
  ``'minmax'``: per-image min-max to [0, 1], the usual way to display radiometric thermal), the
  visible image by ``vis_range`` (default ``'full'``: divide by 65535). Either may also be a
  ``(low, high)`` pair of raw values. Float arrays and tensors must already be in [0, 1]. Integer
  numpy arrays must be uint8 or uint16 (an int32 array holding 0..255 is refused, not guessed:
  ``arr.astype(np.uint8)``); complex data and meta-device tensors are refused; long double arrays
  are read as float64. 16-bit data read with the ``'full'`` range whose values are all <= 255 (8-bit
  values in a uint16 array or an int64 tensor, e.g. from ``torch.randint``) gives a ``UserWarning``:
  it comes out nearly black.
* **channels**: visible may be RGB (3) or grayscale (1); RGBA drops alpha, palette images are
  converted to RGB. Infrared may be 1 or 3 channels; 3-channel infrared is converted to grey
  (BT.601 luma) because the models were trained on IR replicated from one channel. A colour
  "infrared" input next to a grey "visible" one gives a ``UserWarning`` (inputs look swapped). A grayscale
  visible input gives a grayscale fused output (the BT.601 luma of a 3-channel model's output).
* **1-channel models** (``in_chans=1``, Table 6 v): the visible image is converted to YCbCr, Y and
  IR are fused, and the fused Y is recombined with the visible Cb/Cr.
* **any size**: inputs are reflect-padded to the backbone's ``pad_multiple`` and cropped back;
  ``tile=N`` fuses large images in overlapping ``N x N`` tiles blended with linear ramps.
* **device / precision**: the model's device; ``torch.inference_mode``; autocast by default on
  CUDA (bf16 when supported, else fp16) and on CPUs with native bf16 matrix units (AMX-BF16 or
  AVX512-BF16, :func:`~mtvif_zoo.models.layers._fast.cpu_has_bf16_units`: bf16, several times
  faster than fp32 there); other CPUs (e.g. AVX2-only, where bf16 is emulated and slower) run fp32.
  ``amp=True`` forces autocast (bf16 on CPU), ``amp=False`` fp32 (the same bits as before bf16
  existed). :func:`inference_dtype` says which one a call gets. The last layer, its sigmoid / tanh
  and the conversion to the output run in fp32 in every case. The model's train/eval mode is
  restored.
* **speed**: inputs go to the model in channels_last memory and the models take their fast paths
  (:mod:`mtvif_zoo.models.layers._fast`: fused oneDNN conv / matmul kernels on CPU, Swin's
  chunked SDPA window attention); ``compile=True`` runs the model through ``torch.compile``; on
  CUDA host tensors are pinned and copied asynchronously. ``mtvif bench`` measures all of it.
  For many CPU calls in one process, :func:`tune_cpu_allocator` (opt-in, process-wide) lets glibc
  reuse large buffers instead of page-faulting fresh memory for every activation.
"""
from __future__ import annotations

import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ._png import check_png_data
from .color import rgb_to_gray, rgb_to_ycbcr, ycbcr_to_rgb

__all__ = ['fuse', 'segment', 'load_image', 'to_tensor_image', 'check_fuse_args', 'DEFAULT_MODEL', 'tune_cpu_allocator',
           'inference_dtype']

from ._defaults import DEFAULT_MODEL  # noqa: E402  (defined beside the CLI's other torch-free constants)

Range = Union[str, Tuple[float, float]]


# --------------------------------------------------------------------------------------------
# input conversion
# --------------------------------------------------------------------------------------------

def load_image(path: Union[str, os.PathLike], role: str = 'image') -> np.ndarray:
    """Read an image file into a numpy array (``HxW`` or ``HxWx3``; uint8 or uint16).

    An unreadable file, a folder, a decompression bomb and a PNG whose image data ends before its
    last row (PIL fills the missing rows with black, silently: :func:`mtvif_zoo._png.check_png_data`)
    are a ``ValueError`` naming the file."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f'{role} image {str(p)!r} is a folder, not an image file')
    if not p.is_file():
        raise FileNotFoundError(f'{role} image not found: {str(p)!r}')
    try:
        with Image.open(p) as im:
            a = _pil_to_array(im)
    except Image.DecompressionBombError as e:  # not an OSError: PIL's guard against huge declared sizes
        raise ValueError(f'{role} image {str(p)!r} is too large to decode safely ({e}); raise '
                         'PIL.Image.MAX_IMAGE_PIXELS if the file is trusted') from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        raise ValueError(f'{role} image {str(p)!r} is not a readable image file ({e}); '
                         'pass a PNG/JPEG/TIFF/BMP file or an array') from None
    check_png_data(p, f'{role} image')  # PIL reads missing rows as black, without an error
    return a


def _pil_to_array(im: Image.Image) -> np.ndarray:
    if im.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N'):
        return np.asarray(im, dtype=np.uint16).copy()
    if im.mode == 'I':
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f'32-bit integer image with values outside 0..65535 ({a.min()}..{a.max()})')
        return a.astype(np.uint16)
    if im.mode == 'F':
        return np.asarray(im, dtype=np.float32).copy()
    if im.mode in ('L', 'RGB'):
        return np.asarray(im).copy()
    if im.mode in ('1', 'LA'):
        return np.asarray(im.convert('L')).copy()
    return np.asarray(im.convert('RGB')).copy()  # RGBA (alpha dropped), P, CMYK, YCbCr, ...


def _rescale(x: torch.Tensor, rng: Range, role: str) -> torch.Tensor:
    x = x.float()
    if isinstance(rng, str):
        if rng == 'full':
            return x / 65535.0
        if rng == 'minmax':
            lo, hi = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
            return (x - lo) / (hi - lo).clamp_min(1e-12)
        raise ValueError(f"the 16-bit range for the {role} image must be 'minmax', 'full' or a (low, high) pair, "
                         f"got {rng!r}")
    lo, hi = (float(v) for v in rng)
    if not hi > lo:
        raise ValueError(f'the 16-bit range (low, high) for the {role} image needs high > low, got {rng!r}')
    return ((x - lo) / (hi - lo)).clamp(0, 1)


@dataclass
class _Meta:
    kind: str  # 'path' | 'pil' | 'numpy' | 'tensor'
    layout: str  # 'HW' | 'HWC' | 'CHW' | 'BHWC' | 'BCHW'
    dtype: Any = None
    device: Any = None


def to_tensor_image(img: Any, role: str = 'image', rng: Range = 'full') -> Tuple[torch.Tensor, _Meta]:
    """Convert one input (or a batched array / tensor) to a float ``B x C x H x W`` tensor in [0, 1]."""
    if isinstance(img, (str, os.PathLike)):
        arr = load_image(img, role)
        t, _ = to_tensor_image(arr, role, rng)
        return t, _Meta('path', 'HWC' if arr.ndim == 3 else 'HW', arr.dtype)
    if isinstance(img, Image.Image):
        t, _ = to_tensor_image(_pil_to_array(img), role, rng)
        return t, _Meta('pil', 'HWC')
    if isinstance(img, np.ndarray):
        layout = {2: 'HW', 3: 'HWC', 4: 'BHWC'}.get(img.ndim)
        if layout is None:
            raise ValueError(f'{role} array must be HxW, HxWxC or BxHxWxC, got shape {img.shape}')
        _check_array_dtype(img.dtype, role)
        arr = np.ascontiguousarray(img)
        if np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize > 8:  # long double: torch has no such type
            arr = arr.astype(np.float64)
        if not arr.flags.writeable:  # np.asarray(PIL image) is read-only: torch would warn on from_numpy
            arr = arr.copy()
        t = torch.from_numpy(arr)
        if img.ndim == 2:
            t = t[None, None]
        elif img.ndim == 3:
            t = t.permute(2, 0, 1)[None]
        else:
            t = t.permute(0, 3, 1, 2)
        return _normalise(t, img.dtype, role, rng), _Meta('numpy', layout, img.dtype)
    if isinstance(img, torch.Tensor):
        layout = {2: 'HW', 3: 'CHW', 4: 'BCHW'}.get(img.ndim)
        if layout is None:
            raise ValueError(f'{role} tensor must be HxW, CxHxW or BxCxHxW, got shape {tuple(img.shape)}')
        if img.device.type == 'meta':
            raise ValueError(f'{role} tensor is on the meta device (no data); pass a tensor with values '
                             '(e.g. .to_empty(device="cpu") and fill it, or a CPU / CUDA tensor)')
        if img.is_complex():
            raise ValueError(f'{role} tensor is complex ({img.dtype}); pass real values (e.g. .real or .abs())')
        t = img.reshape((1,) * (4 - img.ndim) + tuple(img.shape))
        return _normalise(t, img.dtype, role, rng), _Meta('tensor', layout, img.dtype, img.device)
    raise ValueError(f'{role} must be a file path, PIL image, numpy array or torch tensor, '
                     f'got {type(img).__name__}')


def _check_array_dtype(dtype: np.dtype, role: str) -> None:
    """numpy arrays: bool, uint8, uint16 or floating point; anything else is ambiguous (an int32 array
    holding 0..255 would otherwise be read as 16-bit and come out dark) or lossy (complex)."""
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f'{role} array is complex ({dtype}); pass real values (e.g. arr.real or np.abs(arr))')
    if np.issubdtype(dtype, np.integer) and dtype not in (np.uint8, np.uint16):
        raise ValueError(f'{role} array has dtype {dtype}; integer images must be uint8 (0..255) or uint16 '
                         f'(0..65535): convert with arr.astype(np.uint8) for 8-bit values or '
                         f'arr.astype(np.uint16) for 16-bit values, or pass floats in [0, 1]')
    if not (dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f'{role} array has dtype {dtype}; pass uint8, uint16 or float values in [0, 1]')


def _is_float(dtype) -> bool:
    return (isinstance(dtype, torch.dtype) and dtype.is_floating_point) or \
        (isinstance(dtype, np.dtype) and np.issubdtype(dtype, np.floating))


def _dtype_name(dtype) -> str:
    return str(dtype).replace('torch.', '') if isinstance(dtype, torch.dtype) else np.dtype(dtype).name


def _normalise(t: torch.Tensor, dtype, role: str, rng: Range) -> torch.Tensor:
    if t.numel() == 0 or t.shape[-1] == 0 or t.shape[-2] == 0:
        raise ValueError(f'{role} image is empty (shape {tuple(t.shape)})')
    c = t.shape[1]
    if c == 4:
        t = t[:, :3]  # RGBA: alpha dropped
    elif c not in (1, 3):
        raise ValueError(f'{role} image has {c} channels; expected 1 (grey) or 3 (RGB) '
                         '(arrays are HxWxC, tensors CxHxW)')
    if t.dtype == torch.bool:
        t = t.float()
    elif _is_float(dtype):
        t = t.float()
        if not torch.isfinite(t).all():
            raise ValueError(f'{role} image contains NaN or inf values; clean the input first')
        lo, hi = t.min().item(), t.max().item()
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f'float {role} image must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; '
                             'divide by 255 (8-bit) or 65535 (16-bit), or pass an integer array')
        t = t.clamp(0, 1)
    elif t.dtype == torch.uint8:
        t = t.float().div_(255.0)  # in place: one full-size float copy, not two
    else:  # 16-bit (or wider) integers
        t = t.to(torch.int64)
        if t.min().item() < 0:
            raise ValueError(f'{role} image has negative integer values; expected unsigned data')
        hi = t.max().item()
        if hi > 65535:
            raise ValueError(f'{role} image has integer values above 65535; rescale to 16 bits first')
        if rng == 'full' and 0 < hi <= 255:
            warnings.warn(f'{role} image is 16-bit data ({_dtype_name(dtype)}) whose values are all <= 255: read '
                          'as 16-bit it is nearly black (divided by 65535); for 8-bit values pass uint8 data '
                          '(arr.astype(np.uint8), tensor.to(torch.uint8), PIL mode "L"/"RGB") or a range such as '
                          'vis_range=(0, 255)', UserWarning, stacklevel=5)
        t = _rescale(t.float(), rng, role)
    return t


# --------------------------------------------------------------------------------------------
# output conversion
# --------------------------------------------------------------------------------------------

def _from_tensor(t: torch.Tensor, meta: _Meta):
    """``1 x C x H x W`` (or ``B x ..``) float [0, 1] -> the kind / layout described by ``meta``."""
    if meta.kind == 'tensor':
        out = t.to(meta.device) if meta.device is not None else t
        if meta.layout == 'HW':
            return out[0, 0] if out.shape[1] == 1 else out[0]
        if meta.layout == 'CHW':
            return out[0]
        return out
    u8 = lambda x: (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)  # noqa: E731
    if meta.kind in ('pil', 'path'):
        arr = u8(t[0]).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr, mode='L' if arr.shape[-1] == 1 else 'RGB')
    # numpy: keep the visible dtype family
    if np.issubdtype(meta.dtype, np.floating):
        arr = t.float().cpu().numpy().astype(meta.dtype if meta.dtype != np.float16 else np.float32)
    elif meta.dtype == np.uint16:
        arr = (t * 65535.0).round().clamp(0, 65535).to(torch.int32).cpu().numpy().astype(np.uint16)
    else:
        arr = u8(t).cpu().numpy()
    arr = arr.transpose(0, 2, 3, 1)
    if meta.layout == 'HW':
        return arr[0, ..., 0]
    if meta.layout == 'HWC':
        return arr[0]
    return arr


# --------------------------------------------------------------------------------------------
# running the model
# --------------------------------------------------------------------------------------------

def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = 'reflect' if (ph < h and pw < w) else 'replicate'
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def inference_dtype(device: Union[str, torch.device] = 'cpu', amp: Optional[bool] = None,
                    amp_dtype: Optional[torch.dtype] = None) -> torch.dtype:
    """The compute dtype :func:`fuse` uses on ``device`` for these ``amp`` / ``amp_dtype``
    arguments: ``torch.float32`` (no autocast), or the autocast dtype.

    ``amp=None`` (default): autocast on CUDA; on the CPU only where it has native bf16 matrix
    units (:func:`~mtvif_zoo.models.layers._fast.cpu_has_bf16_units`; decided from the hardware,
    not the model; the environment variable ``MTVIF_CPU_BF16=0`` / ``1`` overrides the detection);
    fp32 elsewhere. ``amp=True``: autocast everywhere; ``amp=False``: fp32.
    The autocast dtype is ``amp_dtype``, else bf16 (CUDA without bf16 support: fp16).
    """
    device = torch.device(device)
    if amp is None:
        if device.type == 'cuda':
            enabled = True
        elif device.type == 'cpu':
            from .models.layers._fast import cpu_has_bf16_units
            env = os.environ.get('MTVIF_CPU_BF16', '').strip()
            if env not in ('', '0', '1'):
                raise ValueError(f'MTVIF_CPU_BF16 must be 0 (fp32 by default on the CPU) or 1 (bf16), got {env!r}')
            enabled = cpu_has_bf16_units() if env == '' else env == '1'
        else:
            enabled = False
    else:
        enabled = bool(amp)
    if not enabled:
        return torch.float32
    if amp_dtype is not None:
        return amp_dtype
    return torch.bfloat16 if (device.type != 'cuda' or torch.cuda.is_bf16_supported()) else torch.float16


def _autocast(device: torch.device, amp: Optional[bool], amp_dtype: Optional[torch.dtype]):
    dtype = inference_dtype(device, amp, amp_dtype)
    if dtype == torch.float32:  # also switches an outer autocast off: amp=False means fp32
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


_ALLOCATOR_TUNED = False


def tune_cpu_allocator(threshold: int = 1 << 30) -> bool:
    """Let glibc keep freed large CPU buffers for reuse (process-wide; opt-in; Linux / glibc only).

    glibc serves every allocation above its mmap threshold (at most 32 MiB) with fresh pages from
    the kernel and returns them on ``free``, so each large activation (a 96-channel 480x640 fp32
    map is 113 MiB) page-faults in zeroed memory on every call: on the 2-core VM this was measured
    on that is ~40 % of ``fuse()``'s CPU time. This sets ``M_MMAP_THRESHOLD`` and
    ``M_TRIM_THRESHOLD`` to ``threshold`` (1 GiB), so such buffers come from the heap and are
    reused by the next call (the same effect as ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` in the environment, or an allocator such as jemalloc). The cost: the
    process keeps its peak heap instead of returning it to the system between calls. ``mtvif
    bench`` applies it unless ``--no-tune-allocator``. Returns whether glibc accepted it.
    """
    global _ALLOCATOR_TUNED
    import ctypes
    import ctypes.util
    import sys
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    value = int(min(threshold, 2 ** 31 - 1))
    ok = bool(mallopt(m_mmap_threshold, value)) and bool(mallopt(m_trim_threshold, value))
    _ALLOCATOR_TUNED = _ALLOCATOR_TUNED or ok
    return ok


def _fusion_forward(model, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """The fused image of an eval-mode model (segmentation classifier not run)."""
    return model.forward_head(model.forward_features(vis, ir), with_seg=False)[0]


_COMPILED = None


def _compiled_forward(model):
    """``torch.compile`` of :func:`_fusion_forward` (one compiled function for all models; dynamo
    guards on the model, so each model / size compiles once and is then reused)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(_fusion_forward, dynamic=False)
    return lambda vis, ir: _COMPILED(model, vis, ir)


def _prefers_channels_last(x: torch.Tensor) -> bool:
    """channels_last (NHWC) for every model on CPU and CUDA: oneDNN / cuDNN convolutions run
    without layout reorders, and the token views of the Swin / HIA-F blocks become free; the plain
    path (``mtvif_zoo.models.layers._fast.plain_path()``) keeps NCHW."""
    from .models.layers._fast import _ENABLED
    return _ENABLED and x.dim() == 4 and x.device.type in ('cpu', 'cuda')


def _run(model, vis: torch.Tensor, ir: torch.Tensor, compiled=None) -> torch.Tensor:
    m = model.pad_multiple
    h, w = vis.shape[-2:]
    vis, ir = _pad(vis, m), _pad(ir, m)
    if _prefers_channels_last(vis):
        vis = vis.contiguous(memory_format=torch.channels_last)
        ir = ir.contiguous(memory_format=torch.channels_last)
    out = (compiled or partial(_fusion_forward, model))(vis, ir)
    return out[..., :h, :w].float()


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool, device) -> torch.Tensor:
    """1-D blending weights of one tile: at an interior edge the outer ``overlap // 4`` pixels get
    weight 0 (they see the tile border), the next ``overlap // 2`` ramp linearly to 1. Neighbouring
    tiles' ramps are complementary, so weights sum to 1 and a network whose receptive-field radius
    is at most ``overlap // 4`` gives the untiled result exactly."""
    w = torch.ones(n, device=device)
    margin = overlap // 4
    length = overlap - 2 * margin
    if length > 0:
        r = (torch.arange(length, device=device, dtype=torch.float32) + 0.5) / length
        if not at_start:
            w[:margin] = 0
            w[margin:margin + length] = r
        if not at_end:
            w[n - margin:] = 0
            w[n - margin - length:n - margin] = torch.minimum(w[n - margin - length:n - margin], r.flip(0))
    return w


def _tile_starts(size: int, tile: int, overlap: int) -> List[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((size - tile) / stride) + 1
    starts = [min(i * stride, size - tile) for i in range(n)]
    return sorted(set(starts))


def _run_tiled(model, vis: torch.Tensor, ir: torch.Tensor, tile: int, overlap: int,
               out_device: torch.device, compiled=None) -> torch.Tensor:
    """Fuse in overlapping tiles; tile outputs are blended with linear ramps over the overlaps."""
    b, _, h, w = vis.shape
    dev = next(model.parameters()).device
    acc = None
    wsum = torch.zeros(1, 1, h, w, device=out_device)
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, h - y0), min(tile, w - x0)
            v = vis[..., y0:y0 + th, x0:x0 + tw].to(dev, non_blocking=True)
            i = ir[..., y0:y0 + th, x0:x0 + tw].to(dev, non_blocking=True)
            out = _run(model, v, i, compiled).to(out_device)
            if acc is None:
                acc = torch.zeros(b, out.shape[1], h, w, device=out_device)
            wy = _ramp(th, overlap, y0 == 0, y0 + th >= h, out_device)
            wx = _ramp(tw, overlap, x0 == 0, x0 + tw >= w, out_device)
            wgt = (wy[:, None] * wx[None, :])[None, None]
            acc[..., y0:y0 + th, x0:x0 + tw] += out * wgt
            wsum[..., y0:y0 + th, x0:x0 + tw] += wgt
    return acc.div_(wsum)


def _resolve_model(model):
    if model is None:
        model = DEFAULT_MODEL
    if isinstance(model, str):
        from ._factory import create_model
        model = create_model(model, pretrained=True)
    if not hasattr(model, 'forward_features') or not hasattr(model, 'pad_multiple'):
        raise ValueError('model must be a mtvif_zoo model (mtvif_zoo.create_model(...)) or a model name, '
                         f'got {type(model).__name__}')
    if any(p.device.type == 'meta' for p in model.parameters()):
        raise ValueError('the model is on the meta device (no weights); materialise it first, e.g. '
                         'model.to_empty(device="cpu") and load weights, or create it with pretrained=True')
    return model


def _ir_to_grey(ir: torch.Tensor) -> torch.Tensor:
    """3-channel infrared -> 1 channel: channel 0 when the channels are copies, BT.601 luma otherwise."""
    if ir.shape[1] == 1:
        return ir
    return ir[:, :1] if bool((ir[:, :1] == ir[:, 1:]).all()) else rgb_to_gray(ir)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def check_fuse_args(batch_size, tile, overlap) -> None:
    """Validate :func:`fuse`'s ``batch_size`` (>= 1), ``tile`` (``None`` or an int >= 1) and
    ``overlap`` (an int, ``0 <= overlap < tile / 2``) before anything is loaded or run: a negative
    overlap gave black columns / NaN and ``batch_size=0`` a deep error."""
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f'batch_size must be an integer >= 1, got {batch_size!r}')
    if not _is_int(overlap) or overlap < 0:
        raise ValueError(f'overlap must be an integer >= 0 (pixels), got {overlap!r}')
    if tile is None:
        return
    if not _is_int(tile) or tile < 1:
        raise ValueError(f'tile must be None or an integer >= 1 (pixels), got {tile!r}')
    if 2 * overlap >= tile:
        raise ValueError(f'overlap must be less than half the tile (0 <= overlap < tile / 2), got tile={tile}, '
                         f'overlap={overlap}; use a larger tile or overlap <= {max(0, (tile - 1) // 2)}')


#: mean absolute difference between colour channels (on [0, 1]) above which an image counts as colour
_COLOUR_THRESHOLD = 2 / 255


def _channel_spread(t: torch.Tensor) -> float:
    if t.shape[1] == 1:
        return 0.0
    t = t.float()
    return max(float((t[:, 0] - t[:, 1]).abs().mean()), float((t[:, 0] - t[:, 2]).abs().mean()))


def looks_swapped(vis: torch.Tensor, ir: torch.Tensor) -> bool:
    """True when the "infrared" input (``B x C x H x W`` in [0, 1]) has real colour and the "visible"
    one is grey: the usual sign of ``fuse(ir, vis)`` (which would give a grey fused image)."""
    return ir.shape[1] == 3 and _channel_spread(ir) > _COLOUR_THRESHOLD and _channel_spread(vis) <= _COLOUR_THRESHOLD


def _warn_if_swapped(vis: torch.Tensor, ir: torch.Tensor, tag: str = '') -> None:
    if looks_swapped(vis, ir):  # stacklevel: this function, fuse, torch's inference_mode wrapper, the caller
        warnings.warn(f'the infrared{tag} input is a colour image and the visible{tag} input is grey: the inputs '
                      'look swapped (the order is fuse(visible, infrared)); the colour of the infrared input is '
                      'discarded', UserWarning, stacklevel=4)


def _as_list(x) -> Tuple[list, bool]:
    if isinstance(x, (list, tuple)):
        return list(x), True
    return [x], False


@torch.inference_mode()
def fuse(vis, ir, model=None, *, batch_size: int = 8, tile: Optional[int] = None, overlap: int = 32,
         amp: Optional[bool] = None, amp_dtype: Optional[torch.dtype] = None,
         vis_range: Range = 'full', ir_range: Range = 'minmax', compile: bool = False):
    """Fuse visible and infrared images with a MultiTaskVIF (or baseline) model.

    Args:
        vis: visible image(s): path, PIL image, numpy array, tensor, or a list of them.
        ir: infrared image(s), same kind, count and size as ``vis``.
        model: a model from :func:`mtvif_zoo.create_model`, or a model name (loaded with
            ``pretrained=True``); ``None`` = :data:`DEFAULT_MODEL`.
        batch_size: how many same-sized pairs run through the model at once (>= 1).
        tile: fuse in overlapping ``tile x tile`` tiles (for very large images); ``None`` = whole image.
        overlap: tile overlap in pixels, blended with linear ramps (``0 <= overlap < tile / 2``).
        amp: autocast (:func:`inference_dtype`). ``None`` (default): on for CUDA (bf16 where
            supported, else fp16) and for CPUs with native bf16 matrix units (AMX / AVX512-BF16:
            bf16), off (fp32) on other CPUs. ``True``: on (bf16 on CPU); ``False``: fp32.
        amp_dtype: autocast dtype override.
        vis_range, ir_range: how 16-bit inputs are rescaled (``'full'``, ``'minmax'``, or ``(low, high)``).
        compile: run the model through ``torch.compile`` (compiled once per model and input size,
            then reused; the first call pays the compilation).

    Returns:
        The fused image(s), in the kind and layout of ``vis`` (see the module docstring).
    """
    for name, rng in (('vis_range', vis_range), ('ir_range', ir_range)):
        if not (rng in ('full', 'minmax') or (isinstance(rng, (tuple, list)) and len(rng) == 2)):
            raise ValueError(f"{name} must be 'minmax', 'full' or a (low, high) pair, got {rng!r}")
    check_fuse_args(batch_size, tile, overlap)
    model = _resolve_model(model)
    vis_list, vis_is_list = _as_list(vis)
    ir_list, ir_is_list = _as_list(ir)
    if vis_is_list != ir_is_list or len(vis_list) != len(ir_list):
        raise ValueError(f'vis and ir must both be single images or lists of equal length, got '
                         f'{len(vis_list) if vis_is_list else "one"} visible and '
                         f'{len(ir_list) if ir_is_list else "one"} infrared')
    if not vis_list:
        raise ValueError('no images given: vis and ir are empty lists')
    if tile is not None and tile < model.pad_multiple:
        raise ValueError(f'tile={tile} is smaller than this model\'s pad multiple ({model.pad_multiple}); use '
                         f'tile >= {model.pad_multiple} (with overlap < tile / 2)')

    pairs = []
    for n, (v, i) in enumerate(zip(vis_list, ir_list)):
        tag = f' #{n}' if vis_is_list else ''
        vt, vmeta = to_tensor_image(v, f'visible{tag}', vis_range)
        it, _ = to_tensor_image(i, f'infrared{tag}', ir_range)
        if vt.shape[0] != it.shape[0]:
            raise ValueError(f'visible{tag} has batch size {vt.shape[0]} but infrared{tag} has {it.shape[0]}')
        if vt.shape[-2:] != it.shape[-2:]:
            raise ValueError(f'visible{tag} is {vt.shape[-2]}x{vt.shape[-1]} (HxW) but infrared{tag} is '
                             f'{it.shape[-2]}x{it.shape[-1]}; register/resize the pair to the same size first')
        _warn_if_swapped(vt, it, tag)
        pairs.append((vt, _ir_to_grey(it), vmeta))

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        # every row of every item, grouped by (C, H, W) so same-sized images share a batch
        groups = {}
        for k, (vt, _, _) in enumerate(pairs):
            groups.setdefault(tuple(vt.shape[1:]), []).extend((k, r) for r in range(vt.shape[0]))
        rows_out = {}
        for rows in groups.values():
            for s in range(0, len(rows), batch_size):
                chunk = rows[s:s + batch_size]
                if len(chunk) == 1:  # no copy of a single (possibly huge) image
                    (k, r), = chunk
                    vt, it = pairs[k][0][r:r + 1], pairs[k][1][r:r + 1]
                else:
                    vt = torch.cat([pairs[k][0][r:r + 1] for k, r in chunk])
                    it = torch.cat([pairs[k][1][r:r + 1] for k, r in chunk])
                fused = _fuse_tensors(model, vt, it, device, tile, overlap, amp, amp_dtype,
                                      _compiled_forward(model) if compile else None)
                for j, key in enumerate(chunk):
                    rows_out[key] = fused[j:j + 1]
    finally:
        model.train(was_training)
    results = [_from_tensor(torch.cat([rows_out[(k, r)] for r in range(vt.shape[0])]), meta)
               for k, (vt, _, meta) in enumerate(pairs)]
    return results if vis_is_list else results[0]


def _fuse_tensors(model, vis: torch.Tensor, ir: torch.Tensor, device: torch.device, tile, overlap,
                  amp, amp_dtype, compiled=None) -> torch.Tensor:
    """Visible ``B x {1,3} x H x W`` + grey infrared ``B x 1 x H x W`` (CPU, [0, 1]) -> fused, on CPU."""
    vis_grey = vis.shape[1] == 1
    if model.in_chans == 1:
        ycbcr = rgb_to_ycbcr(vis) if not vis_grey else None
        v_in = vis if vis_grey else ycbcr[:, :1]
        i_in = ir
    else:
        v_in = vis.expand(-1, 3, -1, -1) if vis_grey else vis
        i_in = ir.expand(-1, 3, -1, -1)
    pin = device.type == 'cuda'
    if pin:
        v_in, i_in = v_in.contiguous().pin_memory(), i_in.contiguous().pin_memory()
    with _autocast(device, amp, amp_dtype):
        if tile is not None:
            out = _run_tiled(model, v_in, i_in, tile, overlap, torch.device('cpu'), compiled)
        else:
            out = _run(model, v_in.to(device, non_blocking=pin), i_in.to(device, non_blocking=pin), compiled).cpu()
    out = out.float().clamp_(0, 1)
    if model.in_chans == 1:
        if vis_grey:
            return out
        return ycbcr_to_rgb(torch.cat((out, ycbcr[:, 1:]), dim=1)).clamp(0, 1)
    return rgb_to_gray(out) if vis_grey else out


@torch.inference_mode()
def segment(vis, ir, model=None, *, amp: Optional[bool] = None, amp_dtype: Optional[torch.dtype] = None,
            vis_range: Range = 'full', ir_range: Range = 'minmax'):
    """Per-pixel class ids from the model's segmentation branch (the training-time head).

    Same inputs as :func:`fuse` (one pair or lists). Returns ``H x W`` uint8 numpy class maps, or
    ``H x W`` / ``B x H x W`` int64 tensors when the visible input is a tensor. Needs a model with
    its segmentation classifier (not a ``fusion_only()`` copy or a ``cnn`` baseline).
    """
    model = _resolve_model(model)
    if not model.has_segmentation:
        raise ValueError('this model has no segmentation classifier (a cnn baseline or fusion-only weights); '
                         'load the full multi-task weights to segment')
    vis_list, is_list = _as_list(vis)
    ir_list, _ = _as_list(ir)
    if len(vis_list) != len(ir_list):
        raise ValueError(f'got {len(vis_list)} visible and {len(ir_list)} infrared images')
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for v, i in zip(vis_list, ir_list):
            vt, meta = to_tensor_image(v, 'visible', vis_range)
            it = to_tensor_image(i, 'infrared', ir_range)[0]
            _warn_if_swapped(vt, it)
            it = _ir_to_grey(it)
            if vt.shape[-2:] != it.shape[-2:]:
                raise ValueError(f'visible is {vt.shape[-2]}x{vt.shape[-1]} but infrared is '
                                 f'{it.shape[-2]}x{it.shape[-1]}; register/resize the pair first')
            if model.in_chans == 1:
                v_in = vt if vt.shape[1] == 1 else rgb_to_ycbcr(vt)[:, :1]
                i_in = it
            else:
                v_in, i_in = vt.expand(-1, 3, -1, -1), it.expand(-1, 3, -1, -1)
            h, w = vt.shape[-2:]
            m = model.pad_multiple
            with _autocast(device, amp, amp_dtype):
                logits = model.segment(_pad(v_in, m).to(device), _pad(i_in, m).to(device))
            cls = logits[..., :h, :w].argmax(1).cpu()
            if meta.kind == 'tensor':
                out.append(cls.to(meta.device) if meta.layout == 'BCHW' else cls[0].to(meta.device))
            else:
                out.append(cls[0].numpy().astype(np.uint8) if cls.shape[0] == 1 else cls.numpy().astype(np.uint8))
    finally:
        model.train(was_training)
    return out if is_list else out[0]
