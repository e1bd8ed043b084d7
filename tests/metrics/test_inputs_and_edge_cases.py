"""Bad and unusual input: documented, tested results or clear errors -- never an unexplained NaN."""
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import mtvif_zoo.metrics.functional as Fm
from mtvif_zoo.metrics import (
    CONVENTIONS,
    METRICS,
    PAPER,
    Convention,
    UnreadableImageError,
    compute,
    compute_batch,
    get_convention,
    gray_cv2,
    gray_matlab,
    resolve_metrics,
    to_metric_tensor,
)


def _img(seed, shape=(170, 180, 3)):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=shape).astype(np.float64)
    # a little structure: blocks of constant value and a gradient
    x[20:60, 30:90] = 40
    x[100:, :] = np.linspace(0, 255, shape[1])[None, :, None] if x.ndim == 3 else np.linspace(0, 255, shape[1])[None]
    return x.astype(np.uint8)


@pytest.fixture(scope='module')
def triple():
    vis = _img(1)
    ir = _img(2, (170, 180))
    fused = ((vis.astype(np.uint16) + ir[..., None] + 1) // 2).astype(np.uint8)
    return fused, vis, ir


@pytest.mark.parametrize('conv', ['vifb', 'paper'])
def test_all_keys_in_order_and_finite(triple, conv):
    out = compute(*triple, convention=conv)
    assert list(out) == list(METRICS) == ['EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'MS_SSIM', 'dE', 'SD', 'SF', 'AG',
                                          'SCD', 'PSNR', 'MSS']
    assert all(math.isfinite(v) for v in out.values()), out
    assert list(compute(*triple, metrics=['ssim', 'MS-SSIM', 'en'], convention=conv)) == ['EN', 'SSIM', 'MS_SSIM']


def test_metric_and_convention_names():
    assert resolve_metrics('en, q_abf,ΔE') == ['EN', 'Qabf', 'dE']
    with pytest.raises(ValueError, match='unknown metric'):
        resolve_metrics(['EN', 'FMI'])
    with pytest.raises(ValueError, match='unknown metric convention'):
        get_convention('matlab')
    assert get_convention('VIFB') is CONVENTIONS['vifb']
    with pytest.raises(ValueError, match='mi_quantization'):
        Convention(name='x', description='', colour='gray', gray='cv2', gray_round=True, mi_quantization='bins')
    d = PAPER.as_dict()
    assert d['ssim_data_range'] == 2.0 and d['ssim_win_size'] == 7 and d['mi_log_base'] == pytest.approx(math.e)


@pytest.mark.parametrize('conv', ['vifb', 'paper'])
def test_constant_images(conv):
    """Zero variance: EN 0, MI 0 (defined), SSIM finite (2 for three equal constants), VIF 1 per
    textureless source, SCD 0, PSNR inf (identical), dE 0. Qabf: the references' zero-padded Sobel
    sees the image border as an edge, perfectly preserved: Tg * Ta / (1 + exp(-22 * 0.2)); with no
    gradient at all (all-zero images) it is 0."""
    c = np.full((170, 180, 3), 100, np.uint8)
    out = compute(c, c, c, convention=conv)
    assert out['EN'] == 0.0 and out['MI'] == 0.0 and out['SD'] == 0.0 and out['SF'] == 0.0 and out['AG'] == 0.0
    assert out['SSIM'] == pytest.approx(2.0) and out['MS_SSIM'] == pytest.approx(2.0)
    assert out['VIF'] == 2.0 and out['SCD'] == 0.0 and out['dE'] == 0.0
    assert out['Qabf'] == pytest.approx(0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2)), abs=1e-12)
    assert out['PSNR'] == math.inf
    z = np.zeros((170, 180, 3), np.uint8)
    assert compute(z, z, z, metrics=['Qabf'], convention=conv)['Qabf'] == 0.0
    # a constant fused image against textured sources: all finite, no NaN
    v, i = _img(3), _img(4, (170, 180))
    out = compute(c, v, i, convention=conv)
    assert all(math.isfinite(x) for x in out.values()), out
    assert (out['EN'] == 0.0 and out['MI'] == pytest.approx(0.0, abs=1e-12)
            and out['VIF'] == pytest.approx(0.0, abs=1e-9))
    assert 0 < out['SSIM'] < 1.5


