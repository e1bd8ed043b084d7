"""timm's model API on the zoo's models: classifier semantics, in_chans adaptation of pretrained
weights, feature extraction, gradient checkpointing, parameter groups, strict checkpoint loading."""
import json
from pathlib import Path

import pytest
import timm
import torch

import mtvif_zoo
from mtvif_zoo.hub import SHIPPED_DIR

ARCHS = ['emma_ufuser', 'mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv', 'seafusion', 'segmif', 'swinfusion']
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _pair(c=3, size=(16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, c, *size, generator=g), torch.rand(1, c, *size, generator=g)


@pytest.mark.parametrize('arch', ['mtvif_iii', 'seafusion'])
def test_num_classes_zero_is_the_fusion_only_model(arch):
    torch.manual_seed(0)
    m = mtvif_zoo.create_model(arch, num_classes=4)
    f = mtvif_zoo.create_model(arch, num_classes=0)
    assert set(f.state_dict()) == set(m.fusion_only().state_dict())
    assert f.num_classes == 0 and not f.has_segmentation and isinstance(f.get_classifier(), torch.nn.Identity)
    fused, seg = f.train()(*_pair())
    assert seg is None and fused.shape == (1, 3, 16, 16)
    fused, seg = m.train()(*_pair())
    assert seg.shape == (1, 4, 16, 16) and m.get_classifier().out_channels == 4
    m.reset_classifier(7)
    assert m.num_classes == 7 and m.train()(*_pair())[1].shape == (1, 7, 16, 16)
    m.reset_classifier(0)
    assert set(m.state_dict()) == set(f.state_dict()) and m.eval()(*_pair()).shape == (1, 3, 16, 16)


def test_save_weights_of_a_pretrained_model_loads_into_the_default_model(tmp_path):
    m = mtvif_zoo.create_model('mtvif_iv', pretrained=True)
    mtvif_zoo.save_weights(m, tmp_path / 'w.safetensors')
    again = mtvif_zoo.load_weights(mtvif_zoo.create_model('mtvif_iv'), tmp_path / 'w.safetensors')
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in again.state_dict().items())


def _shipped_files():
    for folder in sorted(Path(SHIPPED_DIR).iterdir()):
        if (folder / 'config.json').is_file():
            for f in sorted(folder.glob('*.safetensors')):
                yield folder.name, f.name


@pytest.mark.parametrize('name,fname', list(_shipped_files()))
def test_every_shipped_file_loads_strictly_with_timm(name, fname):
    """timm.models.load_checkpoint(strict=True) into the model the folder's config.json describes
    (the file's ``content``: fusion -> num_classes=0, full -> model_args as they are)."""
    folder = Path(SHIPPED_DIR) / name
    cfg = json.loads((folder / 'config.json').read_text())
    args = dict(cfg['model_args'])
    if cfg['mtvif_zoo']['files'][fname]['content'] == 'fusion':
        args['num_classes'] = 0
    model = timm.create_model(cfg['architecture'], **args)
    timm.models.load_checkpoint(model, str(folder / fname), strict=True)


@pytest.mark.parametrize('arch', ARCHS)
def test_first_conv_names_the_stem_convs(arch):
    """The pretrained cfg's ``first_conv`` (what timm's in_chans adaptation reads) names modules of the
    model that are Conv2d reading ``in_chans`` channels, for in_chans 3 and 1."""
    from timm.models import get_pretrained_cfg
    first_conv = get_pretrained_cfg(arch).first_conv
    assert isinstance(first_conv, tuple) and first_conv and all(n.startswith('backbone.') for n in first_conv)
    for in_chans in (3, 1):
        modules = dict(mtvif_zoo.create_model(arch, in_chans=in_chans, num_classes=0).named_modules())
        for name in first_conv:
            assert isinstance(modules.get(name), torch.nn.Conv2d), (arch, name)
            assert modules[name].in_channels == in_chans, (arch, name)


@pytest.mark.parametrize('name', sorted({n for n, _ in _shipped_files()}))
def test_shipped_config_json_names_the_first_convs(name):
    """The shipped config.json's pretrained cfg names the stem convs (was null) as the architecture's
    cfg does, and they are Conv2d with the config's in_chans in the model it describes."""
    from timm.models import get_pretrained_cfg
    cfg = json.loads((Path(SHIPPED_DIR) / name / 'config.json').read_text())
    first_conv = cfg['pretrained_cfg']['first_conv']
    assert first_conv == list(get_pretrained_cfg(cfg['architecture']).first_conv)
    modules = dict(timm.create_model(cfg['architecture'], **cfg['model_args']).named_modules())
    for conv in first_conv:
        assert isinstance(modules.get(conv), torch.nn.Conv2d) and modules[conv].in_channels == \
            cfg['model_args']['in_chans'], (name, conv)


def _grey_model_pair(arch):
    """(3-channel model, the same weights adapted by pretrained=True to in_chans=1), fusion-only."""
    tags = [n for n in mtvif_zoo.list_models(pretrained=True) if n.split('.')[0] == arch]
    if tags:  # the published weights, through the zoo's sources
        m3 = mtvif_zoo.create_model(tags[0], pretrained=True, num_classes=0)
        m1 = mtvif_zoo.create_model(tags[0], pretrained=True, num_classes=0, in_chans=1)
    else:  # random weights, through timm's state_dict source
        torch.manual_seed(0)
        m3 = mtvif_zoo.create_model(arch, num_classes=0)
        m1 = mtvif_zoo.create_model(arch, pretrained=True, num_classes=0, in_chans=1,
                                    pretrained_cfg_overlay=dict(state_dict=m3.state_dict()))
    return m3.eval(), m1.eval()


