"""Every loss term of Sec. 3.4 on small hand-computed tensors (3-channel and 1-channel modes)."""
import math

import pytest
import torch

from mtvif_zoo.losses import (
    LossWeights,
    MultiTaskVIFLoss,
    color_loss,
    dice_loss,
    gradient_loss,
    intensity_loss,
    segmentation_loss,
    sobel_gradient,
    ssim,
    ssim_loss,
)

C1, C2 = 0.01 ** 2, 0.03 ** 2


def _img(values, c=1):
    t = torch.tensor(values, dtype=torch.float32)
    return t.expand(1, c, *t.shape).clone()


def test_intensity_is_mean_abs_to_elementwise_max():
    f = _img([[0., 0.], [0., 0.]])
    vis = _img([[.2, .4], [.6, .8]])
    ir = _img([[.5, .1], [.7, .3]])
    # max = .5 .4 .7 .8 -> mean .6
    assert intensity_loss(f, vis, ir).item() == pytest.approx(0.6)
    assert intensity_loss(torch.maximum(vis, ir), vis, ir).item() == 0


def test_sobel_of_a_delta_is_the_abs_kernel_sum():
    x = _img([[0., 0., 0.], [0., 1., 0.], [0., 0., 0.]])
    # |gx| = [[1,0,1],[2,0,2],[1,0,1]], |gy| its transpose
    expected = torch.tensor([[2., 2., 2.], [2., 0., 2.], [2., 2., 2.]])
    assert torch.equal(sobel_gradient(x)[0, 0], expected)
    ramp = _img([[0., 1., 2.]] * 3)  # interior: |(-1)(0) + (1)(-2)... | = 2 * (1 + 2 + 1) = 8
    assert sobel_gradient(ramp)[0, 0, 1, 1].item() == 8
    two = torch.cat((x, ramp), 1)  # depthwise: channels do not mix
    assert torch.equal(sobel_gradient(two)[:, 1], sobel_gradient(ramp)[:, 0])


def test_gradient_loss_against_max_of_gradients():
    delta = _img([[0., 0., 0.], [0., 1., 0.], [0., 0., 0.]])
    zero = torch.zeros_like(delta)
    assert gradient_loss(zero, delta, zero).item() == pytest.approx(16 / 9)
    assert gradient_loss(zero, zero, delta).item() == pytest.approx(16 / 9)
    assert gradient_loss(delta, delta, zero).item() == 0
    # |grad F - max| where grad F = 2 * pattern: mean |4 - 2| over the 8 border pixels
    assert gradient_loss(2 * delta, delta, 0.5 * delta).item() == pytest.approx(16 / 9)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.5, 0.25
    x = torch.full((1, 3, 11, 11), a)
    y = torch.full((1, 3, 11, 11), b)
    s = (2 * a * b + C1) / (a * a + b * b + C1)
    assert ssim(x, y, reduction='mean').item() == pytest.approx(s, rel=1e-5)
    assert ssim(x, y).shape == (1, 3)
    # L_ssim(F = vis) = 0.5 (1 - SSIM(F, IR)) + 0
    assert ssim_loss(x, x, y).item() == pytest.approx(0.5 * (1 - s), rel=1e-4)
    assert ssim_loss(x, y, x).item() == pytest.approx(0.5 * (1 - s), rel=1e-4)


def test_ssim_identity_and_structure():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    assert ssim(x, x, reduction='mean').item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, 1 - x, reduction='mean').item() < 0  # anti-correlated structure
    assert ssim_loss(x, x, x).item() == pytest.approx(0.0, abs=1e-5)


def test_ssim_matches_pytorch_msssim_when_installed():
    pm = pytest.importorskip('pytorch_msssim')
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 24, 24, generator=g), torch.rand(2, 3, 24, 24, generator=g)
    assert ssim(x, y, reduction='mean').item() == pytest.approx(pm.ssim(x, y, data_range=1.0).item(), abs=1e-5)


