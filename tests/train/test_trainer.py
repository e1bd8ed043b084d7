"""The trainer on tiny models and a handful of 24x28 images: outputs, resume, NaN, empty data, CLI, export."""
import csv
import json

import pytest
import torch
from safetensors.torch import load_file

import mtvif_zoo
from mtvif_zoo.cli import main
from mtvif_zoo.data import DatasetError
from mtvif_zoo.train import (
    LOG_COLUMNS,
    RECIPES,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    model_from_checkpoint,
    read_state,
    train,
)


def _cfg(data, out, model_args, **kw):
    base = dict(model='mtvif_iii', data=str(data), out=str(out), crop=16, batch_size=2, epochs=2, workers=0,
                progress=False, model_args=model_args)
    base.update(kw)
    return TrainConfig(**base)


def _rows(out):
    with open(out / 'log.csv') as f:
        return list(csv.DictReader(f))


def test_recipes_follow_the_paper():
    assert RECIPES['mtvif_i'] == dict(lr=1e-4, crop=160, batch_size=10)
    for name in ('mtvif_ii', 'mtvif_iii', 'mtvif_iv', 'emma_ufuser', 'seafusion', 'segmif'):
        assert RECIPES[name] == dict(lr=5e-5, crop=256, batch_size=16)
    cfg = TrainConfig(model='mtvif_i', data='d', out='o').resolved()
    assert (cfg.lr, cfg.crop, cfg.batch_size, cfg.epochs, cfg.patience, cfg.val_crop) == (1e-4, 160, 10, 100, 10, 160)
    assert set(RECIPES) == set(mtvif_zoo.list_models())


def test_short_run_writes_log_checkpoints_and_config(tiny_data, tmp_path, tiny_mtvif, capsys):
    out = tmp_path / 'run'
    summary = train(_cfg(tiny_data, out, tiny_mtvif, grad_projection=1))
    assert summary['global_step'] == 6 and summary['stop_reason'] == 'epochs'
    for f in ('config.json', 'log.csv', 'log.jsonl', 'last/model.safetensors', 'last/optimizer.safetensors',
              'last/state.json', 'best/model.safetensors', 'best/state.json'):
        assert (out / f).is_file(), f
    rows = _rows(out)
    assert list(rows[0]) == list(LOG_COLUMNS) and [r['epoch'] for r in rows] == ['1', '2']
    for t in ('total', 'fusion', 'int', 'grad', 'ssim', 'color', 'seg', 'ce', 'dice'):
        assert float(rows[0][f'train_{t}']) > 0 and float(rows[0][f'val_{t}']) > 0
    assert 0 <= float(rows[1]['val_miou']) <= 1
    assert rows[0]['gp_fusion_on_seg'] != '' and rows[0]['gp_seg_on_fusion'] != ''
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['train']['lr'] == 5e-5 and cfg['dataset']['train_pairs'] == 7 and cfg['dataset']['val_pairs'] == 1
    st = read_state(out / 'last')
    assert st['global_step'] == 6 and st['epoch'] == 2 and st['early_stopping']['best'] is not None
    assert 'step 6' in capsys.readouterr().out
    # checkpoints hold no pickle: safetensors + JSON
    assert set(load_file(str(out / 'last' / 'optimizer.safetensors'))) >= {'state.0.exp_avg', 'state.0.step'}
    with pytest.raises(FileExistsError, match='--resume'):
        train(_cfg(tiny_data, out, tiny_mtvif))


def test_resume_mid_epoch_gives_identical_weights(tiny_data, tmp_path, tiny_mtvif):
    a, b = tmp_path / 'a', tmp_path / 'b'
    train(_cfg(tiny_data, a, tiny_mtvif, max_steps=5))
    train(_cfg(tiny_data, b, tiny_mtvif, max_steps=2))  # stops inside epoch 1 (3 steps per epoch)
    assert read_state(b / 'last')['batch'] == 2
    train(_cfg(tiny_data, b, tiny_mtvif, max_steps=5, resume=True))
    wa, wb = load_file(str(a / 'last' / 'model.safetensors')), load_file(str(b / 'last' / 'model.safetensors'))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = _rows(a), _rows(b)
    assert ra[-1]['train_total'] == rb[-1]['train_total'] and ra[-1]['val_total'] == rb[-1]['val_total']


