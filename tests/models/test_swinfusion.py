"""SwinFusion backbone / decoder (MultiTaskVIF variant I): shapes, fast-vs-plain attention parity,
window-layout caching, input checks, parameter counts. Small inputs only (CPU, a few seconds)."""
import pytest
import torch

from mtvif_zoo.models.backbones import create_backbone, get_backbone_cls, swinfusion as sf
from mtvif_zoo.models.backbones.swinfusion import (
    CrossSwinTransformerBlock,
    SwinFusionBackbone,
    SwinFusionDecoder,
    SwinTransformerBlock,
    convert_original_state_dict,
    set_fused_attn,
)
from mtvif_zoo.models.layers import window

# Parameter counts of the original network (Linfeng-Tang/SwinFusion, models/network_swinfusion1.py,
# SwinFusion(upscale=1, in_chans=1, img_size=128, window_size=8, img_range=1., embed_dim=60,
# mlp_ratio=2, upsampler=None, resi_connection='1conv'), the released VIF configuration), counted
# locally: 973,681 in total = 8,430 dead (conv_first1_B, conv_first2_B: never used by its forward)
# + 821,460 used by forward_features_Ex_A/Ex_B/Fusion (incl. the 120-parameter shared
# patch_embed.norm) + 143,791 in layers_Re / norm_Re / conv_last1-3. forward_features_Re also uses
# the shared patch_embed.norm, which our decoder owns a copy of: 143,791 + 120.
ORIGINAL_BACKBONE_PARAMS_IN1 = 821_460
ORIGINAL_DECODER_PARAMS_IN1 = 143_791 + 120
# Same count with in_chans=3 (975,033 in total, 8,970 dead).
ORIGINAL_BACKBONE_PARAMS_IN3 = 822_000
ORIGINAL_DECODER_PARAMS_IN3 = 144_063 + 120


def _count(m):
    return sum(p.numel() for p in m.parameters())


def _inputs(b, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g), torch.rand(b, c, h, w, generator=g)


@pytest.fixture(scope='module')
def models():
    torch.manual_seed(0)
    out = {}
    for c in (1, 3):
        out[c] = (SwinFusionBackbone(in_chans=c).eval(), SwinFusionDecoder(out_chans=c).eval())
    return out


def test_registry_and_attributes():
    assert get_backbone_cls('swinfusion') is SwinFusionBackbone
    m = create_backbone('swinfusion', in_chans=1)
    assert isinstance(m, SwinFusionBackbone)
    assert m.num_features == 60 and m.pad_multiple == 8 and m.in_chans == 1
    assert SwinFusionBackbone.original_decoder is SwinFusionDecoder


@pytest.mark.parametrize('in_chans', [1, 3])
@pytest.mark.parametrize('size', [(64, 96), (48, 40)])
def test_shapes(models, in_chans, size):
    bb, dec = models[in_chans]
    vis, ir = _inputs(1, in_chans, *size)
    with torch.no_grad():
        f = bb(vis, ir)
        out = dec(f)
    assert f.shape == (1, 60, *size)
    assert out.shape == (1, in_chans, *size)
    assert torch.isfinite(out).all()


def test_param_counts_match_original(models):
    assert _count(models[1][0]) == ORIGINAL_BACKBONE_PARAMS_IN1
    assert _count(models[1][1]) == ORIGINAL_DECODER_PARAMS_IN1
    assert _count(models[3][0]) == ORIGINAL_BACKBONE_PARAMS_IN3
    assert _count(models[3][1]) == ORIGINAL_DECODER_PARAMS_IN3