def test_color_loss_on_cb_cr_only():
    red = torch.tensor([1., 0., 0.]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    black = torch.zeros(1, 3, 2, 2)
    # Y(red) = .299; Cb: |0.564 * (0 - .299)|, Cr: |0.713 * (1 - .299)|
    expected = (0.564 * 0.299 + 0.713 * 0.701) / 2
    assert color_loss(red, black).item() == pytest.approx(expected, rel=1e-5)
    grey = torch.full((1, 3, 2, 2), 0.7)  # same chroma as black (Cb = Cr = .5), different Y
    assert color_loss(grey, black).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match='1-channel'):
        color_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_dice_and_ce_hand_computed():
    logits = torch.zeros(1, 2, 2, 2)  # p = 0.5 everywhere
    labels = torch.tensor([[[0, 0], [0, 1]]])
    # class 0: 2 * 1.5 / (2 + 3) = .6 ; class 1: 2 * .5 / (2 + 1) = 1/3
    assert dice_loss(logits, labels).item() == pytest.approx(1 - (0.6 + 1 / 3) / 2, rel=1e-5)
    ce, dice = segmentation_loss(logits, labels)
    assert ce.item() == pytest.approx(math.log(2), rel=1e-6)
    perfect = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float() * 100
    assert dice_loss(perfect, labels).item() == pytest.approx(0.0, abs=1e-5)


def test_dice_is_per_image_then_batch_mean_and_ignores_index():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    labels = torch.randint(0, 3, (2, 4, 4), generator=g)
    both = dice_loss(logits, labels)
    each = (dice_loss(logits[:1], labels[:1]) + dice_loss(logits[1:], labels[1:])) / 2
    assert both.item() == pytest.approx(each.item(), rel=1e-6)
    # an ignored pixel counts in neither CE nor Dice
    lab = torch.tensor([[[0, 0], [0, 255]]])
    z = torch.zeros(1, 2, 2, 2)
    ce, dice = segmentation_loss(z, lab, ignore_index=255)
    assert ce.item() == pytest.approx(math.log(2))
    # class 0: 2 * 1.5 / (1.5 + 3) = 2/3 ; class 1: 0 / 1.5 = 0
    assert dice.item() == pytest.approx(1 - (2 / 3) / 2, rel=1e-5)


def test_total_weights_and_terms_three_channel():
    g = torch.Generator().manual_seed(0)
    f, vis, ir = (torch.rand(2, 3, 12, 12, generator=g) for _ in range(3))
    ir = ir[:, :1].expand(-1, 3, -1, -1)
    logits, labels = torch.randn(2, 9, 12, 12, generator=g), torch.randint(0, 9, (2, 12, 12), generator=g)
    out = MultiTaskVIFLoss()(f, vis, ir, logits, labels)
    t = out.terms
    assert set(t) == {'total', 'fusion', 'int', 'grad', 'ssim', 'color', 'seg', 'ce', 'dice'}
    fusion = 20 * t['int'] + 20 * t['grad'] + 10 * t['ssim'] + 20 * t['color']
    assert t['fusion'].item() == pytest.approx(fusion.item(), rel=1e-6)
    assert t['seg'].item() == pytest.approx((t['ce'] + t['dice']).item(), rel=1e-6)
    assert out.total.item() == pytest.approx((fusion + t['seg']).item(), rel=1e-6)
    w = LossWeights(beta1=0.5, beta2=2, lambda1=1, lambda2=2, lambda3=3, lambda4=4)
    out2 = MultiTaskVIFLoss(w)(f, vis, ir, logits, labels)
    t2 = out2.terms
    expected = 0.5 * (t['int'] + 2 * t['grad'] + 3 * t['ssim'] + 4 * t['color']) + 2 * t['seg']
    assert out2.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert t2['int'].item() == t['int'].item()  # terms are logged unweighted


def test_one_channel_mode_skips_colour_and_model_without_seg_skips_seg():
    vis = _img([[.2, .4], [.6, .8]])
    ir = _img([[.5, .1], [.7, .3]])
    f = torch.zeros_like(vis, requires_grad=True)
    out = MultiTaskVIFLoss()(f, vis, ir)
    assert 'color' not in out.terms and 'seg' not in out.terms and out.seg is None
    t = out.terms
    assert t['int'].item() == pytest.approx(0.6)
    assert out.total.item() == pytest.approx((20 * t['int'] + 20 * t['grad'] + 10 * t['ssim']).item(), rel=1e-6)
    out.total.backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_weights_validation():
    with pytest.raises(ValueError, match='unknown loss weight'):
        LossWeights.from_dict({'lambda9': 1})
    assert LossWeights.from_dict({'beta2': 0}).beta2 == 0.0
    assert LossWeights().to_dict() == dict(beta1=1, beta2=1, lambda1=20, lambda2=20, lambda3=10, lambda4=20)