@pytest.mark.parametrize('arch', ARCHS)
def test_pretrained_in_chans_1_matches_the_3_channel_model_on_grey_input(arch):
    """Stems summed over their input channels (timm's adapt_input_conv): the 1-channel model's features
    on a grey pair equal the 3-channel model's on the same pair replicated to 3 channels (SwinFusion:
    its RGB input mean is folded into the stem bias, exact away from the zero-padded border). The
    output conv is the BT.601 luma of the RGB one: the fused Y is close to the luma of the RGB output
    (not exact: the output activation comes after the conv)."""
    m3, m1 = _grey_model_pair(arch)
    assert m1.in_chans == 1 and m1.backbone.in_chans == 1
    vis, ir = _pair(1, (32, 32), seed=3)
    with torch.no_grad():
        f3 = m3.forward_features(vis.expand(-1, 3, -1, -1), ir.expand(-1, 3, -1, -1))
        f1 = m1.forward_features(vis, ir)
        y3 = (m3(vis.expand(-1, 3, -1, -1), ir.expand(-1, 3, -1, -1)) * LUMA).sum(1, keepdim=True)
        y1 = m1(vis, ir)
    if arch in ('mtvif_i', 'swinfusion'):
        assert (y3 - y1).abs().mean() < 0.03
    else:
        torch.testing.assert_close(f1, f3, atol=2e-5, rtol=1e-5)
        assert (y3 - y1).abs().max() < 0.02


@pytest.mark.parametrize('arch', ARCHS)
def test_features_only_and_forward_intermediates(arch):
    m = mtvif_zoo.create_model(arch).eval()
    vis, ir = _pair()
    with torch.no_grad():
        final, feats = m.forward_intermediates(vis, ir)
        assert torch.equal(final, m.forward_features(vis, ir))
        last2 = m.forward_intermediates(vis, ir, indices=2, intermediates_only=True)
    assert [f.shape[1] for f in feats] == [i['num_chs'] for i in m.feature_info]
    assert all(f.shape[-1] == 16 // i['reduction'] for f, i in zip(feats, m.feature_info))
    assert all(torch.equal(a, b) for a, b in zip(last2, feats[-2:]))
    fm = mtvif_zoo.create_model(arch, features_only=True, out_indices=(0, 1)).eval()
    with torch.no_grad():
        out = fm(vis, ir)
    assert fm.feature_info.channels() == [i['num_chs'] for i in m.feature_info[:2]] == [o.shape[1] for o in out]
    with pytest.raises(TypeError, match='two inputs'):
        fm(vis)


@pytest.mark.parametrize('arch', ['mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv'])
def test_grad_checkpointing_same_outputs_and_gradients(arch):
    torch.manual_seed(0)
    m = mtvif_zoo.create_model(arch, backbone_args=dict(drop_path_rate=0.) if arch == 'mtvif_i' else None).train()
    vis, ir = _pair(size=(16, 16))
    ref = []
    for ck in (False, True):
        m.set_grad_checkpointing(ck)
        m.zero_grad()
        fused, seg = m(vis, ir)
        (fused.mean() + seg.mean()).backward()
        ref.append((fused.detach(), seg.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (a, b, ga), (c, d, gc) = ref
    torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(b, d, atol=1e-6, rtol=1e-5)
    for n in ga:
        torch.testing.assert_close(ga[n], gc[n], atol=1e-6, rtol=1e-4, msg=n)


def test_group_matcher_and_no_weight_decay():
    from timm.models import group_parameters
    m = mtvif_zoo.create_model('mtvif_i')
    nwd = m.no_weight_decay()
    assert nwd and all(n.endswith('relative_position_bias_table') for n in nwd)
    assert len(nwd) == sum(1 for n, _ in m.named_parameters() if 'relative_position_bias_table' in n)
    groups = group_parameters(m, m.group_matcher())
    names = [n for g in groups.values() for n in g]
    assert sorted(names) == sorted(n for n, _ in m.named_parameters())
    assert mtvif_zoo.create_model('mtvif_iii').no_weight_decay() == set()
    first = min(groups)
    assert set(groups[first]) == {'backbone.conv_first1.weight', 'backbone.conv_first1.bias'}  # the stem


@pytest.mark.parametrize('arch,kwargs', [('mtvif_iv', {}), ('mtvif_iii', dict(num_classes=0)),
                                         ('seafusion', dict(in_chans=1)),
                                         ('mtvif_ii', dict(head='mth_nohia', num_classes=4))])
def test_timm_save_for_hf_round_trip(arch, kwargs, tmp_path):
    """A model saved with timm's save_for_hf reloads with timm's local-dir: loading, same output."""
    from timm.models import save_for_hf
    torch.manual_seed(0)
    m = mtvif_zoo.create_model(arch, **kwargs).eval()
    save_for_hf(m, str(tmp_path), model_args=kwargs or None, safe_serialization=True)
    m2 = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    assert m2.num_classes == m.num_classes and m2.in_chans == m.in_chans
    x = torch.rand(1, m.in_chans, 16, 16)
    with torch.no_grad():
        assert torch.equal(m(x, x), m2(x, x))


def test_pickled_save_for_hf_folder_is_a_clear_error(tmp_path):
    from timm.models import save_for_hf
    save_for_hf(mtvif_zoo.create_model('seafusion'), str(tmp_path))  # pytorch_model.bin (pickle)
    with pytest.raises(FileNotFoundError, match='pytorch_model.bin: pickled weights.*safe_serialization=True'):
        timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
