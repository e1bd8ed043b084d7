"""Where the zoo uses a library helper instead of its former hand-written code, the helper does what
the old code did (the cases the zoo relies on)."""
import torch
from timm.models._hub import hf_split

from mtvif_zoo.models.backbones.swinfusion import SwinTransformerBlock, _dpr


def test_hf_split_is_the_zoos_revision_convention():
    assert hf_split('org/name@0123abcd') == ('org/name', '0123abcd')
    assert hf_split('org/name') == ('org/name', None)  # no revision: None (= main)


def test_drop_path_schedule_is_the_originals():
    """SwinFusion: ``linspace(0, rate, sum(depths))`` split per stage (the former hand-written code)."""
    def original(rate, depths):
        dpr = [x.item() for x in torch.linspace(0, rate, sum(depths))]
        return [dpr[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]
    for rate, depths in [(0.1, [4]), (0.1, [2, 2]), (0., [3, 1])]:
        assert _dpr(rate, depths) == original(rate, depths)


def test_timm_window_partition_is_the_einops_layout():
    """The plain path's windows via timm's window_partition / window_reverse, in the original's order."""
    from einops import rearrange
    blk = SwinTransformerBlock(dim=12, num_heads=2, window_size=4, shift_size=2, mlp_ratio=2., drop_path=0.,
                               layout_cache=None)
    x = torch.randn(2, 8 * 12, 12)
    xw = blk._to_windows(x, 8, 12)
    ref = torch.roll(x.view(2, 8, 12, 12), shifts=(-2, -2), dims=(1, 2))
    assert torch.equal(xw, rearrange(ref, 'b (h wh) (w ww) c -> (b h w) (wh ww) c', wh=4, ww=4))
    assert torch.equal(blk._from_windows(xw, 2, 8, 12), x)


def _bn_stats(bn):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(t.shape, generator=g))
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


def test_timm_convnormact_is_the_conv_bn_block_under_other_key_names():
    """timm's ConvNormAct computes what the MTH's conv + BN + ReLU block computes (train and eval,
    bitwise on the plain path), but its keys are ``conv.*`` / ``bn.*`` where the block's are ``0.*`` /
    ``1.*``: a swap would rename every segmentation-branch key of the shipped safetensors files, so
    the zoo keeps its block. For conv + LeakyReLU (no norm) ConvNormAct is no match at all: with
    ``apply_norm=False`` timm 1.0 drops the activation too (it lives in the norm layer)."""
    from timm.layers import ConvNormAct

    from mtvif_zoo.models.layers.conv import conv_bn_relu, conv_lrelu
    torch.manual_seed(0)
    x = torch.randn(2, 4, 10, 12)
    ours, theirs = conv_bn_relu(4, 8, stride=2), ConvNormAct(4, 8, 3, stride=2, bias=False)
    _bn_stats(ours[1])
    renamed = {k.replace('0.', 'conv.', 1) if k.startswith('0.') else k.replace('1.', 'bn.', 1): v
               for k, v in ours.state_dict().items()}
    assert set(renamed) == set(theirs.state_dict()) and set(renamed) != set(ours.state_dict())
    theirs.load_state_dict(renamed, strict=True)
    ours.fast_path = False  # the plain modules (the eval fast path folds BN: other rounding)
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        with torch.no_grad():
            assert torch.equal(ours(x.clone()), theirs(x.clone()))

    lrelu = conv_lrelu(4, 8)
    lrelu.fast_path = False
    no_norm = ConvNormAct(4, 8, 3, bias=True, apply_norm=False, act_layer='leaky_relu',
                          act_kwargs=dict(negative_slope=0.2))
    no_norm.load_state_dict({f'conv.{k[2:]}': v for k, v in lrelu.state_dict().items()}, strict=True)
    with torch.no_grad():
        assert torch.equal(no_norm(x), lrelu[0](x))  # the conv only: no activation
        assert torch.equal(lrelu(x), torch.nn.functional.leaky_relu(lrelu[0](x), 0.2))
        assert not torch.equal(no_norm(x), lrelu(x))


