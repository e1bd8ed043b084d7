"""Equalities with the maintained reference implementations named in DESIGN.md.

VIF == piq.vif_p, MS-SSIM == pytorch_msssim.ms_ssim(data_range=255), SSIM == scikit-image
(Wang's settings, and the 0.19 float defaults of the paper convention), dE == scikit-image
CIEDE2000 and Sharma's 34 published pairs, MI == sklearn, Lab == skimage.color.rgb2lab.
"""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from mtvif_zoo.metrics import (
    ciede2000,
    delta_e,
    gray_matlab,
    ms_ssim,
    ms_ssim_pair,
    mutual_information_pair,
    rgb_to_lab,
    ssim_pair,
    vif,
    vif_pair,
)

HERE = Path(__file__).resolve().parent
DATA = Path(__file__).resolve().parents[2].parent / 'shared' / 'data'


def _texture(seed: int, shape=(2, 1, 190, 230), flat=True) -> torch.Tensor:
    """Image-like 0..255 integers: smoothed noise + edges, with a constant patch (flat-region branches)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    k = torch.ones(1, 1, 5, 5, dtype=torch.float64) / 25
    sm = torch.nn.functional.conv2d(x.reshape(-1, 1, *shape[2:]), k, padding=2).reshape(shape)
    img = 255 * (0.6 * sm + 0.4 * x)
    img[..., 40:80, 100:160] = 255 * (sm[..., 40:80, 100:160] > 0.5)  # hard edges
    if flat:
        img[..., 120:170, 20:90] = 77.0
    return img.round().clamp(0, 255)


def _real_gray_pair():
    d = DATA / 'tno25'
    if not d.is_dir():
        return None
    from mtvif_zoo.metrics import to_metric_tensor
    v = gray_matlab(to_metric_tensor(d / 'vi' / '19.png'), uint8_input=True)[None]
    i = gray_matlab(to_metric_tensor(d / 'ir' / '19.png'), uint8_input=True)[None]
    return v, i


def _pairs():
    out = [(_texture(1), _texture(2))]
    real = _real_gray_pair()
    if real is not None:
        v, i = real
        out.append((v, ((v + i) / 2).round()))
    return out


def test_vif_equals_piq_vif_p():
    piq = pytest.importorskip('piq')
    for ref, dist in _pairs():
        ours = vif_pair(ref, dist)
        theirs = piq.vif_p(dist, ref, data_range=255.0, reduction='none')  # piq: (distorted, reference)
        assert torch.allclose(ours, theirs.to(ours.dtype), rtol=0, atol=1e-5), (ours, theirs)
    # constant reference: CDDFuse's 0/0 rule gives 1, like piq's (0 + eps) / (0 + eps)
    c = torch.full((1, 1, 64, 64), 90.0, dtype=torch.float64)
    assert float(vif_pair(c, _texture(3, (1, 1, 64, 64)))) == 1.0
    assert float(piq.vif_p(_texture(3, (1, 1, 64, 64)), c, data_range=255.0)) == pytest.approx(1.0)


def test_ms_ssim_equals_pytorch_msssim():
    pm = pytest.importorskip('pytorch_msssim')
    for x, y in _pairs():
        ours = ms_ssim_pair(x, y)
        theirs = pm.ms_ssim(x, y, data_range=255, size_average=False)
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-5), (ours, theirs)
    x, y = _texture(4, (1, 3, 171, 199)), _texture(5, (1, 3, 171, 199))  # odd sizes: zero-padded pooling
    assert torch.allclose(ms_ssim_pair(x, y), pm.ms_ssim(x, y, data_range=255, size_average=False), atol=1e-5)
    # the fusion form is the sum over the two sources
    f = ((x + y) / 2).round()
    both = ms_ssim(f, x, y)
    assert torch.allclose(both, pm.ms_ssim(x, f, data_range=255, size_average=False)
                          + pm.ms_ssim(y, f, data_range=255, size_average=False), atol=2e-5)
    with pytest.raises(ValueError, match='> 160'):
        ms_ssim_pair(x[..., :160, :], y[..., :160, :])


def test_ssim_equals_skimage_in_both_settings():
    sk = pytest.importorskip('skimage.metrics')
    for x, y in _pairs():
        for b in range(x.shape[0]):
            xa, ya = x[b, 0].numpy(), y[b, 0].numpy()
            # Wang et al. 2004 (the VIFB window): Gaussian 1.5, population covariance, L = 255
            wang = sk.structural_similarity(xa, ya, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                            data_range=255)
            ours = float(ssim_pair(x[b:b + 1], y[b:b + 1]))
            assert ours == pytest.approx(wang, abs=1e-12)
            # scikit-image 0.19 defaults on float32 input (CDDFuse, the paper convention)
            x32, y32 = xa.astype(np.float32), ya.astype(np.float32)
            ref = sk.structural_similarity(x32, y32, data_range=2)
            ours = float(ssim_pair(x[b:b + 1], y[b:b + 1], window='uniform', win_size=7, data_range=2,
                                   border='reflect_crop', sample_covariance=True, dtype='float32'))
            assert ours == pytest.approx(ref, abs=1e-12)


def test_mutual_information_equals_sklearn():
    skm = pytest.importorskip('sklearn.metrics')
    for x, y in _pairs():
        for b in range(x.shape[0]):
            ref = skm.mutual_info_score(x[b, 0].numpy().ravel(), y[b, 0].numpy().ravel())
            ours = float(mutual_information_pair(x[b:b + 1], y[b:b + 1], quantization='round'))
            assert ours == pytest.approx(ref, abs=1e-12)


def test_ciede2000_sharma_pairs():
    rows = [r for r in csv.reader(l for l in open(HERE / 'data' / 'ciede2000_sharma.csv') if not l.startswith('#'))]
    header, rows = rows[0], rows[1:]
    assert header == ['pair', 'L1', 'a1', 'b1', 'L2', 'a2', 'b2', 'dE00'] and len(rows) == 34
    t = torch.tensor([[float(v) for v in r[1:]] for r in rows], dtype=torch.float64)
    de = ciede2000(t[:, 0:3], t[:, 3:6], dim=-1)
    assert torch.allclose(de, t[:, 6], rtol=0, atol=1e-4), (de - t[:, 6]).abs().max()
    assert torch.allclose(ciede2000(t[:, 3:6], t[:, 0:3], dim=-1), t[:, 6], atol=1e-4)  # symmetric


def test_rgb_to_lab_and_delta_e_equal_skimage():
    color = pytest.importorskip('skimage.color')
    f, v = _texture(7, (2, 3, 60, 70), flat=False), _texture(8, (2, 3, 60, 70), flat=False)
    f[0, :, :5, :5] = 0  # black and exact greys (a = b = 0 hue branches)
    v[0, :, :5, :5] = 0
    f[1, :, :5, :5] = 128
    lab = rgb_to_lab(f)
    ref = color.rgb2lab(f.permute(0, 2, 3, 1).numpy() / 255.0)
    assert np.abs(lab.permute(0, 2, 3, 1).numpy() - ref).max() < 1e-10
    for b in range(2):
        want = color.deltaE_ciede2000(color.rgb2lab(f[b].permute(1, 2, 0).numpy() / 255.0),
                                      color.rgb2lab(v[b].permute(1, 2, 0).numpy() / 255.0)).mean()
        assert float(delta_e(f[b:b + 1], v[b:b + 1])) == pytest.approx(want, abs=1e-10)
    assert float(delta_e(f[:1], f[:1])) == 0.0


def test_vif_fusion_form_is_sum_of_two_vifp():
    a, b = _texture(9), _texture(10)
    f = ((a + b) / 2).round()
    assert torch.allclose(vif(f, a, b), vif_pair(a, f) + vif_pair(b, f), atol=1e-12)
    assert torch.allclose(vif(f, a, b, combine='mean'), (vif_pair(a, f) + vif_pair(b, f)) / 2, atol=1e-12)


def test_matlab_rgb2gray_values():
    """MATLAB: rgb2gray(uint8([255 0 0])) = 76, green 150, blue 29, and half-away rounding."""
    px = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [1, 1, 1]], dtype=torch.float64)
    g = gray_matlab(px.T.reshape(3, 1, 5), uint8_input=True).flatten()
    assert g.tolist() == [76.0, 150.0, 29.0, 128.0, 1.0]
    assert float(gray_matlab(px[:1].T.reshape(3, 1, 1), uint8_input=False)) == pytest.approx(76.22868543, abs=1e-8)
