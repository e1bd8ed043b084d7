"""Fast paths shared by the backbones and heads, and the switch back to the plain path.

Two levels, both on by default, both off under :func:`plain_path` or ``set_fast_path(model, False)``:

1. **fast formulation** (:func:`fast_enabled`; any grad mode, training included): feature maps in
   ``channels_last`` (oneDNN / cuDNN convolutions without layout reorders, token views of
   ``B x C x H x W`` maps without copies) and autograd-friendly algebraic rewrites of a few blocks
   (HIA-F's keys / values via a Gram matrix, SeAFusion's Sobel pair as one grouped conv). Same
   function as the plain path up to fp32 rounding (``tests/test_speed_parity.py``: <= 1e-5).
2. **inference kernels** (:func:`use_fast`; eval mode, CPU fp32 -- or CPU bf16 autocast where
   oneDNN has bf16 kernels, see below --, autograd off): a convolution and
   the ReLU / LeakyReLU / residual add after it as *one* oneDNN primitive with a post-op
   (``torch.ops.mkldnn._convolution_pointwise``, the kernels ``torch.compile`` uses for the same
   fusions on CPU), Swin's linear layers with fused bias / GELU / residual add. The conv post-op
   fusions are bitwise equal to the separate ops of level 1 (oneDNN applies the activation to the
   accumulator), so on CPU ``model(x)`` with and without autograd gives the same fused image (up to
   float32 rounding where oneDNN picks another convolution algorithm for the autograd path).

Level 1 is off while a ``TorchDispatchMode`` such as ``FlopCounterMode`` is active (MACs are
always counted on the plain path); level 2 also needs oneDNN enabled
(``torch.backends.mkldnn``) and no ``torch.compile`` trace.

**Export switch** (like timm's ``fused_attn``): while a graph is captured for deployment --
``torch.export`` / ``torch.onnx.export(dynamo=True)`` (``torch.compiler.is_exporting()``),
``torch.jit.trace`` / ``torch.jit.script``, or inside :func:`export_mode` (which
:mod:`mtvif_zoo.deploy` enters) -- :func:`exporting` is true: level 2 is off (no private
``torch.ops.mkldnn`` op reaches the graph) and Swin's window attention takes its plain path (the
cached window layouts are per concrete size, a graph with dynamic height / width cannot hold them).

**bf16 on the CPU** (``fuse(amp=True)``, and its default on CPUs with native bf16 matrix units,
:func:`cpu_has_bf16_units`): the model runs under ``torch.autocast('cpu', torch.bfloat16)``. Where
oneDNN has bf16 kernels (:func:`bf16_kernels_available`: AVX512-BW/VL/DQ, AMX or AVX-NE-CONVERT)
level 2 runs in bf16 too: activations are bf16 from layer to layer (the kernels take and give
bf16; no fp32 copy in between), weights and biases are converted once per module to bf16 (4-D
conv weights channels_last) and cached until the parameter changes (:func:`kernel_weight`), and
the post-op fusions are the same. What needs fp32 stays fp32 in both bf16 paths: HIA-F's
``k^T v`` Gram sums and its softmax, the softmax statistics inside SDPA (its CPU kernel
accumulates in fp32), and the output layer (:func:`output_conv`: the last conv, its sigmoid /
tanh and the conversion to the output dtype). Elsewhere (e.g. AVX2-only CPUs) bf16 runs level 1
under autocast through PyTorch's reference bf16 kernels: the same numerics, several times slower
than fp32, which is why ``fuse()`` does not pick it there by default.
"""
import contextlib
import functools
import weakref
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['fast_enabled', 'use_fast', 'exporting', 'export_mode', 'to_channels_last', 'set_fast_path', 'plain_path',
           'fast_path_available',
           'conv_act', 'conv_add', 'linear_act', 'fconv', 'pointwise', 'conv_bn_weights', 'cpu_has_bf16_units',
           'bf16_kernels_available', 'kernel_dtype', 'kernel_weight', 'output_conv', 'linear_add', 'layer_norm',
           'packed', 'conv_bn_kernel_weights', 'emulate_bf16_kernels']

_ENABLED = True
_EXPORT_MODE = 0  # depth of nested export_mode() blocks


