"""Original-checkpoint converters: every converter on an original-layout state dict whose two
branches differ, so a swapped visible / infrared branch cannot pass; ``mtvif convert`` end to end."""
import json
import re

import pytest
import torch

import mtvif_zoo
from mtvif_zoo.hub.convert import ORIGINAL_ARCHS, convert_original
from mtvif_zoo.models.backbones.swinfusion import SwinFusionBackbone, convert_original_state_dict, set_fused_attn


def _perturb(module, seed=0):
    """Every parameter moved off its init (LayerNorms included), so the A and B branches differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module


def _swin_original_layout(bb):
    """Original ``network_swinfusion1`` names for a backbone whose first input runs through the ``_A``
    modules, i.e. a backbone that computes the original's ``forward(A, B)``."""
    orig = {}
    for k, v in bb.state_dict().items():
        if k.startswith('patch_norm.'):
            k = 'patch_embed.norm.' + k[len('patch_norm.'):]
        elif k.startswith(('conv_first1.', 'conv_first2.')):
            k = k.replace('.', '_A.', 1)
        orig[k] = v.clone()
    orig['conv_first1_B.weight'] = torch.zeros_like(orig['conv_first1_A.weight'])
    return orig


@pytest.mark.parametrize('fused', [False, True])
def test_swinfusion_converter_sends_infrared_to_branch_a(fused):
    """Released SwinFusion: A = infrared, B = visible Y. ``original`` (first input on the _A modules,
    concatenation [A, B]) is the original network; the converted backbone must give
    ``converted(vis, ir) == original(A=ir, B=vis)``. Failed before the fix (it computed original(vis, ir))."""
    torch.manual_seed(0)
    original = _perturb(SwinFusionBackbone(in_chans=1, drop_path_rate=0.)).eval()
    converted = SwinFusionBackbone(in_chans=1, drop_path_rate=0.).eval()
    sb, _ = convert_original_state_dict(_swin_original_layout(original))
    converted.load_state_dict(sb, strict=True)
    set_fused_attn(original, fused)
    set_fused_attn(converted, fused)
    g = torch.Generator().manual_seed(1)
    vis, ir = torch.rand(1, 1, 16, 24, generator=g), torch.rand(1, 1, 16, 24, generator=g)
    with torch.no_grad():
        got = converted(vis, ir)
        want = original(ir, vis)
        wrong = original(vis, ir)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - wrong).abs().max() > 1e-2  # the branches differ: a swapped mapping cannot pass


def test_swinfusion_converter_swaps_every_ab_module():
    bb = SwinFusionBackbone(in_chans=1)
    sb, _ = convert_original_state_dict(_swin_original_layout(bb))
    orig = _swin_original_layout(bb)
    for k, v in sb.items():
        if k.startswith(('conv_first', 'patch_norm', 'conv_after_body_Fusion')):
            continue
        src = re.sub(r'_([AB])(?=\.)', lambda m: '_B' if m.group(1) == 'A' else '_A', k)
        assert torch.equal(v, orig[src]), k
    w = orig['conv_after_body_Fusion.weight']
    assert torch.equal(sb['conv_after_body_Fusion.weight'], torch.cat([w[:, 60:], w[:, :60]], 1))


# the original's infrared-branch input conv(s) in each original layout (names as in the original code)
_IR_STEM = {'emma_ufuser': ('I_en_1.embed.weight',), 'seafusion': ('inf_conv.conv.weight', 'inf_conv.conv.bias'),
            'segmif': ('conv1_ir.weight', 'conv1_ir.bias')}


def _original_layout(arch, model):
    """Original names for a zoo model (the inverse of each converter's renaming)."""
    out = {}
    for k, v in model.state_dict().items():
        k = k.split('.', 2)[2] if k.startswith('head.decoder.') else k[len('backbone.'):]
        if arch == 'emma_ufuser':
            k = re.sub(r'\.(norm1|norm2)\.', r'.\1.body.', k)
        out[k] = v.clone()
    if arch == 'segmif':
        out.pop('relu.weight')
        out['relu.weight'] = model.state_dict()['backbone.relu.weight'].clone()
    return out


@pytest.mark.parametrize('arch', sorted(_IR_STEM))
def test_converter_sends_each_input_through_its_original_branch(arch):
    """Zero the original's infrared input conv: the converted model's fused features must then not
    depend on the infrared input, and must depend on the visible one."""
    torch.manual_seed(0)
    src = _perturb(mtvif_zoo.create_model(arch, in_chans=1)).eval()
    orig = _original_layout(arch, src)
    for k in _IR_STEM[arch]:
        orig[k] = torch.zeros_like(orig[k])
    state = convert_original(arch, orig)
    model = mtvif_zoo.create_model(arch, in_chans=1).eval()
    model.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(1)
    vis, ir, ir2, vis2 = (torch.rand(1, 1, 16, 16, generator=g) for _ in range(4))
    with torch.no_grad():
        f = model.forward_features(vis, ir)
        torch.testing.assert_close(model.forward_features(vis, ir2), f, atol=0, rtol=0)
        assert (model.forward_features(vis2, ir) - f).abs().max() > 1e-4


