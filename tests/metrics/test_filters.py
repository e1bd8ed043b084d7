"""The CPU filter kernels behind the metrics equal the plain definitions they replace."""
import numpy as np
import pytest
import torch

from mtvif_zoo.metrics._filters import banded_moments, correlate_valid, gaussian_taps, uniform_valid_float32


def _direct(x: torch.Tensor, th, tw) -> torch.Tensor:
    """'valid' correlation by explicit shifted sums (float64)."""
    H, W = x.shape[-2:]
    kh, kw = len(th), len(tw)
    out = torch.zeros(*x.shape[:-2], H - kh + 1, W - kw + 1, dtype=torch.float64)
    for i, a in enumerate(th):
        for j, b in enumerate(tw):
            out += a * b * x[..., i:i + H - kh + 1, j:j + W - kw + 1]
    return out


@pytest.mark.parametrize('k', [3, 5, 9, 17])
def test_strided_correlation_is_every_second_output(k):
    g = torch.Generator().manual_seed(k)
    x = torch.rand(2, 1, 61, 83, generator=g, dtype=torch.float64) * 255
    taps = gaussian_taps(k, k / 5.0)
    got = correlate_valid(x, taps, stride=2)
    want = _direct(x, taps, taps)[..., ::2, ::2]
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize('rows', [1, 7, 40])
def test_banded_gaussian_moments_equal_whole_image_filters(rows):
    g = torch.Generator().manual_seed(rows)
    y, a, b = (torch.randint(0, 256, (37, 53), generator=g).double() for _ in range(3))
    taps = gaussian_taps(11, 1.5)
    bands = [(r0, z.clone()) for r0, z in banded_moments(y, [a, b], taps, rows)]  # z: reused buffer
    Z = torch.cat([z for _, z in bands])          # Ho x 8 x Wo
    assert [r0 for r0, _ in bands] == list(range(0, 27, rows))
    planes = [y, y * y, a, a * a, a * y, b, b * b, b * y]
    for p, plane in enumerate(planes):
        assert torch.allclose(Z[:, p], _direct(plane, taps, taps), rtol=1e-13, atol=1e-9), p


@pytest.mark.parametrize('W', [53, 2100])
def test_banded_uniform_float32_is_bitwise_scipy(W):
    """Integer planes: the cumsum box filter gives exactly scipy's float32 uniform_filter sums,
    also on rows wider than one exact-cumsum chunk (1024 columns)."""
    g = torch.Generator().manual_seed(W)
    y, a = (torch.randint(0, 256, (15, W), generator=g).double() for _ in range(2))
    y[0, :] = 255  # the largest squares
    Z = torch.cat([z.clone() for _, z in banded_moments(y, [a], 7, 4, uniform_float32=True)])
    assert Z.dtype == torch.float32
    for p, plane in enumerate([y, y * y, a, a * a, a * y]):
        assert torch.equal(Z[:, p], uniform_valid_float32(plane, 7)), p
    ndimage = pytest.importorskip('scipy.ndimage')
    ref = ndimage.uniform_filter((y * y).numpy().astype(np.float32), 7)[3:-3, 3:-3]
    assert np.array_equal(Z[:, 1].numpy(), ref)


def test_avg_pool2_is_avg_pool2d_bit_for_bit():
    """MS-SSIM's 2x2 downsampling: the four-term sum equals pytorch_msssim's avg_pool2d exactly."""
    import torch.nn.functional as F

    from mtvif_zoo.metrics.functional import _avg_pool2
    g = torch.Generator().manual_seed(0)
    for shape in ((1, 1, 48, 64), (2, 3, 30, 40), (1, 1, 31, 40), (1, 1, 30, 41)):
        x = torch.rand(shape, generator=g, dtype=torch.float64) * 255
        ref = F.avg_pool2d(x, kernel_size=2, padding=[s % 2 for s in shape[2:]])
        assert torch.equal(_avg_pool2(x), ref), shape