def test_size_mismatch_is_a_clear_error(triple):
    fused, vis, ir = triple
    with pytest.raises(ValueError, match=r'fused image is 179x170 \(WxH\) but the visible image is 180x170'):
        compute(fused[:, :179], vis, ir)
    with pytest.raises(ValueError, match='infrared'):
        compute(fused, vis, ir[:160])


def test_grey_and_colour_mixes_vifb(triple):
    fused, vis, ir = triple
    f, v, i = (to_metric_tensor(x)[None] for x in (fused, vis, ir))
    # VIFB's grey-infrared branch: the grey channel is reused for every colour channel
    a = compute_batch(f, v, i, None, 'vifb')
    b = compute_batch(f, v, i.expand(-1, 3, -1, -1), None, 'vifb')
    for k in METRICS:
        assert torch.allclose(a[k], b[k], atol=1e-12), k
    # grey fused with colour sources: sources through MATLAB rgb2gray, rounded (uint8 path) for MI and
    # SSIM, unrounded (double path) for Qabf
    fg = gray_matlab(f, uint8_input=True)
    mixed = compute_batch(fg, v, i, ['MI', 'SSIM', 'Qabf'], 'vifb')
    vr, vx = gray_matlab(v, uint8_input=True), gray_matlab(v, uint8_input=False)
    assert torch.allclose(mixed['MI'], Fm.mutual_information(fg, vr, i), atol=1e-12)
    assert torch.allclose(mixed['SSIM'], Fm.ssim(fg, vr, i), atol=1e-12)
    assert torch.allclose(mixed['Qabf'], Fm.qabf(fg, vx, i), atol=1e-12)


def test_grey_and_colour_mixes_paper(triple):
    """Paper convention: every image goes through cv2 grey; a grey image gives the same numbers as
    its RGB version. dE still compares colour (a grey fused image is charged for lost colour)."""
    fused, vis, ir = triple
    f, v, i = (to_metric_tensor(x)[None] for x in (fused, vis, ir))
    rgb = compute_batch(f, v, i, None, 'paper')
    grey = compute_batch(gray_cv2(f), v, gray_cv2(i.expand(-1, 3, -1, -1)), None, 'paper')
    for k in METRICS:
        if k != 'dE':
            assert torch.allclose(rgb[k], grey[k], atol=1e-12), k
    assert float(grey['dE']) > float(rgb['dE']) * 0.5 and float(grey['dE']) > 0


@pytest.mark.parametrize('conv', ['vifb', 'paper'])
def test_16bit_inputs(triple, conv, tmp_path):
    """uint16 is rescaled by 255/65535: v * 257 gives exactly the 8-bit image's metrics; 16-bit PNGs too."""
    fused, vis, ir = triple
    ref = compute(fused, vis, ir, convention=conv)
    got = compute(fused.astype(np.uint16) * 257, vis.astype(np.uint16) * 257, ir.astype(np.uint16) * 257,
                  convention=conv)
    for k in METRICS:
        assert got[k] == pytest.approx(ref[k], abs=1e-9), k
    p = tmp_path / 'ir16.png'
    Image.fromarray(ir.astype(np.uint16) * 257).save(p)
    assert Image.open(p).mode.startswith('I')
    assert torch.equal(to_metric_tensor(p), to_metric_tensor(ir))
    # a genuinely 16-bit image (not a multiple of 257): finite, documented float scale
    ir16 = (np.arange(170 * 180, dtype=np.uint16).reshape(170, 180) * 2)
    t = to_metric_tensor(ir16)
    assert float(t.max()) == pytest.approx(float(ir16.max()) * 255 / 65535)
    assert all(math.isfinite(x) for x in compute(fused, vis, ir16, convention=conv).values())


def test_float_inputs_and_data_range(triple):
    fused, vis, ir = triple
    ref = compute(fused, vis, ir)
    f01 = torch.from_numpy(fused).permute(2, 0, 1).float() / 255
    got = compute(f01, vis, ir, data_range=1.0)
    assert got['SSIM'] == pytest.approx(ref['SSIM'], abs=1e-6)
    with pytest.warns(UserWarning, match='data_range=1.0'):
        to_metric_tensor(f01)
    with pytest.raises(ValueError, match='NaN or inf'):
        to_metric_tensor(torch.full((3, 8, 8), float('nan')))
    with pytest.raises(ValueError, match='explicit data_range'):
        to_metric_tensor(np.zeros((8, 8), np.int32))
    assert to_metric_tensor(np.zeros((8, 8, 4), np.uint8)).shape == (3, 8, 8)  # alpha dropped