def fast_path_available() -> bool:
    """The global switch on and oneDNN present and enabled (level 2 possible on CPU)."""
    return _ENABLED and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def _dispatch_mode_active() -> bool:
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
        return _get_current_dispatch_mode() is not None
    except ImportError:  # pragma: no cover
        return False


def _compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover
        return False


def exporting() -> bool:
    """A graph is being captured for export or tracing (see the module docstring): the private
    oneDNN kernels and the per-size caches are off."""
    if _EXPORT_MODE:
        return True
    is_exporting = getattr(torch.compiler, 'is_exporting', None)
    if is_exporting is not None and is_exporting():
        return True
    return torch.jit.is_tracing() or torch.jit.is_scripting()


@contextlib.contextmanager
def export_mode() -> Iterator[None]:
    """Within the block, :func:`exporting` is true: the models run their exportable path (no
    ``torch.ops.mkldnn`` calls, Swin's plain window attention). Same function as eager up to fp32
    rounding (``tests/models/test_export.py``)."""
    global _EXPORT_MODE
    _EXPORT_MODE += 1
    try:
        yield
    finally:
        _EXPORT_MODE -= 1


def fast_enabled(owner: Optional[nn.Module] = None) -> bool:
    """Level 1, the fast formulation: global switch on, ``owner.fast_path`` true, no dispatch mode
    (``FlopCounterMode``, fake tensors) outside a ``torch.compile`` trace."""
    if not _ENABLED or (owner is not None and not getattr(owner, 'fast_path', True)):
        return False
    return _compiling() or not _dispatch_mode_active()


_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')


def _cpu_flags() -> frozenset:
    """The CPU feature flags the kernel reports (Linux ``/proc/cpuinfo``: x86 ``flags``, ARM
    ``Features``); empty where there is no such file."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() in ('flags', 'Features'):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=None)
def bf16_kernels_available() -> bool:
    """oneDNN can run bf16 convolutions / matmuls on this CPU (PyTorch's own check: AVX512-BW/VL/DQ,
    AMX or AVX-NE-CONVERT). Without it ``torch.ops.mkldnn`` rejects bf16 and ATen runs bf16
    convolutions through slow reference kernels."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - older builds
        return False


@functools.lru_cache(maxsize=None)
def cpu_has_bf16_units() -> bool:
    """Whether this CPU has native bf16 matrix instructions -- x86 AMX-BF16 or AVX512-BF16 in the
    kernel's CPU flags -- *and* oneDNN runs bf16 kernels on it (:func:`bf16_kernels_available`).
    ``fuse()`` runs bf16 by default on the CPU only then: there a bf16 conv runs several times
    faster than fp32; without those units (AVX2-only x86, e.g. AMD Zen 1-3; AVX-512 without
    AVX512-BF16) bf16 is emulated and slower than fp32. Decided from the hardware, never from the
    model. Other platforms (no ``/proc/cpuinfo``): False."""
    return _bf16_flags_present() and bf16_kernels_available()


def _bf16_flags_present() -> bool:
    return any(f in _cpu_flags() for f in _BF16_FLAGS)


_EMULATE_BF16 = False


@contextlib.contextmanager
def emulate_bf16_kernels() -> Iterator[None]:
    """Within the block, on a CPU without oneDNN bf16 kernels, the level-2 bf16 path runs with its
    arithmetic emulated on the fp32 kernels: every kernel's operands (activations, weights, biases)
    rounded to bf16, fp32 accumulation and post-ops, the output rounded to bf16 -- what oneDNN's
    bf16 kernels compute, up to summation order. A measurement and test tool (``tools/bf16_quality.py``,
    ``tests/test_bf16.py``): it runs the bf16 path's code and numerics at about fp32 speed where the
    real bf16 path would take PyTorch's slow reference kernels. No effect where the CPU has the
    kernels (the real ones run) or outside CPU bf16 autocast."""
    global _EMULATE_BF16
    old, _EMULATE_BF16 = _EMULATE_BF16, True
    try:
        yield
    finally:
        _EMULATE_BF16 = old


def _emulating() -> bool:
    """The bf16 kernels are being emulated now (see :func:`emulate_bf16_kernels`)."""
    return (_EMULATE_BF16 and torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16
            and not bf16_kernels_available())


