"""Semi-supervised multi-task training: labelled pairs get L_total, unlabelled pairs L_fusion only."""
import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from mtvif_zoo.cli import main
from mtvif_zoo.data import MixedBatchSampler
from mtvif_zoo.losses import MultiTaskVIFLoss
from mtvif_zoo.train import TrainConfig, Trainer, model_inputs, read_state, train


def _cfg(data, out, model_args, **kw):
    base = dict(model='mtvif_iii', data=str(data), out=str(out), crop=16, batch_size=4, epochs=2, workers=0,
                progress=False, model_args=model_args)
    base.update(kw)
    return TrainConfig(**base)


def _batch(seed=0, b=4, h=16, w=16):
    g = torch.Generator().manual_seed(seed)
    vis, ir = torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)
    fused = torch.rand(b, 3, h, w, generator=g)
    logits = torch.randn(b, 9, h, w, generator=g)
    labels = torch.randint(0, 9, (b, h, w), generator=g)
    return fused, vis, ir, logits, labels


def test_mixed_batch_seg_is_the_labelled_subsets_and_fusion_the_whole_batchs():
    fn = MultiTaskVIFLoss()
    fused, vis, ir, logits, labels = _batch()
    mask = torch.tensor([True, False, True, False])
    labels_u = labels.clone()
    labels_u[~mask] = -1  # what MixedDataset fills in: never read
    out = fn(fused, vis, ir, logits, labels_u, labelled=mask)
    sub = fn(fused[mask], vis[mask], ir[mask], logits[mask], labels[mask])
    for t in ('seg', 'ce', 'dice'):
        assert torch.equal(out.terms[t], sub.terms[t]), t
    whole = fn(fused, vis, ir)  # fusion terms over the whole batch, no mask
    for t in ('fusion', 'int', 'grad', 'ssim', 'color'):
        assert out.terms[t].item() == pytest.approx(whole.terms[t].item(), rel=1e-6), t
    unl = fn(fused[~mask], vis[~mask], ir[~mask])
    assert torch.equal(out.by_kind['labelled']['fusion'], sub.terms['fusion'])
    assert torch.equal(out.by_kind['unlabelled']['fusion'], unl.terms['fusion'])
    assert out.counts == {'labelled': 2, 'unlabelled': 2}
    assert out.total.item() == pytest.approx((whole.terms['fusion'] + sub.terms['seg']).item(), rel=1e-6)


def test_unlabelled_only_batch_is_exactly_l_fusion_with_no_seg_gradient(tiny_mtvif):
    import mtvif_zoo
    torch.manual_seed(0)
    model = mtvif_zoo.create_model('mtvif_iii', **tiny_mtvif).train()
    fn = MultiTaskVIFLoss()
    _, vis, ir, _, labels = _batch(1)
    fused, logits = model(vis, ir)
    out = fn(fused, vis, ir, logits, torch.full_like(labels, -1), labelled=torch.zeros(4, dtype=torch.bool))
    ref = fn(fused, vis, ir)
    assert 'seg' not in out.terms and 'ce' not in out.terms and out.seg is None
    assert torch.equal(out.total, ref.total) and torch.equal(out.terms['fusion'], ref.terms['fusion'])
    out.total.backward()
    cls = [p for n, p in model.named_parameters() if n.startswith('head.seg_classifier')]
    assert cls and all(p.grad is None or not p.grad.any() for p in cls)
    assert any(p.grad is not None and p.grad.any() for n, p in model.named_parameters() if 'backbone' in n)


def test_mixed_sampler_composition_epochs_and_resume():
    s = MixedBatchSampler(num_labelled=7, num_unlabelled=5, n_labelled=2, n_unlabelled=2, seed=0)
    assert s.batches_per_epoch == 3 and s.batch_size == 4
    epochs = []
    for e in range(3):
        s.set_epoch(e)
        epochs.append(list(s))
    for batches in epochs:
        for b in batches:
            assert [i < 7 for _, i in b] == [True, True, False, False]
        lab = [i for b in batches for _, i in b if i < 7]
        assert len(set(lab)) == 6  # one pass over the labelled pairs (the incomplete last batch dropped)
    unl = [i for batches in epochs for b in batches for _, i in b if i >= 7]
    # the unlabelled pairs are drawn evenly: each of the 5 used 18 / 5 times (3 or 4)
    counts = [unl.count(7 + k) for k in range(5)]
    assert sum(counts) == 18 and min(counts) >= 3 and max(counts) <= 4
    s.set_epoch(1, 2)
    assert list(s) == epochs[1][2:]  # resume mid-epoch replays the rest identically
    # two processes with half the batch each see the samples one process sees
    r0 = MixedBatchSampler(7, 5, 1, 1, 0, 0, 2)
    r1 = MixedBatchSampler(7, 5, 1, 1, 0, 1, 2)
    one = MixedBatchSampler(7, 5, 2, 2, 0)
    for x in (r0, r1, one):
        x.set_epoch(1)
    for a, b, c in zip(r0, r1, one):
        assert sorted(a + b) == sorted(c)