def test_unreadable_and_missing_files(tmp_path, triple):
    bad = tmp_path / 'broken.png'
    bad.write_bytes(b'not an image')
    with pytest.raises(UnreadableImageError, match='broken.png'):
        to_metric_tensor(bad)
    with pytest.raises(FileNotFoundError, match='nowhere.png'):
        compute(tmp_path / 'nowhere.png', *triple[1:])


def test_small_images_ms_ssim_error_or_explained_nan():
    x = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match='MS-SSIM needs both image sides > 160'):
        compute(x, x, x, metrics=['MS_SSIM'])
    with pytest.warns(RuntimeWarning, match='MS_SSIM set to NaN: MS-SSIM needs'):
        out = compute(x, x, x, on_error='nan')
    assert math.isnan(out['MS_SSIM']) and math.isnan(out['MSS'])
    assert all(math.isfinite(v) for k, v in out.items() if k not in ('MS_SSIM', 'MSS', 'PSNR'))


@pytest.mark.parametrize('conv', ['vifb', 'paper'])
def test_tiled_cpu_path_equals_whole_tensor_path(triple, conv, monkeypatch):
    """CUDA runs the whole-tensor path; on CPU the same numbers come from the row-tiled kernels."""
    f, v, i = (to_metric_tensor(x)[None] for x in triple)
    f = torch.cat([f, f.flip(-1)])
    tiled = compute_batch(f, v, i, None, conv)
    monkeypatch.setattr(Fm, 'TILE_ELEMENTS', 0)
    whole = compute_batch(f, v, i, None, conv)
    for k in METRICS:
        assert torch.allclose(tiled[k], whole[k], rtol=1e-12, atol=1e-12), (k, tiled[k], whole[k])


def test_qabf_equal_gradient_quirk_and_scale():
    """Both references set G = g_F where g_S == g_F (not 1): with unit gradients that differs from 1,
    so VIFB's x255 scaling (G = 255 g) changes Qabf while any other scaling does not."""
    x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    x[..., :, 6:] = 1.0  # a step of height 1: Sobel magnitudes of 4 and 3 (corners)
    f = x.clone()
    f[..., 0, :] = 0     # differ a little so that not every gradient is equal
    q1 = float(Fm.qabf(f, x, x, gradient_scale=1.0))
    q255 = float(Fm.qabf(f, x, x, gradient_scale=255.0))
    assert q1 != q255
    assert float(Fm.qabf(f * 3, x * 3, x * 3, gradient_scale=85.0)) == pytest.approx(q255, abs=1e-12)
    # against the definition, pixel by pixel (VIFB metricsQabf.m loops) on a random image
    rng = np.random.default_rng(5)
    a, b, F_ = (rng.integers(0, 256, (9, 11)).astype(float) for _ in range(3))
    assert float(Fm.qabf(*(torch.from_numpy(z)[None, None] for z in (F_, a, b)), gradient_scale=1.0)) == \
        pytest.approx(_qabf_loops(F_, a, b), abs=1e-12)


