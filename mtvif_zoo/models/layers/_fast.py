"""Fast paths shared by the backbones and heads, and the switch back to the plain path.

Two levels, both on by default, both off under :func:`plain_path` or ``set_fast_path(model, False)``:

1. **fast formulation** (:func:`fast_enabled`; any grad mode, training included): feature maps in
   ``channels_last`` (oneDNN / cuDNN convolutions without layout reorders, token views of
   ``B x C x H x W`` maps without copies) and autograd-friendly algebraic rewrites of a few blocks
   (HIA-F's keys / values via a Gram matrix, SeAFusion's Sobel pair as one grouped conv). Same
   function as the plain path up to fp32 rounding (``tests/test_speed_parity.py``: <= 1e-5).
2. **inference kernels** (:func:`use_fast`; eval mode, CPU fp32, autograd off): a convolution and
   the ReLU / LeakyReLU / residual add after it as *one* oneDNN primitive with a post-op
   (``torch.ops.mkldnn._convolution_pointwise``, the kernels ``torch.compile`` uses for the same
   fusions on CPU), Swin's linear layers with fused bias / GELU / residual add. The conv post-op
   fusions are bitwise equal to the separate ops of level 1 (oneDNN applies the activation to the
   accumulator), so on CPU ``model(x)`` with and without autograd gives the same fused image.

Level 1 is off while a ``TorchDispatchMode`` such as ``FlopCounterMode`` is active (MACs are
always counted on the plain path); level 2 also needs oneDNN enabled
(``torch.backends.mkldnn``), no CPU autocast and no ``torch.compile`` trace.
"""
import contextlib
from typing import Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['fast_enabled', 'use_fast', 'to_channels_last', 'set_fast_path', 'plain_path', 'fast_path_available',
           'conv_act', 'conv_add', 'linear_act', 'fconv', 'pointwise', 'conv_bn_weights']

_ENABLED = True


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


def fast_enabled(owner: Optional[nn.Module] = None) -> bool:
    """Level 1, the fast formulation: global switch on, ``owner.fast_path`` true, no dispatch mode
    (``FlopCounterMode``, fake tensors) outside a ``torch.compile`` trace."""
    if not _ENABLED or (owner is not None and not getattr(owner, 'fast_path', True)):
        return False
    return _compiling() or not _dispatch_mode_active()


def use_fast(x: torch.Tensor, owner: Optional[nn.Module] = None) -> bool:
    """Level 2, the inference kernels, may run on ``x`` for module ``owner`` (see module docstring)."""
    if _compiling():  # inductor does its own fusions (and the checks below would break the graph)
        return False
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not (owner is not None and owner.training) and fast_enabled(owner)
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled('cpu') and not _compiling())


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
    heuristic: single-threaded 1x1 convs and tiny inputs go to its native kernels). The fused
    kernels are used only then, so that they stay bitwise equal to the module's own conv."""
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
             weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``act(conv(x))`` as one oneDNN primitive (level 2: call it after :func:`use_fast`). ``act``:
    ``'none'``, ``'relu'``, ``'leaky_relu'`` (``scalars=[slope]``) -- bitwise equal to the separate
    ops -- or ``'sigmoid'``, ``'tanh'``, ``'gelu'`` (oneDNN's own approximations: within a few ulp,
    not bitwise). ``weight`` / ``bias`` override the conv's."""
    x, padding, stride, dilation = _conv_args(conv, x)
    w = conv.weight if weight is None else weight
    b = conv.bias if weight is None else bias
    if not _onednn_runs(conv, x):  # PyTorch's native conv, then the activation in place
        return _ACTS[act](F.conv2d(x, w, b, stride, padding, dilation, conv.groups), scalars)
    return torch.ops.mkldnn._convolution_pointwise(
        x, w, b, padding, stride, dilation, conv.groups, act, list(scalars), 'none' if act == 'gelu' else '')


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``conv(x) + other`` (then ReLU when ``relu``) as one oneDNN primitive; new tensor."""
    x, padding, stride, dilation = _conv_args(conv, x)
    if other.dtype != x.dtype or other.shape[1] != conv.out_channels:
        raise ValueError('conv_add: other must match the conv output')
    if not _onednn_runs(conv, x):
        y = F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation, conv.groups).add_(other)
        return F.relu_(y) if relu else y
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, conv.weight, conv.bias, padding, stride, dilation, conv.groups, 'add', None,
        'relu' if relu else None, [], None)


def linear_act(linear: nn.Linear, x: torch.Tensor, act: str = 'none') -> torch.Tensor:
    """``act(linear(x))`` (``act``: ``'none'``, ``'relu'``, ``'gelu'``) as one oneDNN matmul; ``x`` 2-D or more."""
    shape = x.shape
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), linear.weight, linear.bias, act, [],
                                           'none' if act == 'gelu' else '')
    return y.view(*shape[:-1], linear.out_features)


_ACTS_OUT_OF_PLACE = {'relu': lambda y, s: F.relu(y), 'leaky_relu': lambda y, s: F.leaky_relu(y, s[0]),
                      'sigmoid': lambda y, s: torch.sigmoid(y), 'tanh': lambda y, s: torch.tanh(y),
                      'gelu': lambda y, s: F.gelu(y), 'none': lambda y, s: y}


def fconv(conv: nn.Conv2d, x: torch.Tensor, act: str = 'none', scalars: Sequence[float] = (), kernels: bool = False,
          weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``act(conv(x))`` in the fast formulation: the fused oneDNN primitive with ``kernels`` (level
    2), else the conv and the activation as separate autograd ops. ``act`` ``'relu'`` /
    ``'leaky_relu'`` / ``'none'``: the two give the same bits (``_onednn_runs`` decides the conv)."""
    if kernels:
        return conv_act(conv, x, act, scalars, weight=weight, bias=bias)
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
    t = x.permute(0, 2, 3, 1).reshape(B * H * W, C)
    r = None if residual is None else residual.permute(0, 2, 3, 1).reshape(B * H * W, -1)
    if kernels:
        if r is not None and act == 'none':
            y = torch.ops.mkldnn._linear_pointwise.binary(t, r.contiguous(), weight, layer.bias, 'add')
        else:
            y = torch.ops.mkldnn._linear_pointwise(t, weight, layer.bias, act, [], 'none' if act == 'gelu' else '')
            if r is not None:
                y.add_(r)
    else:
        y = _ACTS_OUT_OF_PLACE[act](F.linear(t, weight, layer.bias), ())
        if r is not None:
            y = y + r
    return y.view(B, H, W, -1).permute(0, 3, 1, 2)


def conv_bn_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d):
    """An eval-mode BatchNorm folded into the conv before it: ``(w * s, (b - mean) * s + beta)``
    with ``s = gamma / sqrt(var + eps)`` (autograd-capable; rounding differs from conv-then-BN)."""
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * s.view(-1, 1, 1, 1)
    b = -bn.running_mean * s if conv.bias is None else (conv.bias - bn.running_mean) * s
    return w, b + bn.bias