@pytest.mark.parametrize('arch', sorted(ORIGINAL_ARCHS))
def test_mtvif_convert_cli(arch, tmp_path, capsys):
    """``mtvif convert`` reads a .pth (weights_only), writes safetensors + config with the source sha256,
    and the folder loads through pretrained_cfg_overlay=dict(file=...) with the same output."""
    from mtvif_zoo.cli import main
    from mtvif_zoo.hub import sha256_file
    torch.manual_seed(0)
    src = _perturb(mtvif_zoo.create_model(arch, in_chans=1)).eval()
    with torch.no_grad():  # the originals share these between encoder and decoder
        for shared in ('relu', 'patch_norm'):
            if hasattr(src.backbone, shared):
                src.head.decoder.load_state_dict({f'{shared}.{k}': v for k, v in
                                                  getattr(src.backbone, shared).state_dict().items()}, strict=False)
    orig = _swin_original_layout_full(src) if arch == 'swinfusion' else _original_layout(arch, src)
    pth = tmp_path / 'original.pth'
    torch.save({'params': orig} if arch == 'swinfusion' else orig, pth)
    out = tmp_path / 'out'
    assert main(['convert', '--arch', arch, '--checkpoint', str(pth), '--out', str(out)]) == 0
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['mtvif_zoo']['source']['sha256'] == sha256_file(pth)
    assert sha256_file(pth) in (out / 'README.md').read_text()
    assert cfg['model_args']['in_chans'] == 1
    model = mtvif_zoo.create_model(arch, pretrained=True, in_chans=1,
                                   pretrained_cfg_overlay=dict(file=str(out))).eval()
    g = torch.Generator().manual_seed(2)
    vis, ir = torch.rand(1, 1, 16, 16, generator=g), torch.rand(1, 1, 16, 16, generator=g)
    with torch.no_grad():
        want = src(ir, vis) if arch == 'swinfusion' else src(vis, ir)  # swinfusion: original A = ir
        torch.testing.assert_close(model(vis, ir), want, atol=1e-5, rtol=1e-5)


def _swin_original_layout_full(model):
    orig = _swin_original_layout(model.backbone)
    orig.update({k[len('head.decoder.'):]: v.clone() for k, v in model.state_dict().items()
                 if k.startswith('head.decoder.') and '.patch_norm.' not in k
                 and not k.startswith('head.decoder.patch_norm')})
    return orig


def test_convert_refuses_pickles_and_wrong_archs(tmp_path):
    from mtvif_zoo.hub.convert import convert_checkpoint
    bad = tmp_path / 'evil.pth'
    torch.save({'x': object()}, bad)
    with pytest.raises(ValueError, match='weights_only'):
        convert_checkpoint('seafusion', bad, tmp_path / 'o')
    with pytest.raises(ValueError, match='no converter'):
        convert_original('mtvif_i', {})


def test_cli_choices_match_converters():
    from mtvif_zoo.cli.convert import ARCHS
    assert ARCHS == tuple(sorted(ORIGINAL_ARCHS))


def test_converters_come_from_the_backbone_registry(monkeypatch):
    """hub.convert reaches each original-checkpoint converter through the registry the backbone modules
    register into (no module path strings): each arch's backbone has one, it is that module's
    convert_original_state_dict, and convert_original calls whatever is registered."""
    import sys

    from mtvif_zoo.models.backbones import _registry, get_backbone_cls, get_original_converter, list_original_converters
    assert list_original_converters() == sorted(info['backbone'] for info in ORIGINAL_ARCHS.values())
    for arch, info in ORIGINAL_ARCHS.items():
        assert mtvif_zoo.create_model(arch).backbone_name == info['backbone']
        module = sys.modules[get_backbone_cls(info['backbone']).__module__]
        assert get_original_converter(info['backbone']) is module.convert_original_state_dict
    seen = []
    monkeypatch.setitem(_registry._CONVERTERS, 'seafusion', lambda sd: seen.append(sorted(sd)) or {'k': 1})
    assert convert_original('seafusion', {'module.a': torch.zeros(1)}) == {'k': 1} and seen == [['a']]
    with pytest.raises(ValueError, match="no original-checkpoint converter for backbone 'nope'"):
        get_original_converter('nope')