def _qabf_loops(F_, A, B):
    from scipy.signal import convolve2d
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])

    def ga(p):
        sx, sy = convolve2d(p, h3, 'same'), convolve2d(p, h1, 'same')
        g = np.sqrt(sx ** 2 + sy ** 2)
        a = np.zeros_like(p)
        for i in range(p.shape[0]):
            for j in range(p.shape[1]):
                a[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return g, a

    (gA, aA), (gB, aB), (gF, aF) = ga(A), ga(B), ga(F_)

    def q(gs, as_):
        out = np.zeros_like(gs)
        for i in range(gs.shape[0]):
            for j in range(gs.shape[1]):
                G = (gF[i, j] / gs[i, j] if gs[i, j] > gF[i, j]
                     else (gF[i, j] if gs[i, j] == gF[i, j] else gs[i, j] / gF[i, j]))
                A_ = 1 - abs(as_[i, j] - aF[i, j]) / (math.pi / 2)
                out[i, j] = 0.9994 / (1 + math.exp(-15 * (G - 0.5))) * 0.9879 / (1 + math.exp(-22 * (A_ - 0.8)))
        return out
    return float(np.sum(q(gA, aA) * gA + q(gB, aB) * gB) / np.sum(gA + gB))


def test_no_warnings_from_degenerate_arithmetic():
    c = np.zeros((170, 180), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = compute(c, c, c, convention='vifb', metrics=[m for m in METRICS if m != 'PSNR'])
    assert not any(math.isnan(v) for v in out.values())


def test_gray_cv2_uint8_tables_match_float_path_for_all_colours():
    """The uint8 grey conversion (lookup tables) equals the float32-FMA emulation bit for bit, for
    every one of the 2^24 colours and every grey level, rounded or not."""
    codes = torch.arange(1 << 24, dtype=torch.int32)
    for part in codes.split(1 << 22):
        rgb = torch.stack([(part >> 16) & 255, (part >> 8) & 255, part & 255]).to(torch.uint8).view(1, 3, 1024, -1)
        for rnd in (True, False):
            assert torch.equal(gray_cv2(rgb, round_result=rnd), gray_cv2(rgb.double(), round_result=rnd))
    grey = torch.arange(256, dtype=torch.uint8).repeat(16).view(1, 1, 64, 64)
    for rnd in (True, False):
        assert torch.equal(gray_cv2(grey, round_result=rnd), gray_cv2(grey.double(), round_result=rnd))


@pytest.mark.parametrize('conv', ['vifb', 'paper'])
def test_uint8_batches_equal_float_batches(triple, conv):
    """compute_batch's 8-bit fast paths (uint8 tensors) give exactly the float64 results: RGB and
    grey fused images, a batch sharing its batch-1 sources, and a mix of uint8 and float inputs."""
    fused, vis, ir = triple
    u8 = [to_metric_tensor(x, keep_uint8=True)[None] for x in (fused, vis, ir)]
    f64 = [to_metric_tensor(x)[None] for x in (fused, vis, ir)]
    assert [t.dtype for t in u8] == [torch.uint8] * 3 and [t.dtype for t in f64] == [torch.float64] * 3
    grey_f = torch.from_numpy(np.ascontiguousarray(fused[..., 1]))[None, None]
    cases = [(u8, f64),
             ([torch.cat([u8[0], u8[0].flip(-1)]), u8[1], u8[2]],
              [torch.cat([f64[0], f64[0].flip(-1)]), f64[1], f64[2]]),
             ([grey_f, u8[1], u8[2]], [grey_f.double(), f64[1], f64[2]]),
             ([u8[0], f64[1], u8[2]], f64)]
    for a, b in cases:
        ra, rb = compute_batch(*a, None, conv), compute_batch(*b, None, conv)
        for k in METRICS:
            assert torch.equal(ra[k], rb[k]), (k, ra[k], rb[k])
    # compute() keeps 8-bit files as uint8 and gives the same numbers as float input
    assert compute(*triple, convention=conv) == {k: float(v[0]) for k, v in compute_batch(*f64, None, conv).items()}
    with pytest.raises(TypeError, match='boolean'):
        compute_batch(u8[0] > 0, u8[1], u8[2])


def test_qabf_orientation_is_pi_half_wherever_sx_is_zero():
    """atan(Sy/Sx) with pi/2 where Sx == 0, whatever the sign of Sy (also 0/0), as the references
    set it; the fast path maps NaN / +-inf quotients to +inf instead of a masked fill."""
    rows = torch.arange(10, dtype=torch.float64)[:, None].expand(10, 10)
    for img in (rows, -rows + 9, torch.zeros(10, 10, dtype=torch.float64)):  # Sy > 0, Sy < 0, Sy = 0
        p = Fm._zero_pad1(img[None, None])
        sx, sy = Fm._sobel_padded(p)
        _, ang = Fm._grad_angle(p)
        zero = sx == 0
        assert zero.any()
        assert torch.equal(ang[zero], torch.full_like(ang[zero], math.pi / 2))
        assert torch.equal(ang[~zero], torch.atan(sy[~zero] / sx[~zero]))
    rng = np.random.default_rng(7)
    a, b, F_ = (rng.integers(0, 3, (9, 11)).astype(float) for _ in range(3))  # many Sx == 0, Sy < 0
    assert float(Fm.qabf(*(torch.from_numpy(z)[None, None] for z in (F_, a, b)), gradient_scale=1.0)) == \
        pytest.approx(_qabf_loops(F_, a, b), abs=1e-12)