def test_semisupervised_run_logs_both_kinds_records_the_ratio_and_resumes(make_data, tmp_path, tiny_mtvif):
    lab = make_data(tmp_path / 'lab', n=8)
    unl = make_data(tmp_path / 'unl', n=5, seed=1, labels=False)
    a, b = tmp_path / 'a', tmp_path / 'b'
    train(_cfg(lab, a, tiny_mtvif, unlabelled=str(unl), unlabelled_ratio=0.5, max_steps=5))
    cfg = json.loads((a / 'config.json').read_text())
    assert cfg['train']['unlabelled_ratio'] == 0.5 and cfg['train']['unlabelled'] == str(unl)
    ds = cfg['dataset']
    assert (ds['train_pairs'], ds['unlabelled_pairs'], ds['labelled_per_batch'], ds['unlabelled_per_batch']) == \
        (7, 5, 2, 2)
    with open(a / 'log.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['train_samples_labelled'] for r in rows] == ['6', '4'] == [r['train_samples_unlabelled']
                                                                           for r in rows]
    for r in rows:
        fl, fu = float(r['train_fusion_labelled']), float(r['train_fusion_unlabelled'])
        assert fl > 0 and fu > 0 and fl != fu
        # equal counts of each kind in every batch: the batch fusion is the mean of the two kinds
        assert float(r['train_fusion']) == pytest.approx((fl + fu) / 2, rel=1e-4)
        assert float(r['train_seg']) > 0
    # resume mid-epoch: the same weights as the uninterrupted run
    train(_cfg(lab, b, tiny_mtvif, unlabelled=str(unl), unlabelled_ratio=0.5, max_steps=2))
    assert read_state(b / 'last')['batch'] == 2
    train(_cfg(lab, b, tiny_mtvif, max_steps=5, resume=True))
    wa, wb = load_file(str(a / 'last' / 'model.safetensors')), load_file(str(b / 'last' / 'model.safetensors'))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / 'log.csv').read_text() .splitlines()[-1].split(',')[4] == \
        (b / 'log.csv').read_text().splitlines()[-1].split(',')[4]


def test_semisupervised_step_matches_the_loss_of_its_two_kinds(make_data, tmp_path, tiny_mtvif):
    lab = make_data(tmp_path / 'lab', n=8)
    unl = make_data(tmp_path / 'unl', n=5, seed=1, labels=False)
    t = Trainer(_cfg(lab, tmp_path / 'o', tiny_mtvif, unlabelled=str(unl), unlabelled_ratio=0.25))
    assert (t.config.batch_size - t.n_unlabelled, t.n_unlabelled) == (3, 1)
    batch = next(iter(t.train_loader))
    assert batch['labelled'].tolist() == [True, True, True, False]
    assert (batch['label'][3] == -1).all() and (batch['label'][:3] >= 0).all()
    v, i = model_inputs(batch['vis'], batch['ir'], 3)
    t.model.train()
    fused, logits = t.model(v, i)
    m = batch['labelled']
    ref = t.loss_fn(fused[m], v[m], i[m], logits[m], batch['label'][m])
    out = t.loss_fn(fused, v, i, logits, batch['label'], labelled=m)
    assert torch.equal(out.terms['seg'], ref.terms['seg'])


def test_semisupervised_options_are_checked(make_data, tmp_path, tiny_mtvif):
    lab = make_data(tmp_path / 'lab', n=8)
    unl = make_data(tmp_path / 'unl', n=1, seed=1, labels=False)
    with pytest.raises(ValueError, match='unlabelled_ratio must be in'):
        Trainer(_cfg(lab, tmp_path / 'o', tiny_mtvif, unlabelled=str(unl), unlabelled_ratio=1.0))
    with pytest.raises(ValueError, match='without unlabelled data'):
        Trainer(_cfg(lab, tmp_path / 'o', tiny_mtvif, unlabelled_ratio=0.5))
    with pytest.raises(ValueError, match='fewer than the 2 x 1'):
        Trainer(_cfg(lab, tmp_path / 'o', tiny_mtvif, unlabelled=str(unl)))
    assert main(['train', '--model', 'mtvif_iii', '--data', str(lab), '--out', str(tmp_path / 'c'), '--crop', '16',
                 '--batch-size', '2', '--max-steps', '1', '--workers', '0', '--no-progress', '--model-args',
                 json.dumps(tiny_mtvif), '--unlabelled', str(unl), '--unlabelled-ratio', '0.5']) == 0
    assert json.loads((tmp_path / 'c' / 'config.json').read_text())['dataset']['unlabelled_per_batch'] == 1
