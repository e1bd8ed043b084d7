"""bf16 inference on the CPU (issue 16): which dtype fuse() picks, amp=False stays fp32 bit for bit,
the bf16 images stay within the quality bar, the bf16 weights are converted once per module.

The full quality figure (20 msrs_test20 pairs, 5 published weights) is
``tools/bf16_quality.py``; here only small crops. bf16 runs on every CPU (oneDNN's bf16 kernels
where the CPU has them, PyTorch's reference kernels elsewhere), so the quality checks run
everywhere; the checks of the oneDNN bf16 kernels themselves skip where the CPU has none.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtvif_zoo import create_model, fuse
from mtvif_zoo.fusion import inference_dtype
from mtvif_zoo.models.layers import _fast
from mtvif_zoo.models.layers._fast import bf16_kernels_available, cpu_has_bf16_units, kernel_weight
from mtvif_zoo.models.multitaskvif import VARIANTS

ROOT = Path(__file__).resolve().parents[1]
PAIR = (ROOT / 'examples' / 'vi' / '00036N.png', ROOT / 'examples' / 'ir' / '00036N.png')


def _rand(b=1, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g), torch.rand(b, 1, h, w, generator=g)


@pytest.fixture
def units(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16 units."""
    monkeypatch.delenv('MTVIF_CPU_BF16', raising=False)  # tests/conftest.py pins the suite to fp32

    def set_units(value: bool):
        monkeypatch.setattr(_fast, 'cpu_has_bf16_units', lambda: value)
    return set_units


def test_inference_dtype_follows_the_cpu(units):
    units(True)
    assert inference_dtype('cpu') == torch.bfloat16
    assert inference_dtype('cpu', amp=False) == torch.float32
    units(False)
    assert inference_dtype('cpu') == torch.float32
    assert inference_dtype('cpu', amp=True) == torch.bfloat16
    assert inference_dtype('cpu', amp=True, amp_dtype=torch.float16) == torch.float16
    assert inference_dtype('cuda') in (torch.bfloat16, torch.float16)


def test_env_overrides_the_cpu_default(units, monkeypatch):
    units(True)
    monkeypatch.setenv('MTVIF_CPU_BF16', '0')
    assert inference_dtype('cpu') == torch.float32
    assert inference_dtype('cpu', amp=True) == torch.bfloat16
    units(False)
    monkeypatch.setenv('MTVIF_CPU_BF16', '1')
    assert inference_dtype('cpu') == torch.bfloat16
    monkeypatch.setenv('MTVIF_CPU_BF16', 'yes')
    with pytest.raises(ValueError, match='MTVIF_CPU_BF16 must be 0'):
        inference_dtype('cpu')


def test_cpu_bf16_detection_reads_the_cpu_flags(monkeypatch):
    """Native units = amx_bf16 / avx512_bf16 in the CPU flags and oneDNN bf16 kernels (hardware, not
    the model); this machine's answer is consistent with its /proc/cpuinfo."""
    flags = _fast._cpu_flags()
    if flags:
        assert _fast._bf16_flags_present() == bool({'amx_bf16', 'avx512_bf16'} & flags)
    assert cpu_has_bf16_units() == (_fast._bf16_flags_present() and bf16_kernels_available())
    monkeypatch.setattr(_fast, '_cpu_flags', lambda: frozenset({'avx2', 'fma'}))
    assert not _fast._bf16_flags_present()
    monkeypatch.setattr(_fast, '_cpu_flags', lambda: frozenset({'avx512f', 'avx512_bf16', 'amx_bf16'}))
    assert _fast._bf16_flags_present()


@pytest.mark.parametrize('name', ['mtvif_iv', 'seafusion'])
def test_default_is_bf16_with_units_and_amp_false_is_fp32_bitwise(name, units):
    torch.manual_seed(0)
    m = create_model(name).eval()
    vis, ir = _rand()
    units(False)
    fp32_default = fuse(vis, ir, model=m)
    with torch.inference_mode():  # today's fp32 result: the eval forward, clamped
        ref = m(vis.contiguous(memory_format=torch.channels_last),
                ir.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)).clamp(0, 1)
    assert torch.equal(fp32_default, ref)
    units(True)
    assert torch.equal(fuse(vis, ir, model=m, amp=False), fp32_default)
    with torch.autocast('cpu', dtype=torch.bfloat16):  # an outer autocast does not change amp=False
        assert torch.equal(fuse(vis, ir, model=m, amp=False), fp32_default)
    bf16_default = fuse(vis, ir, model=m)
    assert torch.equal(bf16_default, fuse(vis, ir, model=m, amp=True))
    assert bf16_default.dtype == torch.float32
    diff = (bf16_default - fp32_default).abs()
    assert 0 < diff.max().item() <= 4 / 255  # bf16 ran, and stayed close