def kernel_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype the level-2 kernels take and give for ``x``: fp32 for an fp32 tensor without CPU
    autocast, bf16 under CPU bf16 autocast where oneDNN has bf16 kernels (or they are emulated,
    :func:`emulate_bf16_kernels`), otherwise None (no kernels)."""
    if not torch.is_autocast_enabled('cpu'):
        return torch.float32 if x.dtype == torch.float32 else None
    if (torch.get_autocast_dtype('cpu') == torch.bfloat16 and x.dtype in (torch.float32, torch.bfloat16)
            and (bf16_kernels_available() or _EMULATE_BF16)):
        return torch.bfloat16
    return None


def use_fast(x: torch.Tensor, owner: Optional[nn.Module] = None) -> bool:
    """Level 2, the inference kernels, may run on ``x`` for module ``owner`` (see module docstring)."""
    if _compiling() or exporting():  # inductor does its own fusions; export wants public ops only
        return False
    return (x.device.type == 'cpu' and not torch.is_grad_enabled()
            and not (owner is not None and owner.training) and fast_enabled(owner)
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and kernel_dtype(x) is not None and not _compiling())


#: per module: {key: (stamp of the source tensors, converted tensor)}; weak, so a deleted model's
#: converted weights go with it, and a ``deepcopy`` of a module starts without them
_PACKED: 'weakref.WeakKeyDictionary[nn.Module, dict]' = weakref.WeakKeyDictionary()


def _stamp(t: Optional[torch.Tensor]):
    if t is None:
        return None
    try:
        version = t._version
    except RuntimeError:  # an inference tensor has no version counter: never cache it
        return False
    return t.data_ptr(), version, t.dtype, t.device, tuple(t.shape)


def packed(module: nn.Module, key: str, sources: Sequence[Optional[torch.Tensor]],
           make: Callable[[], Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
    """``make()`` computed once per module and ``key`` and reused while every tensor in ``sources``
    is unchanged (same storage, same in-place version: ``load_state_dict``, an optimizer step or
    ``.to()`` all invalidate it). Built outside ``inference_mode`` so that it is a normal tensor."""
    stamp = tuple(_stamp(t) for t in sources)
    if False in stamp:
        return make()
    cache = _PACKED.setdefault(module, {})
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    with torch.inference_mode(False), torch.no_grad():
        value = make()
    cache[key] = (stamp, value)
    return value


def kernel_weight(module: nn.Module, x: torch.Tensor, weight: Optional[torch.Tensor] = None,
                  bias: Optional[torch.Tensor] = None,
                  key: str = 'weight') -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(weight, bias)`` of ``module`` (or the given ones, e.g. a folded BatchNorm, cached under
    ``key``) in the dtype the level-2 kernels run ``x`` in: as they are for fp32, converted once
    and cached for bf16 (4-D conv weights in channels_last, oneDNN's preferred layout)."""
    w = module.weight if weight is None else weight
    b = module.bias if weight is None else bias
    dt = kernel_dtype(x)
    emulate = dt == torch.bfloat16 and _emulating()
    if dt is None or (dt == w.dtype and not emulate):
        return w, b

    def convert(t):
        if t is None:
            return None
        t = t.detach().to(dt)
        if emulate:  # bf16 values in fp32 tensors for the fp32 kernels
            t = t.float()
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.contiguous()
    tag = f'{key}:{dt}' + (':emulated' if emulate else '')
    return (packed(module, tag, (w,), lambda: convert(w)),
            packed(module, f'{tag}.bias', (w, b), lambda: convert(b)))