def test_nan_loss_stops_naming_step_and_term(tiny_data, tmp_path, tiny_mtvif, monkeypatch):
    import mtvif_zoo.losses as losses
    real = losses.intensity_loss
    calls = {'n': 0}

    def flaky(f, v, i):
        calls['n'] += 1
        out = real(f, v, i)
        return out * float('nan') if calls['n'] == 3 else out

    monkeypatch.setattr(losses, 'intensity_loss', flaky)
    out = tmp_path / 'run'
    with pytest.raises(NonFiniteLossError, match=r'step 3 \(epoch 1, batch 3\): term int = nan') as e:
        train(_cfg(tiny_data, out, tiny_mtvif, ckpt_every=1))
    assert str(out / 'last') in str(e.value)
    assert read_state(out / 'last')['global_step'] == 2  # the last good checkpoint is kept


def test_empty_or_broken_dataset_fails_before_training(tmp_path, make_data, tiny_mtvif):
    empty = tmp_path / 'empty'
    for d in ('vi', 'ir', 'label'):
        (empty / d).mkdir(parents=True)
    with pytest.raises(DatasetError, match='empty'):
        Trainer(_cfg(empty, tmp_path / 'o1', tiny_mtvif))
    bad = make_data(tmp_path / 'bad', n=4)
    (bad / 'label' / '002.png').write_bytes(b'garbage')
    with pytest.raises(DatasetError, match='002.png: unreadable label'):
        Trainer(_cfg(bad, tmp_path / 'o2', tiny_mtvif))
    assert not (tmp_path / 'o2').exists()


def test_one_channel_mode_and_baseline_without_segmentation(tiny_data, tmp_path, tiny_mtvif, tiny_seafusion):
    out = tmp_path / 'y'
    train(_cfg(tiny_data, out, tiny_mtvif, in_chans=1, epochs=1))
    row = _rows(out)[0]
    assert row['train_color'] == '' and float(row['train_int']) > 0 and row['train_seg'] != ''
    out = tmp_path / 'sea'
    train(_cfg(tiny_data, out, tiny_seafusion, model='seafusion', epochs=1))
    row = _rows(out)[0]
    assert row['train_seg'] == row['train_ce'] == row['val_miou'] == '' and float(row['train_color']) > 0
    assert float(row['train_total']) == pytest.approx(float(row['train_fusion']), rel=1e-5)


def test_cli_train_resume_and_export(tiny_data, tmp_path, tiny_mtvif):
    out = tmp_path / 'run'
    args = ['train', '--model', 'mtvif_iii', '--data', str(tiny_data), '--out', str(out), '--crop', '16',
            '--batch-size', '2', '--epochs', '1', '--workers', '0', '--no-progress', '--model-args',
            json.dumps(tiny_mtvif), '--loss-weights', 'beta2=0.5']
    assert main(args) == 0
    assert json.loads((out / 'config.json').read_text())['loss_weights']['beta2'] == 0.5
    assert main(['train', '--model', 'mtvif_iii', '--data', str(tiny_data), '--out', str(out), '--epochs', '2',
                 '--resume', '--no-progress']) == 0
    assert [r['epoch'] for r in _rows(out)] == ['1', '2']
    assert main(['train', '--model', 'mtvif_iii', '--data', str(tiny_data), '--out', str(out), '--lr', '1',
                 '--resume']) == 2  # a resumed run keeps its recipe
    exp = tmp_path / 'exported'
    assert main(['export', '--checkpoint', str(out / 'best'), '--out', str(exp)]) == 0
    cfg = json.loads((exp / 'config.json').read_text())
    # written by mtvif_zoo.hub.save_pretrained when the hub exists (model_args), else by the trainer itself
    args = cfg.get('model_args', cfg)
    assert (cfg['architecture'], args['backbone'], args['head'], args['in_chans']) == ('mtvif_iii', 'seafusion',
                                                                                       'mth', 3)
    assert (exp / 'README.md').is_file()
    weights = load_file(str(exp / 'model.safetensors'))
    assert not any(k.startswith('head.seg_classifier') for k in weights)
    full, _ = model_from_checkpoint(out / 'best')
    fusion = full.fusion_only()
    fusion.load_state_dict(weights)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(fusion(x, x), full(x, x))


def test_grad_projection_is_the_scalar_projection_on_backbone_gradients(tiny_data, tmp_path, tiny_mtvif):
    from mtvif_zoo.train import model_inputs
    t = Trainer(_cfg(tiny_data, tmp_path / 'gp', tiny_mtvif, grad_projection=1))
    batch = next(iter(t.train_loader))
    v, i = model_inputs(batch['vis'], batch['ir'], 3)
    fused, logits = t.model(v, i)
    out = t.loss_fn(fused, v, i, logits, batch['label'])
    gp = t._grad_projection(out)
    grads = []
    for loss in (out.fusion, out.seg):
        t.model.zero_grad()
        loss.backward(retain_graph=True)
        grads.append(torch.cat([p.grad.flatten().double() for p in t.model.backbone.parameters()]))
    gf, gs = grads
    dot = (gf * gs).sum()
    assert gp[0].item() == pytest.approx((dot / gs.norm()).item(), rel=1e-6)
    assert gp[1].item() == pytest.approx((dot / gf.norm()).item(), rel=1e-6)
    assert gp[2].item() == pytest.approx(torch.nn.functional.cosine_similarity(gf, gs, dim=0).item(), rel=1e-6)


