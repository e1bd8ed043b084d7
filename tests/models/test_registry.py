"""Registry: names, timm integration, keyword combinations and the errors for bad names."""
import pytest
import timm
import torch

from mtvif_zoo import MultiTaskVIF, create_model, list_backbones, list_heads, list_models

VARIANTS = ['mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv']
BASELINES = ['emma_ufuser', 'seafusion', 'segmif', 'swinfusion']


def test_list_models():
    assert list_models('mtvif*') == VARIANTS
    assert list_models() == sorted(VARIANTS + BASELINES)
    assert list_backbones() == ['seafusion', 'segmif', 'swinfusion', 'ufuser']
    assert list_heads() == ['cnn', 'mth', 'mth_nohia']


@pytest.mark.parametrize('name,backbone,head', [
    ('mtvif_i', 'swinfusion', 'mth'), ('mtvif_ii', 'ufuser', 'mth'), ('mtvif_iii', 'seafusion', 'mth'),
    ('mtvif_iv', 'segmif', 'mth'), ('swinfusion', 'swinfusion', 'cnn'), ('emma_ufuser', 'ufuser', 'cnn'),
    ('seafusion', 'seafusion', 'cnn'), ('segmif', 'segmif', 'cnn')])
def test_named_models(name, backbone, head):
    m = create_model(name)
    assert isinstance(m, MultiTaskVIF)
    assert (m.backbone_name, m.head_name, m.in_chans) == (backbone, head, 3)
    assert m.num_classes == (9 if head == 'mth' else 0)
    assert m.pretrained_cfg['architecture'] == name


def test_timm_create_model_after_import():
    m = timm.create_model('mtvif_iii')
    assert isinstance(m, MultiTaskVIF) and m.backbone_name == 'seafusion'
    # same architecture and parameter count as through the zoo's own entry point
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in create_model('mtvif_iii').parameters())


def test_keyword_combination():
    m = create_model('mtvif_iv', head='mth_nohia', in_chans=1)
    assert (m.backbone_name, m.head_name, m.in_chans) == ('segmif', 'mth_nohia', 1)
    assert m.head.hiaf is None
    m = create_model('mtvif_iii', backbone='segmif', num_classes=15)
    assert m.backbone_name == 'segmif' and m.head.seg_classifier[-1].out_channels == 15
    assert m.backbone.conv1_ir.in_channels == 3


@pytest.mark.parametrize('backbone', ['seafusion', 'segmif', 'swinfusion', 'ufuser'])
@pytest.mark.parametrize('head', ['cnn', 'mth', 'mth_nohia'])
@pytest.mark.parametrize('in_chans', [1, 3])
def test_every_backbone_with_every_head(backbone, head, in_chans):
    torch.manual_seed(0)
    m = create_model('mtvif_iii', backbone=backbone, head=head, in_chans=in_chans, num_classes=5).train()
    vis, ir = torch.rand(2, in_chans, 16, 24), torch.rand(2, in_chans, 16, 24)
    fused, seg = m(vis, ir)
    assert fused.shape == (2, in_chans, 16, 24)
    assert seg.shape == (2, 5, 16, 24)  # num_classes=5 on a cnn head: a 1x1 classifier on the features
    if head != 'cnn':
        assert 0 <= fused.min() and fused.max() <= 1  # sigmoid output
    m0 = create_model('mtvif_iii', backbone=backbone, head=head, in_chans=in_chans, num_classes=0).train()
    assert m0(vis, ir)[1] is None and not m0.has_segmentation  # num_classes=0: fusion-only


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match=r"unknown model 'mtvif_v'.*valid models: emma_ufuser, mtvif_i, mtvif_ii"):
        create_model('mtvif_v')
    with pytest.raises(ValueError, match="did you mean 'seafusion'"):
        create_model('seafus')


def test_invalid_parts_list_choices():
    with pytest.raises(ValueError,
                       match="unknown backbone 'resnet'; valid backbones: seafusion, segmif, swinfusion, ufuser"):
        create_model('mtvif_iii', backbone='resnet')
    with pytest.raises(ValueError, match="unknown head 'fpn'; valid heads: cnn, mth, mth_nohia"):
        create_model('mtvif_iii', head='fpn')
    with pytest.raises(ValueError, match='in_chans must be 1 .* or 3'):
        create_model('mtvif_iii', in_chans=2)
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['widht'\]; valid: backbone, head"):
        create_model('mtvif_iii', widht=3)
    with pytest.raises(ValueError, match='num_classes must be an int >= 0'):
        create_model('mtvif_iii', num_classes=-1)
    with pytest.raises(ValueError, match="global_pool='avg'.*no global pooling"):
        create_model('mtvif_iii', global_pool='avg')
    assert create_model('seafusion', head='mth').num_classes == 9