def _kx(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the kernels' dtype (a no-op for fp32 and for bf16 activations under bf16)."""
    dt = kernel_dtype(x)
    if dt == torch.bfloat16 and _emulating():  # bf16 values, fp32 dtype (emulated bf16 kernels)
        return x.float() if x.dtype == torch.bfloat16 else x.to(torch.bfloat16).float()
    return x if dt is None or x.dtype == dt else x.to(dt)


def _ky(y: torch.Tensor) -> torch.Tensor:
    """A kernel's output: rounded to bf16 when bf16 kernels are emulated, otherwise as it is."""
    return y.to(torch.bfloat16) if y.dtype == torch.float32 and _emulating() else y


def to_channels_last(x: torch.Tensor, owner: Optional[nn.Module] = None) -> torch.Tensor:
    """``x`` in channels_last memory (a no-op if it already is) under the fast formulation."""
    if x.dim() == 4 and x.device.type in ('cpu', 'cuda') and fast_enabled(owner):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def set_fast_path(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn the inference fast paths of every submodule on (default) or off (plain path)."""
    for m in module.modules():
        if hasattr(type(m), 'fast_path'):
            m.fast_path = bool(enabled)
    return module


@contextlib.contextmanager
def plain_path() -> Iterator[None]:
    """Within the block, every model runs its plain path (all fast paths of this module off)."""
    global _ENABLED
    old, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = old


def _pair(v) -> list:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def _conv_args(conv: nn.Conv2d, x: torch.Tensor):
    if conv.padding_mode != 'zeros':
        ph, pw = _pair(conv.padding)
        x = F.pad(x, (pw, pw, ph, ph), mode=conv.padding_mode)
        padding = [0, 0]
    else:
        padding = _pair(conv.padding)
    return x, padding, _pair(conv.stride), _pair(conv.dilation)


def _onednn_runs(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether PyTorch itself runs this fp32 CPU conv through oneDNN (ATen's ``use_mkldnn``
    heuristic: single-threaded 1x1 convs and tiny inputs go to its native kernels; bf16 always goes
    to oneDNN where it has bf16 kernels). The fused kernels are used only then, so that they stay
    bitwise equal to the module's own conv."""
    if x.dtype == torch.bfloat16:
        return bf16_kernels_available()
    if _emulating():  # emulated bf16 kernels: always oneDNN (fp32), like the real bf16 path
        return True
    kh, kw = conv.weight.shape[-2:]
    one_by_one = kh == 1 and kw == 1
    strided = any(s != 1 for s in _pair(conv.stride))
    dilated = any(d != 1 for d in _pair(conv.dilation))
    return ((strided or dilated or x.shape[0] >= 16 or not one_by_one or torch.get_num_threads() > 1)
            and (conv.groups > 1 or (kh > 3 and kw > 3) or x.shape[0] > 1 or x.numel() > 20480))


_ACTS = {'relu': lambda y, s: F.relu_(y), 'leaky_relu': lambda y, s: F.leaky_relu_(y, s[0]),
         'sigmoid': lambda y, s: torch.sigmoid_(y), 'tanh': lambda y, s: torch.tanh_(y),
         'gelu': lambda y, s: F.gelu(y), 'none': lambda y, s: y}


def conv_act(conv: nn.Conv2d, x: torch.Tensor, act: str = 'none', scalars: Sequence[float] = (),
             weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
             key: str = 'weight') -> torch.Tensor:
    """``act(conv(x))`` as one oneDNN primitive (level 2: call it after :func:`use_fast`). ``act``:
    ``'none'``, ``'relu'``, ``'leaky_relu'`` (``scalars=[slope]``) -- bitwise equal to the separate
    ops -- or ``'sigmoid'``, ``'tanh'``, ``'gelu'`` (oneDNN's own approximations: within a few ulp,
    not bitwise). ``weight`` / ``bias`` override the conv's (cached per module as ``key`` in bf16).
    Under bf16 kernels (:func:`kernel_dtype`) input, weights and output are bf16."""
    w, b = kernel_weight(conv, x, weight, bias, key)
    x, padding, stride, dilation = _conv_args(conv, _kx(x))
    if not _onednn_runs(conv, x):  # PyTorch's native conv, then the activation in place
        return _ACTS[act](F.conv2d(x, w, b, stride, padding, dilation, conv.groups), scalars)
    return _ky(torch.ops.mkldnn._convolution_pointwise(
        x, w, b, padding, stride, dilation, conv.groups, act, list(scalars), 'none' if act == 'gelu' else ''))


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``conv(x) + other`` (then ReLU when ``relu``) as one oneDNN primitive; new tensor."""
    w, b = kernel_weight(conv, x)
    x, other = _kx(x), _kx(other)
    x, padding, stride, dilation = _conv_args(conv, x)
    if other.dtype != x.dtype or other.shape[1] != conv.out_channels:
        raise ValueError('conv_add: other must match the conv output')
    if not _onednn_runs(conv, x):
        y = F.conv2d(x, w, b, stride, padding, dilation, conv.groups).add_(other)
        return F.relu_(y) if relu else y
    return _ky(torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, w, b, padding, stride, dilation, conv.groups, 'add', None,
        'relu' if relu else None, [], None))


def linear_act(linear: nn.Linear, x: torch.Tensor, act: str = 'none') -> torch.Tensor:
    """``act(linear(x))`` (``act``: ``'none'``, ``'relu'``, ``'gelu'``) as one oneDNN matmul; ``x`` 2-D or more."""
    w, b = kernel_weight(linear, x)
    x = _kx(x)
    shape = x.shape
    y = _ky(torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), w, b, act, [],
                                               'none' if act == 'gelu' else ''))
    return y.view(*shape[:-1], linear.out_features)


def linear_add(linear: nn.Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual + linear(x)`` as one oneDNN matmul with a fused add (2-D; level 2)."""
    w, b = kernel_weight(linear, x)
    return _ky(torch.ops.mkldnn._linear_pointwise.binary(_kx(x), _kx(residual).contiguous(), w, b, 'add'))


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` in ``x``'s dtype: a bf16 map stays bf16 (statistics in fp32 inside the CPU
    kernel, fp32 affine parameters), so bf16 kernels before and after it need no conversion."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


_OUT_ACTS = {'none': lambda y: y, 'sigmoid': torch.sigmoid, 'tanh': torch.tanh}


_AUTOCAST_DEVICES = ('cpu', 'cuda', 'xpu', 'mps', 'hpu')


def output_conv(conv: nn.Conv2d, x: torch.Tensor, act='none') -> Optional[torch.Tensor]:
    """The image-producing last layer ``act(conv(x))`` (``act``: ``'none'``, ``'sigmoid'``,
    ``'tanh'`` or a callable, e.g. a PReLU module) under autocast: in fp32 (input converted, fp32 weights,
    autocast off), so that the
    image is not rounded to bf16 / fp16 (bf16 has 8 bits of mantissa: ~1/255 steps near 1). A
    few-channel conv: a negligible share of the model's work. Without autocast and on fp32 input
    it returns ``None`` -- the caller runs its own (bitwise unchanged) fp32 path."""
    dev = x.device.type
    if dev not in _AUTOCAST_DEVICES or (x.dtype == torch.float32 and not torch.is_autocast_enabled(dev)):
        return None  # e.g. 'meta' (MAC counting): no autocast there, the caller's plain path
    with torch.autocast(dev, enabled=False):
        return (_OUT_ACTS[act] if isinstance(act, str) else act)(conv(x.float()))


def image_layer(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for a layer that reads an input image (a backbone's stem conv, its ``first_conv``),
    in fp32 under autocast: input converted to fp32, autocast off inside, fp32 weights and kernels;
    the next layer converts its output to bf16 / fp16 as usual. Without autocast it is ``fn(x)``,
    the same bits as before.

    Why (issue 16, quality held): rounding the image itself to bf16 (8 bits of mantissa) moves a
    pixel near 1 by up to 0.5/255 before any layer ran, and the networks amplify that (the measured
    effect on the published weights: README "bf16 on the CPU", ``tools/bf16_quality.py``). A stem
    conv reads 1-3 channels: a negligible share of the work."""
    dev = x.device.type
    if dev not in _AUTOCAST_DEVICES or not torch.is_autocast_enabled(dev):
        return fn(x)
    with torch.autocast(dev, enabled=False):
        return fn(x.float())


_ACTS_OUT_OF_PLACE = {'relu': lambda y, s: F.relu(y), 'leaky_relu': lambda y, s: F.leaky_relu(y, s[0]),
                      'sigmoid': lambda y, s: torch.sigmoid(y), 'tanh': lambda y, s: torch.tanh(y),
                      'gelu': lambda y, s: F.gelu(y), 'none': lambda y, s: y}


def fconv(conv: nn.Conv2d, x: torch.Tensor, act: str = 'none', scalars: Sequence[float] = (), kernels: bool = False,
          weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
          key: str = 'weight') -> torch.Tensor:
    """``act(conv(x))`` in the fast formulation: the fused oneDNN primitive with ``kernels`` (level
    2), else the conv and the activation as separate autograd ops. ``act`` ``'relu'`` /
    ``'leaky_relu'`` / ``'none'``: the two give the same bits (``_onednn_runs`` decides the conv)."""
    if kernels:
        return conv_act(conv, x, act, scalars, weight=weight, bias=bias, key=key)
    if weight is None:
        y = conv(x)
    else:
        x, padding, stride, dilation = _conv_args(conv, x)
        y = F.conv2d(x, weight, bias, stride, padding, dilation, conv.groups)
    return _ACTS_OUT_OF_PLACE[act](y, scalars)


def pointwise(layer: nn.Module, x: torch.Tensor, act: str = 'none', residual: Optional[torch.Tensor] = None,
              kernels: bool = False) -> torch.Tensor:
    """A 1x1 conv (stride 1, no groups) or ``nn.Linear`` applied to a ``B x C x H x W`` map as one
    matrix product over its pixels: ``act(layer(x)) (+ residual)``. On channels_last maps the
    token matrices are views (no copies) and the result is channels_last. With ``kernels`` (level
    2) bias, activation and residual add are fused into one oneDNN matmul; without, the same
    arithmetic as separate autograd ops (``F.linear``): the two give the same bits."""
    if _compiling() and isinstance(layer, nn.Conv2d):
        # under torch.compile the conv itself (inductor's CPU linear lowering wants constant weights)
        y = _ACTS_OUT_OF_PLACE[act](layer(x), ())
        return y if residual is None else y + residual
    B, C, H, W = x.shape
    weight = layer.weight.reshape(layer.weight.shape[0], C)
    if kernels:
        weight, bias = kernel_weight(layer, x, weight, layer.bias, key='weight2d')
        x = _kx(x)
        residual = None if residual is None else _kx(residual)
    t = x.permute(0, 2, 3, 1).reshape(B * H * W, C)
    r = None if residual is None else residual.permute(0, 2, 3, 1).reshape(B * H * W, -1)
    if kernels:
        if r is not None and act == 'none':
            y = torch.ops.mkldnn._linear_pointwise.binary(t, r.contiguous(), weight, bias, 'add')
        else:
            y = torch.ops.mkldnn._linear_pointwise(t, weight, bias, act, [], 'none' if act == 'gelu' else '')
            if r is not None:
                y.add_(r)
        y = _ky(y)
    else:
        y = _ACTS_OUT_OF_PLACE[act](F.linear(t, weight, layer.bias), ())
        if r is not None:
            y = y + r
    return y.view(B, H, W, -1).permute(0, 3, 1, 2)


def conv_bn_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d):
    """An eval-mode BatchNorm folded into the conv before it: ``(w * s, (b - mean) * s + beta)``
    with ``s = gamma / sqrt(var + eps)`` (autograd-capable; rounding differs from conv-then-BN).

    Not ``torch.nn.utils.fusion.fuse_conv_bn_weights``: that returns new leaf Parameters, so an
    eval-mode forward with autograd on (fine-tuning with frozen BN statistics) would give the conv
    and BN no gradient (``tests/hub/test_library_equivalents.py``); its ``rsqrt`` also rounds
    differently from this fold, which the shipped reference images were made with."""
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * s.view(-1, 1, 1, 1)
    b = -bn.running_mean * s if conv.bias is None else (conv.bias - bn.running_mean) * s
    return w, b + bn.bias


def conv_bn_kernel_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor):
    """:func:`conv_bn_weights` for the level-2 kernels on ``x``: computed per call for fp32 (as
    before: same bits), folded, converted and cached once per module for bf16."""
    if kernel_dtype(x) in (None, torch.float32):
        return conv_bn_weights(conv, bn)
    sources = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    folded = lambda: conv_bn_weights(conv, bn)  # noqa: E731
    return kernel_weight(conv, x, packed(conv, 'bn_folded_w', sources, lambda: folded()[0]),
                         packed(conv, 'bn_folded_b', sources, lambda: folded()[1]), key='bn_folded')
