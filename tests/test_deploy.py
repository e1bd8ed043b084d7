"""ONNX export (issue 19 point 9): ``mtvif export --model NAME.tag --onnx FILE`` writes a graph with
dynamic batch / height / width that onnxruntime (CPU) runs within 1e-4 of eager ``fuse()`` on a
real pair, at two sizes (one of them not a multiple of anything)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mtvif_zoo
from mtvif_zoo.cli import main
from mtvif_zoo.deploy import FusionGraph

pytest.importorskip('onnx', reason='the onnx extra is not installed (pip install ".[onnx]")')
pytest.importorskip('onnxscript', reason='the onnx extra is not installed (pip install ".[onnx]")')
ort = pytest.importorskip('onnxruntime', reason='the onnx extra is not installed (pip install ".[onnx]")')

EXAMPLES = Path(__file__).resolve().parents[1] / 'examples'

NAME = 'seafusion.mfnet220'  # the smallest published weight: the export takes a few seconds


@pytest.fixture(scope='module')
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('onnx') / 'model.onnx'
    assert main(['export', '--model', NAME, '--onnx', str(path)]) == 0  # includes its own onnxruntime check
    return path


def test_onnx_matches_fuse_on_a_real_pair(onnx_file):
    import onnx
    proto = onnx.load(str(onnx_file))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(proto.graph.input) + list(proto.graph.output)}
    assert dims == {'vis': ['batch', 3, 'height', 'width'], 'ir': ['batch', 1, 'height', 'width'],
                    'fused': ['batch', 3, 'height', 'width']}
    assert not any(n.domain not in ('', 'ai.onnx') for n in proto.graph.node)  # standard ops only

    model = mtvif_zoo.create_model(NAME, pretrained=True)
    session = ort.InferenceSession(str(onnx_file), providers=['CPUExecutionProvider'])
    vis = np.asarray(Image.open(EXAMPLES / 'vi' / '00036N.png').convert('RGB'))
    ir = np.asarray(Image.open(EXAMPLES / 'ir' / '00036N.png').convert('L'))
    for (y, x, h, w) in [(200, 300, 64, 96), (150, 100, 77, 101)]:
        v, i = vis[y:y + h, x:x + w], ir[y:y + h, x:x + w]
        ref = mtvif_zoo.fuse(v, i, model=model)  # uint8 HxWx3, the user-facing API
        ref_f = mtvif_zoo.fuse(torch.from_numpy(v.transpose(2, 0, 1).copy()).float() / 255,
                               torch.from_numpy(i.copy())[None].float() / 255, model=model)
        feed = {'vis': (v.transpose(2, 0, 1)[None] / 255).astype(np.float32),
                'ir': (i[None, None] / 255).astype(np.float32)}
        out = session.run(['fused'], feed)[0]
        assert out.shape == (1, 3, h, w)
        assert np.abs(out[0] - ref_f.numpy()).max() <= 1e-4
        as_uint8 = np.clip(np.rint(out[0].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
        assert np.abs(as_uint8.astype(int) - ref.astype(int)).max() <= 1


def test_fusion_graph_pads_like_fuse():
    """The graph pads to the pad multiple inside (here 8, EMMA's U-net), crops back and clamps, as fuse() does."""
    torch.manual_seed(0)
    model = mtvif_zoo.create_model('emma_ufuser').eval()
    graph = FusionGraph(model)
    assert graph.pad_multiple == 8 and graph.min_size == 8
    g = torch.Generator().manual_seed(0)
    vis, ir = torch.rand(2, 3, 13, 21, generator=g), torch.rand(2, 1, 13, 21, generator=g)
    with torch.no_grad():
        out = graph(vis, ir)
    ref = mtvif_zoo.fuse(vis, ir, model=model)
    assert out.shape == (2, 3, 13, 21)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_export_cli_argument_errors(capsys):
    assert main(['export', '--model', NAME]) == 2
    assert '--onnx' in capsys.readouterr().err
    assert main(['export']) == 2
    assert '--checkpoint' in capsys.readouterr().err


def test_export_program_dynamic_sizes():
    """export_program: one torch.export program serves other batch sizes and sizes than the example."""
    from mtvif_zoo.deploy import export_program
    torch.manual_seed(0)
    graph = FusionGraph(mtvif_zoo.create_model('seafusion'))
    program = export_program(graph)
    assert not any('mkldnn' in str(n.target) for n in program.graph.nodes)
    g = torch.Generator().manual_seed(2)
    for b, h, w in ((1, 30, 44), (3, 17, 9)):
        vis, ir = torch.rand(b, 3, h, w, generator=g), torch.rand(b, 1, h, w, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(vis, ir), graph(vis, ir), atol=1e-5, rtol=0)
