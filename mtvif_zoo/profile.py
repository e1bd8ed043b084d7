"""``profile(model)``: parameters, MACs and training memory, side by side with Table 7.

* parameters: every parameter of the model as trained (multi-task: both branches + classifier);
* MACs: measured with torch's own ``torch.utils.flop_counter.FlopCounterMode`` on one training
  forward pass (segmentation included, as Table 7 is "measured during training"), divided by 2
  (the counter reports FLOPs = 2 x multiply-accumulates for conv / matmul / attention). Table 7's
  "FLOPs" behave as MACs (DESIGN.md), so the two columns compare directly;
* peak training memory of one sample (forward + backward): on CUDA ``max_memory_allocated``; on
  CPU the bytes of parameters + gradients + the tensors autograd saves for backward (counted once
  per storage through ``saved_tensors_hooks``), which is what dominates a training step's peak.
  Table 7's memory column is a GPU figure whose method the paper does not state (tool, what is
  included); the CPU count is a different quantity (every fp32 tensor autograd keeps for backward,
  nothing freed or recomputed by a GPU kernel): compare models with each other on it, not with
  Table 7. ``--device cuda`` measures ``max_memory_allocated``.
"""
import copy
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .models.multitaskvif import VARIANTS

__all__ = ['profile', 'ProfileResult', 'count_params', 'count_macs', 'TABLE7']

#: Table 7 of the paper: name -> (params, MACs, training memory in MB) at 256x256, 3 channels
TABLE7: Dict[str, Tuple[float, float, float]] = {
    'mtvif_i': (2.47e6, 125.26e9, 689.65),
    'mtvif_ii': (2.13e6, 49.08e9, 167.00),
    'mtvif_iii': (0.93e6, 60.84e9, 245.68),
    'mtvif_iv': (1.28e6, 83.83e9, 214.52),
}


@dataclass
class ProfileResult:
    name: str
    size: Tuple[int, int]
    params: int
    macs: int
    train_memory_mb: Optional[float]
    memory_method: str
    table7: Optional[Tuple[float, float, float]] = None
    by_module: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, object]:
        d = {'name': self.name, 'size': list(self.size), 'params': self.params, 'macs': self.macs,
             'train_memory_mb': self.train_memory_mb, 'memory_method': self.memory_method,
             'params_by_module': self.by_module}
        if self.table7:
            d['table7'] = {'params': self.table7[0], 'macs': self.table7[1], 'train_memory_mb': self.table7[2]}
        return d

    def __str__(self) -> str:
        h, w = self.size
        mem = f'{self.train_memory_mb:.2f} MB ({self.memory_method})' if self.train_memory_mb is not None else 'n/a'
        lines = [f'{self.name} @ {h}x{w}, batch 1',
                 f'  params      {self.params / 1e6:8.3f} M' + self._vs(0, self.params, 1e6, 'M'),
                 f'  MACs        {self.macs / 1e9:8.2f} G' + self._vs(1, self.macs, 1e9, 'G'),
                 f'  train mem   {mem}' + (f'   (Table 7: {self.table7[2]:.2f} MB, on a GPU)' if self.table7 else ''),
                 '  params by module: ' + ', '.join(f'{k} {v / 1e6:.3f} M' for k, v in self.by_module.items())]
        if self.train_memory_mb is not None and not self.memory_method.startswith('cuda'):
            lines.append(f'  train mem is measured on the CPU: one training forward + backward at batch 1, {h}x{w}, '
                         'fp32; the bytes of every tensor autograd saves for backward + parameters + gradients.')
            if self.table7:
                lines.append('  Table 7 is a GPU figure whose method the paper does not state; the CPU count is a '
                             'different quantity: compare models with each other, or run --device cuda.')
        return '\n'.join(lines)

    def _vs(self, i: int, value: float, unit: float, suffix: str) -> str:
        if not self.table7:
            return ''
        ref = self.table7[i]
        return f'   (Table 7: {ref / unit:.2f} {suffix}, {100 * (value - ref) / ref:+.1f} %)'


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _inputs(model: nn.Module, size, batch: int = 1, device=None):
    device = device or next(model.parameters()).device
    c = getattr(model, 'in_chans', 3)
    if device.type == 'meta':
        return torch.empty(batch, c, *size, device=device), torch.empty(batch, c, *size, device=device)
    g = torch.Generator().manual_seed(0)
    vis = torch.rand(batch, c, *size, generator=g).to(device)
    ir = torch.rand(batch, c, *size, generator=g).to(device)
    return vis, ir


def count_macs(model: nn.Module, size=(256, 256), training: bool = True, on_meta: bool = True) -> int:
    """Multiply-accumulates of one forward pass at ``size`` (torch FlopCounterMode FLOPs / 2).

    By default the count runs on a ``meta``-device copy of the model: shapes only, no arithmetic,
    so profiling the 125 GMAC variant I takes well under a second on any machine.
    """
    if on_meta:
        try:
            return count_macs(copy.deepcopy(model).to('meta'), size, training, on_meta=False)
        except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count on a real-device copy
            pass
    if next(model.parameters()).device.type != 'meta':
        model = copy.deepcopy(model)  # a training-mode forward updates BatchNorm statistics: never the caller's
    vis, ir = _inputs(model, size)
    was = model.training
    model.train(training)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(vis, ir)
    finally:
        model.train(was)
    return int(fc.get_total_flops() // 2)


def _train_memory(model: nn.Module, size) -> Tuple[Optional[float], str]:
    device = next(model.parameters()).device
    vis, ir = _inputs(model, size, device=device)
    was = model.training
    model.train(True)
    try:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            out = model(vis, ir)
            loss = sum(o.float().mean() for o in (out if isinstance(out, tuple) else (out,)) if o is not None)
            loss.backward()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - base
            model.zero_grad(set_to_none=True)
            params = sum(p.numel() * p.element_size() for p in model.parameters())
            return (peak + params) / 2 ** 20, 'cuda max_memory_allocated'
        seen = {}

        def pack(t):
            try:
                key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
                seen[key] = t.untyped_storage().nbytes()
            except (RuntimeError, NotImplementedError):
                pass
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(vis, ir)
        loss = sum(o.float().mean() for o in (out if isinstance(out, tuple) else (out,)) if o is not None)
        loss.backward()
        model.zero_grad(set_to_none=True)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        return (sum(seen.values()) + 2 * params) / 2 ** 20, 'saved activations + params + grads'
    finally:
        model.train(was)


def profile(model: nn.Module, size: Tuple[int, int] = (256, 256), memory: bool = True,
            name: Optional[str] = None) -> ProfileResult:
    """Profile a zoo model as trained (training-mode forward, segmentation branch included).

    ``print(mtvif_zoo.profile(mtvif_zoo.create_model('mtvif_iii')))`` prints the Table 7 figures
    next to the paper's.
    """
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    m = getattr(model, 'pad_multiple', 1)
    if size[0] % m or size[1] % m:
        raise ValueError(f'size {size} must be a multiple of the backbone pad multiple {m}')
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    name = name or cfg.get('architecture') or type(model).__name__
    table7 = None
    if name in TABLE7 and getattr(model, 'in_chans', 3) == 3 and getattr(model, 'head_name', 'mth') == 'mth' \
            and getattr(model, 'backbone_name', None) == VARIANTS[name][0]:
        table7 = TABLE7[name]
    by_module = {n: count_params(c) for n, c in model.named_children()}
    macs = count_macs(model, size, training=True)
    mem, method = _train_memory(model, size) if memory else (None, 'skipped')
    return ProfileResult(name, size, count_params(model), macs, mem, method, table7, by_module)