def _perturb(module, seed=0):
    """Move LayerNorm / bias / position-bias parameters off their constant init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() <= 2 and p.numel() < 5000:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module


def test_fused_matches_plain_eval(models):
    bb, dec = models[1]
    vis, ir = _inputs(2, 1, 48, 40, seed=1)
    with torch.no_grad():
        f_fast = bb(vis, ir)
        out_fast = dec(f_fast)
        try:
            set_fused_attn(bb, False)
            set_fused_attn(dec, False)
            f_plain = bb(vis, ir)
            out_plain = dec(f_plain)
        finally:
            set_fused_attn(bb, True)
            set_fused_attn(dec, True)
        # the zero-padded head dim used on CUDA, forced on CPU: must not change the result
        try:
            sf._WindowAttentionBase.pad_head_dim = True
            out_padded = dec(bb(vis, ir))
        finally:
            sf._WindowAttentionBase.pad_head_dim = None
    assert (f_fast - f_plain).abs().max().item() <= 1e-5
    assert (out_fast - out_plain).abs().max().item() <= 1e-5
    assert (out_padded - out_plain).abs().max().item() <= 1e-5


def test_fused_matches_plain_gradients():
    torch.manual_seed(0)
    bb = _perturb(SwinFusionBackbone(in_chans=1, fusion_depths=(2,), drop_path_rate=0.)).train()
    vis, ir = _inputs(1, 1, 16, 16, seed=2)  # 2x2 windows: all four shifted-window mask classes
    grads = []
    for fused in (True, False):
        set_fused_attn(bb, fused)
        bb.zero_grad()
        bb(vis, ir).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in bb.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-5, atol=1e-8, msg=k)
    assert grads[0]['layers_Fusion.0.residual_group.blocks.1.attn_A.relative_position_bias_table'].abs().sum() > 0


def test_cpu_training_attention_skips_sdpa_math_fallback():
    """Training on the CPU (the bias needs its gradient, which SDPA's CPU flash kernel does not
    give) writes the attention out instead of SDPA's math fallback, whose safe softmax adds an
    eq / all / where pass over every score tensor; inference still runs SDPA's flash kernel."""
    from torch.profiler import ProfilerActivity, profile
    torch.manual_seed(0)
    bb = SwinFusionBackbone(in_chans=1, fusion_depths=(2,), drop_path_rate=0.).train()
    vis, ir = _inputs(1, 1, 16, 16, seed=2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        bb(vis, ir).mean().backward()
    ops = {e.name for e in prof.events()}
    assert 'aten::_safe_softmax' not in ops and 'aten::_softmax' in ops
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        bb.eval()(vis, ir)
    assert 'aten::_scaled_dot_product_flash_attention_for_cpu' in {e.name for e in prof.events()}


@pytest.mark.parametrize('shift', [0, 4])
def test_self_block_matches_timm_swin_block(shift):
    """timm's SwinTransformerBlock (plain attention, always partition, mask built per call) has the
    original's layout and arithmetic; ours must agree with it on both paths."""
    from timm.models.swin_transformer import SwinTransformerBlock as TimmBlock
    H, W = 24, 16
    torch.manual_seed(0)
    ours = _perturb(SwinTransformerBlock(60, 6, window_size=8, shift_size=shift, mlp_ratio=2.)).eval()
    ref = TimmBlock(60, (H, W), num_heads=6, window_size=8, shift_size=shift, always_partition=True,
                    dynamic_mask=True, mlp_ratio=2.).eval()
    ref.attn.fused_attn = False
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, H * W, 60)
    with torch.no_grad():
        r = ref(x.view(2, H, W, 60)).view(2, H * W, 60)
        fast = ours(x, (H, W))
        ours.fused_attn = False
        plain = ours(x, (H, W))
    assert (plain - r).abs().max().item() <= 1e-6  # bitwise equal on CPU fp32 in practice
    assert (fast - r).abs().max().item() <= 1e-5


def test_cross_block_fused_matches_plain():
    torch.manual_seed(0)
    blk = _perturb(CrossSwinTransformerBlock(60, 6, window_size=8, shift_size=4)).eval()
    x, y = torch.randn(2, 16 * 32, 60), torch.randn(2, 16 * 32, 60)
    with torch.no_grad():
        fx, fy = blk(x, y, (16, 32))
        blk.fused_attn = False
        px, py = blk(x, y, (16, 32))
    assert (fx - px).abs().max().item() <= 1e-5 and (fy - py).abs().max().item() <= 1e-5