_SWIN = ('mtvif_i', 'swinfusion')  # bf16 Swin blocks on a CPU without bf16 kernels: ~10 s each


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in _SWIN else n
                                  for n in sorted(VARIANTS)])
def test_bf16_close_to_fp32_all_models(name):
    """Every model runs bf16 (random init, tiny input) within the quality bar of fp32."""
    torch.manual_seed(0)
    m = create_model(name).eval()
    vis, ir = _rand(h=24, w=32)
    a, b = fuse(vis, ir, model=m, amp=False), fuse(vis, ir, model=m, amp=True)
    d = (a - b).abs()
    assert d.mean().item() <= 0.5 / 255 and d.max().item() <= 4 / 255


def test_bf16_tiled_and_batched():
    torch.manual_seed(0)
    m = create_model('mtvif_iii').eval()
    vis, ir = _rand(b=2, h=48, w=48, seed=3)
    batched = fuse(vis, ir, model=m, amp=True)
    single = torch.cat([fuse(vis[k:k + 1], ir[k:k + 1], model=m, amp=True) for k in range(2)])
    assert (batched - single).abs().max().item() <= 1 / 255
    tiled = fuse(vis, ir, model=m, amp=True, tile=32, overlap=8)
    assert tiled.shape == batched.shape
    fp32_tiled = fuse(vis, ir, model=m, amp=False, tile=32, overlap=8)
    assert (tiled - fp32_tiled).abs().max().item() <= 4 / 255


def _crop(path, size=(64, 80)):
    a = np.asarray(Image.open(path))
    return a[100:100 + size[0], 200:200 + size[1]].copy()


@pytest.mark.parametrize('name', ['mtvif_iv', 'seafusion'])
def test_bf16_quality_published_weights(name):
    """The published weights on a crop of the shipped MSRS pair: bf16 vs fp32 within issue 16's bar
    (mean <= 0.5/255, max <= 4/255; the full 20-pair figure: tools/bf16_quality.py)."""
    m = create_model(name, pretrained=True).eval()
    vis, ir = _crop(PAIR[0]), _crop(PAIR[1])
    a = torch.from_numpy(fuse(vis, ir, model=m, amp=False)).float()
    b = torch.from_numpy(fuse(vis, ir, model=m, amp=True)).float()
    d = (a - b).abs()  # 8-bit images, in grey levels
    assert d.mean().item() <= 0.5 and d.max().item() <= 4


def test_bf16_weights_converted_once(monkeypatch):
    """bf16 weights are made once per module (channels_last for convs), reused, and rebuilt when the
    parameter changes. (The conversion is independent of the CPU: oneDNN's presence is faked.)"""
    monkeypatch.setattr(_fast, 'bf16_kernels_available', lambda: True)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    x = torch.rand(1, 8, 10, 12)
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
        w1, b1 = kernel_weight(conv, x)
        w2, b2 = kernel_weight(conv, x)
    assert w1.dtype == b1.dtype == torch.bfloat16
    assert w1.is_contiguous(memory_format=torch.channels_last)
    assert w1 is w2 and b1 is b2
    assert torch.equal(w1, conv.weight.detach().bfloat16())
    assert not w1.is_inference()  # usable outside inference_mode as well
    with torch.no_grad():
        conv.weight.mul_(2)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        w3, _ = kernel_weight(conv, x)
    assert w3 is not w1 and torch.equal(w3, conv.weight.detach().bfloat16())
    with torch.no_grad():  # no autocast: fp32 kernels, the parameters themselves
        w4, b4 = kernel_weight(conv, x)
    assert w4 is conv.weight and b4 is conv.bias


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in _SWIN else n
                                  for n in sorted(VARIANTS)])
