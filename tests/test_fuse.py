"""fuse(): every input kind, any size, batches, 16-bit, the Y-channel mode, and clear errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from mtvif_zoo import create_model, fuse
from mtvif_zoo.color import rgb_to_ycbcr


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return create_model('mtvif_ii').eval()  # Ufuser backbone: pad multiple 8


def _reference(model, vis_u8, ir_u8):
    """The plain path by hand: scale, replicate IR, reflect-pad to 8, run, crop."""
    v = torch.from_numpy(vis_u8).permute(2, 0, 1)[None].float() / 255
    i = torch.from_numpy(ir_u8)[None, None].float().div(255).expand(-1, 3, -1, -1)
    h, w = v.shape[-2:]
    ph, pw = (-h) % 8, (-w) % 8
    v = torch.nn.functional.pad(v, (0, pw, 0, ph), mode='reflect')
    i = torch.nn.functional.pad(i, (0, pw, 0, ph), mode='reflect')
    with torch.no_grad():
        return model(v, i)[..., :h, :w].clamp(0, 1)


def test_numpy_uint8_any_size_matches_plain_path(model, small_pair):
    vis, ir = small_pair
    out = fuse(vis, ir, model=model)
    assert out.dtype == np.uint8 and out.shape == (40, 56, 3)
    ref = (_reference(model, vis, ir)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(out, ref)


def test_kinds_round_trip(model, small_pair, tmp_path):
    vis, ir = small_pair
    base = fuse(vis, ir, model=model)
    # PIL in -> PIL out
    pil = fuse(Image.fromarray(vis), Image.fromarray(ir), model=model)
    assert isinstance(pil, Image.Image) and pil.mode == 'RGB' and pil.size == (56, 40)
    assert np.array_equal(np.asarray(pil), base)
    # paths in -> PIL out
    Image.fromarray(vis).save(tmp_path / 'v.png')
    Image.fromarray(ir).save(tmp_path / 'i.png')
    assert np.array_equal(np.asarray(fuse(tmp_path / 'v.png', str(tmp_path / 'i.png'), model=model)), base)
    # float arrays in [0, 1] -> float32 out
    f = fuse(vis.astype(np.float32) / 255, ir.astype(np.float32) / 255, model=model)
    assert f.dtype == np.float32 and np.abs(f * 255 - base).max() <= 0.5 + 1e-3
    # tensors CHW -> CHW float, BCHW -> BCHW
    tv = torch.from_numpy(vis).permute(2, 0, 1).float() / 255
    ti = torch.from_numpy(ir)[None].float() / 255
    t = fuse(tv, ti, model=model)
    assert t.shape == (3, 40, 56) and t.dtype == torch.float32
    assert torch.equal((t * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(base))
    tb = fuse(tv[None].repeat(2, 1, 1, 1), ti[None].repeat(2, 1, 1, 1), model=model)
    assert tb.shape == (2, 3, 40, 56) and torch.allclose(tb[0], t, atol=1e-6) and torch.allclose(tb[1], t, atol=1e-6)
    # uint8 tensor -> float tensor
    assert torch.allclose(fuse(torch.from_numpy(vis).permute(2, 0, 1), torch.from_numpy(ir), model=model)[0], t[0],
                          atol=1e-6)


def test_list_batch_equals_single_calls(model, rng):
    vis = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(3)] + \
          [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)]
    ir = [rng.integers(0, 256, v.shape[:2], dtype=np.uint8) for v in vis]
    outs = fuse(vis, ir, model=model, batch_size=2)
    assert isinstance(outs, list) and [o.shape for o in outs] == [v.shape for v in vis]
    for v, i, o in zip(vis, ir, outs):
        assert np.abs(fuse(v, i, model=model).astype(int) - o.astype(int)).max() <= 1


def test_grey_visible_and_rgb_infrared(model, small_pair):
    vis, ir = small_pair
    grey = vis.mean(axis=2).astype(np.uint8)
    out = fuse(grey, ir, model=model)
    assert out.shape == (40, 56) and out.dtype == np.uint8
    pil = fuse(Image.fromarray(grey), Image.fromarray(ir), model=model)
    assert pil.mode == 'L'
    # IR given as 3 identical channels == IR as one channel
    assert np.array_equal(fuse(vis, np.repeat(ir[..., None], 3, axis=2), model=model), fuse(vis, ir, model=model))


def test_16bit_thermal_is_rescaled_explicitly(model, small_pair):
    vis, ir = small_pair
    raw = (ir.astype(np.uint16) * 40 + 7000)  # radiometric-like counts
    mm = fuse(vis, raw, model=model)  # default ir_range='minmax'
    lo, hi = raw.min(), raw.max()
    manual = ((raw - lo) / (hi - lo)).astype(np.float32)
    assert np.abs(mm.astype(int) - fuse(vis.astype(np.float32) / 255, manual, model=model).__mul__(255).round()
                  .astype(int)).max() <= 1
    fixed = fuse(vis, raw, model=model, ir_range=(7000, 7000 + 255 * 40))
    assert np.abs(fixed.astype(int) - fuse(vis, ir, model=model).astype(int)).max() <= 1
    with pytest.raises(ValueError, match="ir_range must be 'minmax', 'full' or a"):
        fuse(vis, raw, model=model, ir_range='auto')
    # a 16-bit PIL image works too
    pil16 = Image.fromarray(raw.astype(np.uint16))
    assert pil16.mode.startswith('I')
    assert np.array_equal(np.asarray(fuse(Image.fromarray(vis), pil16, model=model)), mm)


def test_y_channel_mode_keeps_visible_chroma(small_pair):
    vis, ir = small_pair
    torch.manual_seed(0)
    m1 = create_model('mtvif_iii', in_chans=1).eval()
    out = fuse(torch.from_numpy(vis).permute(2, 0, 1).float() / 255, torch.from_numpy(ir).float() / 255, model=m1)
    assert out.shape == (3, 40, 56)
    ycc_out = rgb_to_ycbcr(out)
    ycc_vis = rgb_to_ycbcr(torch.from_numpy(vis).permute(2, 0, 1).float() / 255)
    # chroma is the visible chroma wherever the recombined RGB was not clipped
    unclipped = ((out > 0) & (out < 1)).all(0)
    assert unclipped.float().mean() > 0.5
    assert torch.allclose(ycc_out[1:, unclipped], ycc_vis[1:, unclipped], atol=2e-3)
    # and the luma is the model's fused Y
    with torch.no_grad():
        y = m1(ycc_vis[None, :1], torch.from_numpy(ir)[None, None].float() / 255)[0, 0].clamp(0, 1)
    assert torch.allclose(ycc_out[0, unclipped], y[unclipped], atol=2e-3)


def test_model_by_name_and_mode_restored(small_pair):
    vis, ir = small_pair
    m = create_model('seafusion').train()
    fuse(vis, ir, model=m)
    assert m.training
    with pytest.raises(ValueError, match='model must be a mtvif_zoo model'):
        fuse(vis, ir, model=torch.nn.Conv2d(3, 3, 1))


@pytest.mark.parametrize('vis,ir,err,match', [
    (np.zeros((40, 56, 3), np.uint8), np.zeros((40, 50), np.uint8), ValueError,
     r'visible is 40x56 \(HxW\) but infrared is 40x50; register/resize'),
    (np.zeros((40, 56, 2), np.uint8), np.zeros((40, 56), np.uint8), ValueError, 'visible image has 2 channels'),
    (np.zeros((0, 56, 3), np.uint8), np.zeros((0, 56), np.uint8), ValueError, 'visible image is empty'),
    (np.full((8, 8, 3), np.nan, np.float32), np.zeros((8, 8), np.float32), ValueError, 'visible image contains NaN'),
    (np.zeros((8, 8, 3), np.float32), np.full((8, 8), np.inf, np.float32), ValueError,
     'infrared image contains NaN or inf'),
    (np.full((8, 8, 3), 200., np.float32), np.zeros((8, 8), np.float32), ValueError,
     r'must be in \[0, 1\].*divide by 255'),
    (np.zeros((8, 8, 3), np.uint8), 'nope.png', FileNotFoundError, "infrared image not found: 'nope.png'"),
    (np.zeros((2, 2, 2, 2, 2)), np.zeros((2, 2)), ValueError, 'visible array must be HxW, HxWxC or BxHxWxC'),
    ([np.zeros((8, 8, 3), np.uint8)], np.zeros((8, 8), np.uint8), ValueError, 'both be single images or lists'),
    (1.5, np.zeros((8, 8), np.uint8), ValueError, 'visible must be a file path, PIL image'),
])
def test_bad_input_errors(model, vis, ir, err, match):
    with pytest.raises(err, match=match):
        fuse(vis, ir, model=model)


def test_unreadable_file(model, tmp_path):
    bad = tmp_path / 'broken.png'
    bad.write_bytes(b'\x89PNG not really')
    with pytest.raises(ValueError, match=r"visible image '.*broken.png' is not a readable image file"):
        fuse(bad, bad, model=model)


def test_tiled_equals_untiled_within_tolerance(rng):
    torch.manual_seed(0)
    m = create_model('seafusion').eval()  # receptive-field radius 9 px <= overlap // 4: exact
    vis = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    ir = rng.integers(0, 256, (150, 200), dtype=np.uint8)
    tv, ti = torch.from_numpy(vis).permute(2, 0, 1).float() / 255, torch.from_numpy(ir).float() / 255
    whole = fuse(tv, ti, model=m)
    tiled = fuse(tv, ti, model=m, tile=96, overlap=40)
    assert tiled.shape == whole.shape and (whole - tiled).abs().max() < 1e-5
    assert (whole - fuse(tv, ti, model=m, tile=96, overlap=16)).abs().max() > 1e-5  # margin 4 < 9: not exact