def test_reference_shift_mask_via_timm_window_partition_is_the_originals():
    """SwinFusion's ``calculate_mask`` (the plain path's mask), written with timm's window_partition,
    equals the original's einops / view layout."""
    from einops import rearrange

    from mtvif_zoo.models.layers.window import MASK_VALUE, reference_shift_mask

    def original(H, W, ws, shift):
        img_mask = torch.zeros((1, H, W, 1))
        cnt = 0
        for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                img_mask[:, h, w, :] = cnt
                cnt += 1
        mw = rearrange(img_mask, 'b (h wh) (w ww) c -> (b h w) (wh ww c)', wh=ws, ww=ws)
        m = mw.unsqueeze(1) - mw.unsqueeze(2)
        return m.masked_fill(m != 0, MASK_VALUE).masked_fill(m == 0, 0.0)
    for H, W, ws, shift in [(16, 24, 8, 4), (8, 8, 4, 2), (12, 20, 4, 2)]:
        assert torch.equal(reference_shift_mask(H, W, ws, shift, 'cpu'), original(H, W, ws, shift))


def test_bn_fold_keeps_gradients_where_torchs_fuse_conv_bn_weights_does_not():
    """The eval fast path folds BN into the conv with ``conv_bn_weights``, not torch's
    ``fuse_conv_bn_weights``: same function (within fp32 rounding), but torch's returns new leaf
    Parameters, so an eval-mode backward (frozen-BN fine-tuning) would leave conv / BN without
    gradients; ours gives the plain conv-then-BN gradients."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    from mtvif_zoo.models.layers._fast import conv_bn_weights
    from mtvif_zoo.models.layers.conv import conv_bn_relu
    torch.manual_seed(0)
    blk = conv_bn_relu(8, 16).eval()
    conv, bn = blk[0], blk[1]
    _bn_stats(bn)
    w, b = conv_bn_weights(conv, bn)
    tw, tb = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                  bn.weight, bn.bias)
    torch.testing.assert_close(w, tw, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b, tb, rtol=1e-6, atol=1e-6)
    assert w.grad_fn is not None and tw.is_leaf and tw.grad_fn is None  # torch's: cut from conv / BN

    x = torch.randn(2, 8, 12, 12)
    params = (conv.weight, bn.weight, bn.bias)
    grads = {}
    for fast in (True, False):  # the fold (fast path) vs the plain modules, both eval mode
        blk.fast_path = fast
        blk.zero_grad(set_to_none=True)
        (blk(x) * torch.linspace(-1, 1, 12)).sum().backward()
        grads[fast] = [p.grad.clone() for p in params]
    for g_fast, g_plain in zip(grads[True], grads[False]):
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-5, atol=1e-5)
    blk.zero_grad(set_to_none=True)
    torch.nn.functional.conv2d(x, tw, tb, padding=1).relu().sum().backward()
    assert all(p.grad is None for p in params)  # torch's fold: no gradient reaches the block


def test_safetensors_metadata_order_changes_per_process_so_the_zoo_canonicalises_it():
    """Why save_pretrained writes its own header instead of huggingface_hub.save_torch_state_dict
    (which saves through the same safetensors call): safetensors writes the metadata in a hash-map
    order that changes from process to process, so the same weights would get another sha256 on every
    run. The zoo's ``_safetensors_bytes`` gives one byte string (sorted header), which loads back."""
    import json
    import subprocess
    import sys

    from safetensors.torch import load

    from mtvif_zoo.hub.publish import _safetensors_bytes
    meta = {'format': 'pt', 'mtvif_zoo_config': '{}', 'content': 'fusion', 'a': '1', 'b': '2', 'c': '3'}
    code = ('import json, sys, numpy as np; from safetensors.numpy import save; '
            'raw = save({"w": np.zeros(2, np.float32)}, metadata=json.loads(sys.argv[1])); '
            'n = int.from_bytes(raw[:8], "little"); print(list(json.loads(raw[8:8 + n])["__metadata__"]))')
    orders = {subprocess.run([sys.executable, '-c', code, json.dumps(meta)], capture_output=True, text=True,
                             check=True).stdout for _ in range(4)}
    assert len(orders) > 1  # 720 orders of 6 keys: 4 equal draws would be a ~1e-9 coincidence
    state = {'w': torch.arange(4.), 'b': torch.ones(2, 2)}
    raw = _safetensors_bytes(state, meta)
    assert raw == _safetensors_bytes(dict(reversed(list(state.items()))), dict(reversed(list(meta.items()))))
    n = int.from_bytes(raw[:8], 'little')
    assert list(json.loads(raw[8:8 + n])['__metadata__']) == sorted(meta)
    assert all(torch.equal(v, state[k]) for k, v in load(raw).items())
