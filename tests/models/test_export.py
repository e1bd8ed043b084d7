"""Exportable graphs (issue 17 point 5): ``torch.export`` of every fusion-only eval model with dynamic
batch / height / width, no private ``torch.ops.mkldnn`` op in the graph, output equal to eager."""
import pytest
import torch
from torch.export import Dim

import mtvif_zoo
from mtvif_zoo.models.layers import _fast

ALL = ['mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv', 'swinfusion', 'emma_ufuser', 'seafusion', 'segmif']


def _eval_model(name):
    torch.manual_seed(0)
    m = mtvif_zoo.create_model(name)
    return m.fusion_only() if m.has_segmentation else m.eval()


def _mkldnn_targets(graph) -> set:
    return {str(n.target) for n in graph.nodes if 'mkldnn' in str(n.target)}


def test_export_mode_switch_nests():
    assert not _fast.exporting()
    with _fast.export_mode():
        with _fast.export_mode():
            assert _fast.exporting()
        assert _fast.exporting()
        assert not _fast.use_fast(torch.zeros(1, 3, 4, 4))
    assert not _fast.exporting()


@pytest.mark.skipif(not _fast.fast_path_available(), reason='oneDNN not available: no private kernels to switch off')
@pytest.mark.filterwarnings('ignore:`torch.jit.trace:FutureWarning', 'ignore::torch.jit.TracerWarning')
def test_jit_trace_takes_the_public_path():
    """torch.jit.trace used to record torch.ops.mkldnn._convolution_pointwise (the tracer is not a
    compile / dispatch mode, so the inference kernels ran and were traced)."""
    m = _eval_model('seafusion')
    v, i = torch.rand(2, 3, 40, 48), torch.rand(2, 3, 40, 48)
    with torch.no_grad():
        assert _fast.use_fast(v, m.backbone)  # eager inference does take the kernels ...
        ref = m(v, i)
        traced = torch.jit.trace(m, (v, i), check_trace=False)
    assert 'mkldnn' not in str(traced.inlined_graph)  # ... the trace does not
    with torch.no_grad():
        torch.testing.assert_close(traced(v, i), ref, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize('name', ALL)
def test_torch_export_dynamic_hw(name):
    m = _eval_model(name)
    pm = m.pad_multiple
    b = Dim('batch', min=1, max=64)
    if pm > 1:
        dh, dw = pm * Dim('h', min=1, max=512), pm * Dim('w', min=1, max=512)
        sizes = [(2 * pm, 3 * pm), (3 * pm, 2 * pm)]
    else:
        dh, dw = Dim('h', min=2, max=4096), Dim('w', min=2, max=4096)
        sizes = [(12, 20), (21, 9)]
    spec = {0: b, 2: dh, 3: dw}
    ex = torch.rand(2, 3, *sizes[0])
    ep = torch.export.export(m, (ex, torch.rand_like(ex)), dynamic_shapes={'vis': spec, 'ir': spec})
    assert not _mkldnn_targets(ep.graph)
    assert not _fast.exporting()
    g = torch.Generator().manual_seed(1)
    for batch, (h, w) in zip((1, 2), sizes):  # other batch and sizes than the example
        v, i = torch.rand(batch, 3, h, w, generator=g), torch.rand(batch, 3, h, w, generator=g)
        with torch.no_grad():
            ref = m(v, i)  # eager, fast paths on
            out = ep.module()(v, i)
        assert out.shape == (batch, 3, h, w)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
