"""Forward contract (Sec. 3.3): training returns (fused, seg); inference never runs the classifier."""
import pytest
import torch

from mtvif_zoo import create_model


def _calls(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize('name', ['mtvif_iii', 'mtvif_iv'])
def test_training_returns_fused_and_logits(name):
    torch.manual_seed(0)
    m = create_model(name).train()
    fused, seg = m(torch.rand(2, 3, 24, 32), torch.rand(2, 3, 24, 32))
    assert fused.shape == (2, 3, 24, 32) and seg.shape == (2, 9, 24, 32)
    (fused.mean() + seg.mean()).backward()
    assert m.head.seg_classifier[-1].weight.grad is not None


def test_eval_and_fuse_never_compute_the_classifier():
    torch.manual_seed(0)
    m = create_model('mtvif_iii').eval()
    cls_calls, seg_calls = _calls(m.head.seg_classifier), _calls(m.head.seg_branch)
    vis, ir = torch.rand(1, 3, 24, 32), torch.rand(1, 1, 24, 32).expand(-1, 3, -1, -1)  # IR replicated
    out = m(vis, ir)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 24, 32)
    fused = m.fuse(vis, ir)
    assert torch.equal(fused, out)
    assert cls_calls == []
    assert len(seg_calls) == 2  # HIA-F needs f_seg from the segmentation branch
    logits = m.segment(vis, ir)
    assert logits.shape == (1, 9, 24, 32) and cls_calls == [1]


def test_nohia_inference_skips_whole_segmentation_branch():
    m = create_model('mtvif_iii', head='mth_nohia').eval()
    seg_calls = _calls(m.head.seg_branch)
    m(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    assert seg_calls == []


@pytest.mark.parametrize('name,head', [('mtvif_iii', 'mth'), ('mtvif_iv', 'mth'), ('mtvif_ii', 'mth'),
                                       ('mtvif_iii', 'mth_nohia'), ('seafusion', 'cnn')])
def test_fusion_only_is_bitwise_identical_without_classifier(name, head):
    torch.manual_seed(0)
    full = create_model(name, head=head)
    # move BN statistics away from their init so eval mode matters
    full.train()
    with torch.no_grad():
        full(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    full.eval()
    deploy = full.fusion_only()
    names = [n for n, _ in deploy.named_parameters()]
    assert not any(n.startswith('head.seg_classifier') for n in names)
    if head == 'mth_nohia':
        assert not any(n.startswith('head.seg_branch') for n in names)
    n_removed = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in deploy.parameters())
    if head == 'mth':
        assert n_removed == sum(p.numel() for p in full.head.seg_classifier.parameters())
    vis, ir = torch.rand(1, 3, 32, 40), torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        assert torch.equal(full(vis, ir), deploy(vis, ir))
    assert not deploy.training and deploy.num_classes == 0
    with pytest.raises(ValueError, match='no segmentation classifier'):
        deploy.segment(vis, ir)
    # the original model is untouched
    assert full.head.has_segmentation == (head != 'cnn')


def test_mismatched_shapes_are_refused():
    m = create_model('mtvif_iii').eval()
    with pytest.raises(ValueError, match='same shape'):
        m(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 24))