def test_bf16_kernels_match_reference_bf16(name):
    """fuse(amp=True) runs the level-2 bf16 path -- oneDNN's bf16 kernels where the CPU has them,
    elsewhere their arithmetic emulated on the fp32 kernels (``emulate_bf16_kernels``) -- with bf16
    activations from layer to layer, and gives the image of the reference bf16 path (no oneDNN:
    every op under autocast) within 2/255 max and 0.2/255 mean (two bf16 roundings of a deep net:
    the random-init swinfusion, whose residual stream runs through 4 Swin stages without a final
    sigmoid, differs by ~0.6/255 max, 0.1/255 mean; the others by < 0.2/255 max)."""
    from torch.profiler import ProfilerActivity, profile

    from mtvif_zoo.models.layers._fast import emulate_bf16_kernels
    from mtvif_zoo.models.layers.conv import ConvLReLU
    torch.manual_seed(0)
    m = create_model(name).eval()
    vis, ir = _rand(h=24, w=32)
    dtypes = []
    hooks = [mod.register_forward_hook(lambda mod, args, out: dtypes.append(out.dtype))
             for mod in m.modules() if isinstance(mod, ConvLReLU)]
    with emulate_bf16_kernels(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fast = fuse(vis, ir, model=m, amp=True)
    for h in hooks:
        h.remove()
    assert {e.name for e in prof.events()} & {'mkldnn::_convolution_pointwise', 'mkldnn::_linear_pointwise'}
    assert set(dtypes) <= {torch.bfloat16}  # the MTH's conv layers hand bf16 maps on
    with torch.backends.mkldnn.flags(enabled=False):
        ref = fuse(vis, ir, model=m, amp=True)
    d = (fast - ref).abs()
    assert d.max().item() <= 2 / 255 and d.mean().item() <= 0.2 / 255


def _stem_names(model):
    return [f'backbone.{n}' for n in model.backbone.first_conv]


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_stem_convs_read_the_image_in_fp32_under_bf16_autocast(name):
    """The layers that read the images (each backbone's ``first_conv``) run in fp32 under bf16
    autocast (``_fast.image_layer``): rounding the image to bf16 cost the published mtvif_iii up
    to 6.3/255 on MSRS pair 00085D (2.0/255 with fp32 stems). Every other conv but the
    image-writing output conv (``output_convs``, fp32 too) stays under autocast."""
    torch.manual_seed(0)
    m = create_model(name).eval()
    _fast.set_fast_path(m, False)  # the plain path calls the modules (hooks see them)
    stems = _stem_names(m)
    seen = {}

    def hook(mod_name):
        def pre(mod, args):
            seen.setdefault(mod_name, []).append((args[0].dtype, torch.is_autocast_enabled('cpu')))
        return pre
    for n, mod in m.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_pre_hook(hook(n))
    vis, ir = _rand(h=32, w=32)
    ir = ir.expand(-1, 3, -1, -1)  # the models take the grey infrared broadcast to 3 channels
    with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16):
        fused = m(vis, ir)
    assert fused.shape == (1, 3, 32, 32)
    for n in stems:
        assert seen[n] and all(s == (torch.float32, False) for s in seen[n]), (n, seen.get(n))
    for n in m.output_convs:
        assert seen[n] and all(s == (torch.float32, False) for s in seen[n]), (n, seen.get(n))
    others = [s for n, calls in seen.items() if n not in stems and n not in m.output_convs for s in calls]
    assert others and all(on for _, on in others)


@pytest.mark.parametrize('name', ['mtvif_iii', 'seafusion'])
def test_fast_path_stems_are_fp32_under_emulated_bf16(name):
    """The fast path (oneDNN kernels, emulated bf16 here): SeAFusion's first feature level, ``cat``
    of the two stem convs + LeakyReLU, is bitwise the fp32 one."""
    torch.manual_seed(0)
    m = create_model(name).eval()
    vis, ir = _rand(h=32, w=32)
    ir = ir.expand(-1, 3, -1, -1)
    with torch.inference_mode():
        ref = m.backbone.forward_intermediates(vis, ir)[1][0]
        with _fast.emulate_bf16_kernels(), torch.autocast('cpu', torch.bfloat16):
            got = m.backbone.forward_intermediates(vis, ir)[1][0]
    assert got.dtype == torch.float32 and torch.equal(got, ref)
