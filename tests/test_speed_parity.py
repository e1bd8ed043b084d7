"""Every fast path against the plain path (fp32, max abs diff <= 1e-5), and the fast paths are taken.

Fast = what ``fuse()`` runs on CPU (channels_last maps, the fast formulations, the oneDNN inference
kernels, Swin's SDPA window attention); plain = ``plain_path()`` + ``set_fused_attn(model, False)``:
the original op sequence on NCHW tensors. Small inputs only; speed is measured by ``mtvif bench``,
never here.
"""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from mtvif_zoo import create_model, fuse
from mtvif_zoo.models.backbones.swinfusion import set_fused_attn
from mtvif_zoo.models.layers._fast import fast_enabled, plain_path, set_fast_path, use_fast
from mtvif_zoo.models.multitaskvif import VARIANTS

TOL = 1e-5
ALL = sorted(VARIANTS)


def _perturbed(name, seed=0, **kwargs):
    """A model whose BN running stats and LayerNorm / bias parameters are off their init."""
    torch.manual_seed(seed)
    m = create_model(name, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() <= 1 or p.numel() < 5000:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        m.train()
        m(torch.rand(2, m.in_chans, 32, 32, generator=g), torch.rand(2, m.in_chans, 32, 32, generator=g))
    return m.eval()


def _inputs(b=1, c=3, h=40, w=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g), torch.rand(b, 1, h, w, generator=g).expand(-1, c, -1, -1)


def _plain(m, vis, ir):
    set_fused_attn(m, False)
    try:
        with plain_path(), torch.no_grad():
            return m(vis.contiguous(), ir.contiguous())
    finally:
        set_fused_attn(m, True)


@pytest.mark.parametrize('name', ALL)
def test_fast_equals_plain(name):
    m = _perturbed(name)
    vis, ir = _inputs(b=2)
    ref = _plain(m, vis, ir)
    with torch.inference_mode():
        fast = m(vis, ir)
    assert fast.is_contiguous(memory_format=torch.channels_last)  # the fast path ran (NHWC maps)
    assert (fast - ref).abs().max().item() <= TOL


@pytest.mark.parametrize('name', ['mtvif_iii', 'mtvif_iv', 'mtvif_ii', 'seafusion', 'segmif', 'emma_ufuser'])
def test_eval_forward_same_bits_with_and_without_autograd(name):
    """The CPU inference kernels fuse ops whose separate results they reproduce, so an eval-mode
    forward gives the same image whether autograd records it or not (fuse() == model()): bit for bit
    where oneDNN runs the same convolution algorithm on both paths, within float32 rounding (a few
    1e-7) where it picks another one for the autograd path (seen on CPUs with AMX)."""
    m = _perturbed(name)
    vis, ir = _inputs()
    with_grad = m(vis, ir)
    assert with_grad.requires_grad
    with torch.inference_mode():
        without = m(vis, ir)
    torch.testing.assert_close(with_grad.detach(), without, rtol=0, atol=5e-7)
    assert torch.equal(fuse(vis, ir, model=m), without.clamp(0, 1))


def _op_names(fn):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


@pytest.mark.parametrize('name', ['mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv'])
def test_inference_kernels_are_used(name):
    m = _perturbed(name)
    vis, ir = _inputs()
    with torch.inference_mode():
        fast = _op_names(lambda: m(vis, ir))
        with plain_path():
            plain = _op_names(lambda: m(vis, ir))
    assert 'mkldnn::_convolution_pointwise' in fast
    assert 'mkldnn::_convolution_pointwise' not in plain
    if name == 'mtvif_i':
        assert 'mkldnn::_linear_pointwise' in fast  # Swin MLP / projections with fused bias, GELU, add




class _RecordInputs:
    """Wraps an op overload packet (``torch.ops.mkldnn._convolution_pointwise``): records the shape
    and strides of every call's input, then runs the op (``.binary`` etc. pass through)."""

    def __init__(self, op):
        self.op, self.inputs = op, []

    def __call__(self, x, *args, **kwargs):
        self.inputs.append((tuple(x.shape), x.stride()))
        return self.op(x, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.op, name)


@pytest.mark.parametrize('name', ['mtvif_i', 'swinfusion', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv'])
def test_every_conv_gets_canonical_channels_last_at_batch_1(name, monkeypatch):
    """At batch 1 every fused oneDNN conv gets a channels_last input with the canonical strides
    (batch stride C*H*W): oneDNN reads an NCHW map, or a size-1 batch dim with another stride (what
    ``tokens.transpose(1, 2).view(1, C, H, W)`` gives), as a different layout and reorders it into a
    copy before the conv (SwinFusion's fusion conv at 480x640: cat + reorder + conv were 2x slower)."""
    m = _perturbed(name)
    vis, ir = _inputs(b=1)
    rec = _RecordInputs(torch.ops.mkldnn._convolution_pointwise)
    monkeypatch.setattr(torch.ops.mkldnn, '_convolution_pointwise', rec)
    with torch.inference_mode():
        m(vis, ir)
    assert len(rec.inputs) >= 4
    for shape, stride in rec.inputs:
        n, c, h, w = shape
        assert stride == (c * h * w, 1, w * c, c), (shape, stride)

def test_switches():
    m = _perturbed('mtvif_iii')
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert use_fast(x, m.head) and fast_enabled(m.head.hiaf)
        with plain_path():
            assert not use_fast(x, m.head) and not fast_enabled(m.head.hiaf)
        set_fast_path(m, False)
        assert not use_fast(x, m.head) and not fast_enabled(m.head.hiaf)
        set_fast_path(m, True)
    assert not use_fast(x, m.head)  # autograd on: the fused oneDNN ops have no backward
    m.train()
    with torch.no_grad():
        assert not use_fast(x, m.head)  # training-mode BN / dropout: plain kernels
    # MACs are counted on the plain path (FlopCounterMode is a dispatch mode)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False):
        assert not fast_enabled(m.head.hiaf)


@pytest.mark.parametrize('name', ['mtvif_iii', 'mtvif_ii'])
def test_fast_formulation_gradients_match_plain(name):
    """The fast formulations (HIA-F's Gram matrix, Ufuser's folded channel attention, channels_last)
    in training mode: same fused image and gradients. The loss is on the fused image (which reaches
    the segmentation branch through HIA-F); a loss on the logits of a 2-image batch goes through
    training-mode BN statistics so ill-conditioned that NCHW vs channels_last alone moves its
    gradients by ~1e-2 relative."""
    m = _perturbed(name).train()
    vis, ir = _inputs(b=2, h=24, w=32)
    grads, outs = [], []
    for fast in (True, False):
        set_fast_path(m, fast)
        m.zero_grad()
        fused, _ = m(vis, ir)
        fused.square().mean().backward()
        outs.append(fused.detach())
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    set_fast_path(m, True)
    assert (outs[0] - outs[1]).abs().max().item() <= TOL
    assert grads[0].keys() == grads[1].keys()
    # 1e-4 of each parameter's own gradient scale, with a floor of 5e-5 of the model's largest
    # gradient. With OMP_NUM_THREADS=1 oneDNN picks other conv algorithms than with 2 threads and
    # mtvif_ii's two paths differ by up to 1.7e-6 of the largest gradient in the backbone and 9e-6
    # in head.seg_branch.0.0.weight, whose own gradient is 3e-3 of the largest (reached only through
    # HIA-F and a training-mode BN of a 2-image batch: 2.9e-3 relative to itself); with 2 threads
    # all stay below 2e-7. A wrong formulation moves the large gradients by percents.
    top = max(g.abs().max().item() for g in grads[1].values())
    for k in grads[0]:
        scale = grads[1][k].abs().max().item()
        assert (grads[0][k] - grads[1][k]).abs().max().item() <= 1e-4 * scale + 5e-5 * top, k


@pytest.mark.parametrize('name', ['mtvif_i', 'swinfusion'])
def test_swin_inference_chunks_and_batch(name, monkeypatch):
    """Chunked Swin inference (several chunks, windows of all four mask classes in one chunk,
    batch 2) equals the plain path."""
    from mtvif_zoo.models.backbones import swinfusion as sf
    m = _perturbed(name)
    vis, ir = _inputs(b=2, h=48, w=64)
    ref = _plain(m, vis, ir)
    for rows in (64 * 2, 64 * 2 * 5, 1 << 20):  # 1 window, 5 windows per chunk, everything
        monkeypatch.setattr(sf, 'INFERENCE_CHUNK_ROWS', rows)
        with torch.inference_mode():
            assert (m(vis, ir) - ref).abs().max().item() <= TOL


def test_one_channel_models():
    for name in ('mtvif_ii', 'mtvif_iii', 'mtvif_i'):
        m = _perturbed(name, in_chans=1)
        vis, ir = _inputs(c=1)
        ref = _plain(m, vis, ir)
        with torch.inference_mode():
            assert (m(vis, ir) - ref).abs().max().item() <= TOL


def test_segmentation_logits_fast_equals_plain():
    m = _perturbed('mtvif_iv')
    vis, ir = _inputs()
    with plain_path(), torch.no_grad():
        ref = m.segment(vis, ir)
    with torch.inference_mode():
        fast = m.segment(vis, ir)
    assert (fast - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


# --------------------------------------------------------------------------------------------
# bf16 autocast on CPU, tiling
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['mtvif_ii', 'mtvif_iii', 'mtvif_i'])
def test_bf16_autocast_runs_and_stays_close(name):
    """The fast formulations under autocast (HIA-F / Ufuser keep their C x C algebra in fp32)."""
    m = _perturbed(name)
    vis, ir = _inputs(h=48, w=64)
    ref = fuse(vis, ir, model=m)
    out = fuse(vis, ir, model=m, amp=True, amp_dtype=torch.bfloat16)
    assert out.dtype == torch.float32 and (out - ref).abs().max().item() < 0.05


#: documented tiled-vs-untiled tolerance (max abs on the [0, 1] fused image) at 1024x1024 with
#: tile=512, overlap=32 (README "Tiling"): CNNs whose receptive field barely exceeds the
#: zero-weight margin (overlap // 4 = 8 px) are exact to fp32 rounding; models with global context
#: inside a tile (HIA-F's channel attention, Ufuser's U-net + channel attention, Swin) see a
#: different image per tile: 1e-2 (measured 1.7e-3 to 2.3e-3 with random init on the example pair).
TILE_TOL = {'seafusion': 1e-4, 'segmif': 1e-4, 'mtvif_iii': 1e-2}


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(TILE_TOL))
def test_tiled_1024_equals_untiled_within_tolerance(name):
    from pathlib import Path

    import numpy as np
    from PIL import Image
    ex = Path(__file__).resolve().parents[1] / 'examples'
    vis = np.array(Image.open(ex / 'vi' / '00081D.png').convert('RGB').resize((1024, 1024), Image.BILINEAR))
    ir = np.array(Image.open(ex / 'ir' / '00081D.png').convert('L').resize((1024, 1024), Image.BILINEAR))
    tv = torch.from_numpy(vis).permute(2, 0, 1).float() / 255
    ti = torch.from_numpy(ir).float()[None] / 255
    torch.manual_seed(0)
    m = create_model(name).eval()
    whole = fuse(tv, ti, model=m)
    tiled = fuse(tv, ti, model=m, tile=512, overlap=32)
    d = (whole - tiled).abs()
    assert d.max().item() <= TILE_TOL[name]
    assert d.mean().item() <= TILE_TOL[name] / 10


_MEMORY_SCRIPT = r'''
import sys, numpy as np, torch, torch.nn as nn
import mtvif_zoo
def hwm_kb():  # this process's peak RSS (VmHWM is per address space: not inherited over exec, unlike ru_maxrss)
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])
class Tiny(nn.Module):  # the fuse() contract with a one-conv network: measures fuse()'s own buffers
    in_chans, pad_multiple = 3, 8
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
    def forward_features(self, v, i):
        return self.conv(v + i)
    def forward_head(self, x, with_seg=False):
        return torch.sigmoid(x), None
rng = np.random.default_rng(0)
vis = rng.integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
ir = rng.integers(0, 256, (4096, 4096), dtype=np.uint8)
before = hwm_kb()
out = mtvif_zoo.fuse(vis, ir, model=Tiny().eval(), tile=512, overlap=32)
assert out.shape == (4096, 4096, 3) and out.dtype == np.uint8
print(before, hwm_kb())
'''


@pytest.mark.slow
def test_4096_pair_fuses_in_tiles_within_4gib():
    """Peak RSS of a fresh process fusing a 4096x4096 uint8 pair with tile=512 (fuse()'s input
    conversion, tiling buffers, blending and output conversion, with a one-conv stand-in network;
    the zoo's models add their per-tile activations: README "Tiling" for mtvif_iii's measured
    peak)."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, '-c', _MEMORY_SCRIPT], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    before_kb, peak_kb = (int(v) for v in res.stdout.split()[-2:])
    assert peak_kb < 4 * 2 ** 20  # the whole process: < 4 GiB
    assert peak_kb - before_kb < 1.5 * 2 ** 20  # what fuse() adds for 4096^2 (measured 0.87 GiB)


def test_hiaf_folded_context_has_no_subnormals_and_same_attention():
    """A saturated channel softmax (large k^T v, as the published weights give on real pairs) leaves
    subnormal entries in HIA-F's folded matrix; they are flushed to 0 on the CPU (every pixel's
    product with a subnormal takes the slow path), and the attention output is unchanged."""
    from mtvif_zoo.models.layers.channel_attention import ChannelContextAttention
    torch.manual_seed(0)
    attn = ChannelContextAttention(16, num_heads=4).eval()
    w_next = torch.randn(8, 16)
    context = 8 * torch.rand(1, 256, 16)  # k^T v entries in the hundreds: a saturated softmax
    query = torch.randn(1, 256, 16)
    with torch.no_grad():
        raw = torch.finfo(torch.float32).tiny
        # the unflushed product (the same algebra without the flush) does hold subnormals here
        C, h, d = 16, 4, 4
        full = attn.kv.weight[:C] @ (context[0].t() @ context[0]) @ attn.kv.weight[C:].t()
        ctx = (torch.diagonal(full.view(h, d, h, d), dim1=0, dim2=2).permute(2, 0, 1) * attn.scale).softmax(dim=-2)
        unflushed = (ctx @ w_next.t().reshape(h, d, -1)).reshape(C, -1)
        assert ((unflushed != 0) & (unflushed.abs() < raw)).any()
        folded = attn.folded_context(context, w_next)
        assert not ((folded != 0) & (folded.abs() < raw)).any()
        assert torch.equal(folded[0][unflushed.abs() >= raw], unflushed[unflushed.abs() >= raw])
        assert (query @ folded[0] - query @ unflushed).abs().max().item() <= 1e-30


def test_conv_lrelu_fused_primitive_is_the_separate_ops_bitwise():
    """ConvLReLU's one-primitive conv + LeakyReLU gives the bits of the conv and the activation run
    separately on the same channels_last map; the NCHW modules agree within fp32 rounding only
    (oneDNN may pick another conv algorithm for the other layout)."""
    from mtvif_zoo.models.layers._fast import fconv
    from mtvif_zoo.models.layers.conv import conv_lrelu
    torch.manual_seed(0)
    m = conv_lrelu(4, 8).eval()
    x = torch.randn(2, 4, 10, 12).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert use_fast(x, m)  # the one-primitive kernel runs
        fused = m(x)
        separate = fconv(m[0], x, 'leaky_relu', [0.2], kernels=False)
        set_fast_path(m, False)
        modules = m(x.contiguous())
    assert torch.equal(fused, separate)
    assert (fused - modules).abs().max().item() <= 1e-6
