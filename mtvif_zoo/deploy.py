"""Deployment outside Python: the fusion-only eval graph as a ``torch.export`` program or an ONNX file.

:class:`FusionGraph` wraps a model's fused-image path so that the graph takes any image size, like
:func:`mtvif_zoo.fuse` does for tensors:

* inputs ``vis``: ``B x in_chans x H x W`` float32 in [0, 1] (RGB for the 3-channel models, the
  BT.601 luma Y for ``in_chans=1`` models), ``ir``: ``B x 1 x H x W`` float32 in [0, 1] (one
  thermal channel; replicated to 3 inside the graph for 3-channel models, as ``fuse()`` does);
* H and W are dynamic (at least the backbone's ``pad_multiple``, 8 for the Swin / U-net
  backbones, and 2 for the others); the batch size is dynamic too;
* inside the graph: reflect-padding to ``pad_multiple``, the model, the crop back and the clamp to
  [0, 1] -- the same arithmetic as ``fuse()`` on fp32 CPU tensors;
* output ``fused``: ``B x in_chans x H x W`` float32 in [0, 1].

The graph is captured under :func:`mtvif_zoo.models.layers._fast.export_mode`: the private oneDNN
kernels of the eager fast path are off (public ATen ops only) and Swin's window attention takes its
plain path, so one graph serves every size. ``tests/test_deploy.py`` checks onnxruntime (CPU) against
eager ``fuse()`` on a real pair at two sizes.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['FusionGraph', 'export_program', 'export_onnx', 'onnx_session', 'DEFAULT_OPSET']

#: ONNX opset of :func:`export_onnx` (onnxruntime >= 1.14 runs it)
DEFAULT_OPSET = 18


class FusionGraph(nn.Module):
    """The exportable fused-image path of a model (see the module docstring for the contract)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, 'forward_head') or not hasattr(model, 'pad_multiple'):
            raise ValueError(f'FusionGraph needs a mtvif_zoo model (mtvif_zoo.create_model(...)), '
                             f'got {type(model).__name__}')
        if getattr(model, 'has_segmentation', False):
            model = model.fusion_only()  # a deep copy, eval mode: the caller's model is untouched
        self.model = model.eval()
        self.in_chans = int(model.in_chans)
        self.pad_multiple = int(model.pad_multiple)
        self.eval()

    @property
    def min_size(self) -> int:
        """Smallest height / width the graph takes (reflect padding needs more pixels than it adds)."""
        return max(2, self.pad_multiple)

    def forward(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        h, w = vis.shape[-2:]
        if self.in_chans == 3:
            ir = ir.expand(-1, 3, -1, -1)
        m = self.pad_multiple
        if m > 1:
            pad = (0, (m - w % m) % m, 0, (m - h % m) % m)
            vis, ir = F.pad(vis, pad, mode='reflect'), F.pad(ir, pad, mode='reflect')
        fused = self.model.forward_head(self.model.forward_features(vis, ir), with_seg=False)[0]
        return fused[..., :h, :w].clamp(0, 1)


def _as_graph(model: Union[str, nn.Module]) -> FusionGraph:
    if isinstance(model, FusionGraph):
        return model
    if isinstance(model, str):
        from ._factory import create_model
        model = create_model(model, pretrained=True)
    return FusionGraph(model)


def _example(graph: FusionGraph, size: Tuple[int, int]):
    # batch 2 and a size that is not a multiple of the pad multiple, so that nothing specialises on them
    g = torch.Generator().manual_seed(0)
    vis = torch.rand(2, graph.in_chans, *size, generator=g)
    return vis, torch.rand(2, 1, *size, generator=g)


def _dynamic_shapes(graph: FusionGraph):
    from torch.export import Dim
    b = Dim('batch', min=1, max=1024)
    h = Dim('height', min=graph.min_size, max=1 << 15)
    w = Dim('width', min=graph.min_size, max=1 << 15)
    return {'vis': {0: b, 2: h, 3: w}, 'ir': {0: b, 2: h, 3: w}}


def export_program(model: Union[str, nn.Module], example_size: Tuple[int, int] = (61, 83)):
    """``torch.export`` program of :class:`FusionGraph` ``(model)`` with dynamic batch, height and width.

    ``model``: a mtvif_zoo model or a pretrained name (``'mtvif_iv.mfnet220'``); ``example_size``
    is only the tracing example. ``program.module()(vis, ir)`` runs it."""
    from .models.layers._fast import export_mode
    graph = _as_graph(model)
    with export_mode(), torch.no_grad():
        return torch.export.export(graph, _example(graph, example_size), dynamic_shapes=_dynamic_shapes(graph))


def export_onnx(model: Union[str, nn.Module], path: Union[str, os.PathLike], opset: int = DEFAULT_OPSET,
                example_size: Tuple[int, int] = (61, 83), verbose: bool = False) -> Path:
    """Write :class:`FusionGraph` ``(model)`` as one ONNX file (weights inside) with inputs ``vis``,
    ``ir`` and output ``fused``, dynamic batch / height / width (``torch.onnx.export(dynamo=True)``;
    needs the ``onnx`` extra: ``pip install 'mtvif_zoo[onnx]'``). Returns the path."""
    try:
        import onnx  # noqa: F401  (torch.onnx's dynamo exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f'ONNX export needs the onnx extra: pip install "mtvif_zoo[onnx]" ({e})') from e
    from .models.layers._fast import export_mode
    graph = _as_graph(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with export_mode(), torch.no_grad(), warnings.catch_warnings():
        # the exporter says each axis name is shared by vis and ir -- as intended
        warnings.filterwarnings('ignore', message='# The axis name')
        program = torch.onnx.export(graph, _example(graph, example_size), dynamo=True, opset_version=opset,
                                    input_names=['vis', 'ir'], output_names=['fused'],
                                    dynamic_shapes=_dynamic_shapes(graph), verbose=verbose)
    program.save(str(path), external_data=False)
    return path


def onnx_session(path: Union[str, os.PathLike], threads: Optional[int] = None):
    """An onnxruntime CPU ``InferenceSession`` for an exported file (``threads``: intra-op threads)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f'running ONNX models needs onnxruntime: pip install "mtvif_zoo[onnx]" ({e})') from e
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