def test_layout_and_bias_cached_per_resolution(monkeypatch):
    torch.manual_seed(0)
    bb = SwinFusionBackbone(in_chans=1, fusion_depths=(2,)).eval()
    cache = bb.layout_cache
    assert all(m.layout_cache is cache for m in bb.modules() if isinstance(m, sf._WindowBlockBase))
    builds = []
    real_build = window.build_layout
    monkeypatch.setattr(window, 'build_layout', lambda *a: builds.append(a) or real_build(*a))
    attn = bb.layers_Ex_A[0].residual_group.blocks[1].attn

    vis, ir = _inputs(1, 1, 32, 48)
    with torch.no_grad():
        out1 = bb(vis, ir)
        assert len(cache) == 1 and len(builds) == 2  # one resolution: shift 0 and shift 4 layouts
        layouts = dict(cache.entries[(32, 48)])
        bias = attn._bias_cache[1]
        out2 = bb(vis, ir)
        assert len(cache) == 1 and len(builds) == 2  # nothing rebuilt for the same size
        assert all(cache.entries[(32, 48)][k] is v for k, v in layouts.items())
        assert attn._bias_cache[1] is bias
        torch.testing.assert_close(out1, out2, rtol=0, atol=0)

        bb(*_inputs(1, 1, 16, 24))
        assert len(cache) == 2 and len(builds) == 4  # a new size gets its own entry
        assert set(cache.entries) == {(32, 48), (16, 24)}
        assert attn._bias_cache[1] is bias  # the bias+mask does not depend on the size

        attn.relative_position_bias_table.add_(1.0)  # an in-place update invalidates the bias cache
        bb(vis, ir)
        assert attn._bias_cache[1] is not bias


def test_inference_mode_cache_then_training():
    torch.manual_seed(0)
    bb = SwinFusionBackbone(in_chans=1, fusion_depths=(2,), drop_path_rate=0.)
    vis, ir = _inputs(1, 1, 16, 16)
    with torch.inference_mode():
        bb.eval()(vis, ir)
    bb.train()(vis, ir).mean().backward()  # cached layouts must be usable by autograd
    assert bb.layers_Ex_A[0].residual_group.blocks[1].attn.relative_position_bias_table.grad is not None


def test_size_errors(models):
    bb, dec = models[1]
    with pytest.raises(ValueError, match=r'divisible by its window size 8.*pad'):
        bb(*_inputs(1, 1, 60, 64))
    with pytest.raises(ValueError, match=r'divisible by its window size 8'):
        dec(torch.rand(1, 60, 64, 36))
    with pytest.raises(ValueError, match='same shape'):
        bb(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 72))


def test_decoder_mean_and_projection():
    dec = SwinFusionDecoder(in_chs=16, out_chans=3).eval()
    assert dec.proj is not None and dec.proj.in_channels == 16
    with torch.no_grad():
        dec.conv_last3.weight.zero_()
        dec.conv_last3.bias.zero_()
        out = dec(torch.rand(1, 16, 16, 24))
    # the original adds its RGB mean back (no clamp, no sigmoid)
    torch.testing.assert_close(out, torch.tensor(sf.RGB_MEAN).view(1, 3, 1, 1).expand(1, 3, 16, 24))
    assert SwinFusionDecoder(in_chs=60, out_chans=1).proj is None


def test_convert_original_state_dict(models):
    """Rebuild an original-layout state dict from ours and convert it back."""
    bb, dec = models[1]
    orig = {}
    for k, v in bb.state_dict().items():
        if k.startswith('patch_norm.'):
            k = 'patch_embed.norm.' + k[len('patch_norm.'):]
        elif k.startswith(('conv_first1.', 'conv_first2.')):
            k = k.replace('.', '_A.', 1)
        orig[k] = v
    orig.update({k: v for k, v in dec.state_dict().items() if not k.startswith('patch_norm.')})
    orig['conv_first1_B.weight'] = torch.zeros(30, 1, 3, 3)
    orig['conv_first2_B.weight'] = torch.zeros(30, 30, 3, 3)
    orig['layers_Ex_A.0.residual_group.blocks.1.attn_mask'] = torch.zeros(256, 64, 64)
    orig['layers_Re.0.residual_group.blocks.0.attn.relative_position_index'] = torch.zeros(64, 64, dtype=torch.long)
    sb, sd = convert_original_state_dict(orig)
    b2, d2 = SwinFusionBackbone(in_chans=1), SwinFusionDecoder(out_chans=1)
    b2.load_state_dict(sb, strict=True)
    d2.load_state_dict(sd, strict=True)
    torch.testing.assert_close(d2.patch_norm.weight, bb.patch_norm.weight)