def test_init_from_weights_and_gain_options(tiny_data, tmp_path, tiny_mtvif):
    first = tmp_path / 'a'
    train(_cfg(tiny_data, first, tiny_mtvif, epochs=1))
    init = first / 'best' / 'model.safetensors'
    out = tmp_path / 'b'
    t = Trainer(_cfg(tiny_data, out, tiny_mtvif, epochs=1, init_from=str(init), ir_gain=[0.3, 1.0]).resolved())
    ref = load_file(str(init))
    assert all(torch.equal(v, ref[k]) for k, v in t.model.state_dict().items())  # starts from the given weights
    assert t.train_set.ir_gain == (0.3, 1.0)


def test_bf16_amp_is_recorded_and_resumes_to_identical_weights(tiny_data, tmp_path, tiny_mtvif):
    a, b, f = tmp_path / 'a', tmp_path / 'b', tmp_path / 'fp32'
    train(_cfg(tiny_data, a, tiny_mtvif, max_steps=5, amp='bf16'))
    train(_cfg(tiny_data, b, tiny_mtvif, max_steps=2, amp='bf16'))  # stops inside epoch 1 (3 steps per epoch)
    assert read_state(b / 'last')['batch'] == 2
    train(_cfg(tiny_data, b, tiny_mtvif, max_steps=5, resume=True))  # the saved mode (bf16) is kept
    wa, wb = load_file(str(a / 'last' / 'model.safetensors')), load_file(str(b / 'last' / 'model.safetensors'))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # master weights and Adam state stay fp32
    assert all(v.dtype == torch.float32 for v in wa.values() if v.is_floating_point())
    opt = load_file(str(a / 'last' / 'optimizer.safetensors'))
    assert all(v.dtype == torch.float32 for k, v in opt.items() if 'exp_avg' in k)
    assert _rows(a)[-1]['train_total'] == _rows(b)[-1]['train_total']
    for run in (a, b):
        cfg = json.loads((run / 'config.json').read_text())
        assert (cfg['train']['amp'], cfg['amp'], cfg['amp_dtype']) == ('bf16', True, 'bfloat16')
    # bf16 really changes the arithmetic: the same seed in fp32 ends with different (but close) weights
    train(_cfg(tiny_data, f, tiny_mtvif, max_steps=5, amp='off'))
    wf = load_file(str(f / 'last' / 'model.safetensors'))
    assert json.loads((f / 'config.json').read_text())['amp_dtype'] is None
    assert not all(torch.equal(wa[k], wf[k]) for k in wa)
    assert max((wa[k] - wf[k]).abs().max().item() for k in wa) < 0.05
    # changing the precision of a saved run on resume is refused
    with pytest.raises(ValueError, match="amp: saved 'bf16', given 'off'"):
        train(_cfg(tiny_data, b, tiny_mtvif, max_steps=6, amp='off', resume=True))


def test_amp_modes_and_errors(tiny_data, tmp_path, tiny_mtvif):
    from mtvif_zoo.train.config import normalize_amp
    from mtvif_zoo.train.trainer import resolve_amp
    cpu = torch.device('cpu')
    assert [normalize_amp(v) for v in (None, True, False, 'bfloat16', 'fp32')] == ['auto', 'on', 'off', 'bf16', 'off']
    assert resolve_amp('auto', cpu) == (False, None) and resolve_amp('on', cpu) == (True, torch.bfloat16)
    assert resolve_amp('bf16', cpu) == (True, torch.bfloat16)
    with pytest.raises(ValueError, match='amp must be one of'):
        TrainConfig(amp='int8')
    with pytest.raises(ValueError, match='fp16 needs a CUDA device.*--amp bf16'):
        Trainer(_cfg(tiny_data, tmp_path / 'o', tiny_mtvif, amp='fp16', device='cpu'))
    assert main(['train', '--model', 'mtvif_iii', '--data', str(tiny_data), '--out', str(tmp_path / 'c'),
                 '--crop', '16', '--batch-size', '2', '--max-steps', '1', '--workers', '0', '--no-progress',
                 '--model-args', json.dumps(tiny_mtvif), '--amp', 'bf16']) == 0
    assert json.loads((tmp_path / 'c' / 'config.json').read_text())['train']['amp'] == 'bf16'
