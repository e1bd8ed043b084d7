"""Checkpoint selection off the test set (fusion quality on a selection set) and the MSRS-test-name guard."""
import csv
import json
import shutil
from pathlib import Path

import pytest

from mtvif_zoo.cli import main
from mtvif_zoo.evaluate import evaluate
from mtvif_zoo.train import TrainConfig, Trainer, read_state, train
from mtvif_zoo.train.selection import (
    PAPER_METRICS,
    MSRSTestLeakError,
    Selector,
    best_index,
    msrs_test_names,
    rank_candidates,
)


def _cfg(data, out, model_args, **kw):
    base = dict(model='mtvif_iii', data=str(data), out=str(out), crop=16, batch_size=2, epochs=3, workers=0,
                progress=False, model_args=model_args)
    base.update(kw)
    return TrainConfig(**base)


def test_msrs_test_names_are_the_361_of_the_split():
    names = msrs_test_names()
    assert len(names) == 361 and {'00004N', '00103D', '00107D'} <= names and '00001D' not in names


def test_rank_and_rules_on_known_numbers():
    refs = {'average': dict(EN=6.0, MI=2.0, VIF=0.7, Qabf=0.4, SSIM=1.0, MSS=1.0, dE=5.0),
            'max': dict(EN=6.5, MI=2.5, VIF=0.8, Qabf=0.6, SSIM=0.9, MSS=0.9, dE=4.0)}
    a = dict(EN=7.0, MI=3.0, VIF=0.9, Qabf=0.7, SSIM=0.8, MSS=0.8, dE=3.0)   # beats both on 5 metrics
    b = dict(EN=7.0, MI=1.0, VIF=0.6, Qabf=0.3, SSIM=1.1, MSS=1.1, dE=6.0)   # beats both on 3
    r = rank_candidates([a, b], refs)
    # ranks of a: EN 1.5 (tie with b), MI 1, VIF 1, Qabf 1, SSIM 4, MSS 4, dE 1 -> 13.5 / 7
    assert r[0] == {'mean_rank': pytest.approx(13.5 / 7), 'wins': 5}
    # b: EN 1.5, MI 4, VIF 4, Qabf 4, SSIM 1, MSS 1, dE 4 -> 19.5 / 7
    assert r[1] == {'mean_rank': pytest.approx(19.5 / 7), 'wins': 3}
    assert best_index(r, 'mean_rank') == 0 and best_index(r, 'wins') == 0
    assert best_index([{'mean_rank': 2.0, 'wins': 3}, {'mean_rank': 2.0, 'wins': 3}], 'mean_rank') == 0  # earlier
    assert best_index([{'mean_rank': 1.5, 'wins': 2}, {'mean_rank': 2.5, 'wins': 3}], 'wins') == 1


def test_training_and_selection_images_with_msrs_test_names_are_refused(make_data, tmp_path, tiny_mtvif):
    data = make_data(tmp_path / 'data', n=4)
    for d in ('vi', 'ir', 'label'):
        shutil.move(str(data / d / '002.png'), str(data / d / '00103D.png'))
    with pytest.raises(MSRSTestLeakError,
                       match=r"1 training / validation image name\(s\).*\(00103D;.*vi/00103D.png.*--splits clean"):
        Trainer(_cfg(data, tmp_path / 'o', tiny_mtvif))
    assert not (tmp_path / 'o').exists()
    Trainer(_cfg(data, tmp_path / 'o', tiny_mtvif, allow_msrs_test_names=True))  # explicit opt-out
    sel = make_data(tmp_path / 'sel', n=2, labels=False)
    shutil.move(str(sel / 'vi' / '001.png'), str(sel / 'vi' / '00004N.png'))
    shutil.move(str(sel / 'ir' / '001.png'), str(sel / 'ir' / '00004N.png'))
    with pytest.raises(MSRSTestLeakError, match='selection image.*00004N'):
        Selector(sel)
    good = make_data(tmp_path / 'good', n=4)
    unl = make_data(tmp_path / 'unl', n=2, labels=False)
    shutil.move(str(unl / 'vi' / '000.png'), str(unl / 'vi' / '00008N.png'))
    shutil.move(str(unl / 'ir' / '000.png'), str(unl / 'ir' / '00008N.png'))
    with pytest.raises(MSRSTestLeakError, match='unlabelled image'):
        Trainer(_cfg(good, tmp_path / 'o2', tiny_mtvif, unlabelled=str(unl)))
    code = main(['train', '--model', 'mtvif_iii', '--data', str(good), '--out', str(tmp_path / 'o3'),
                 '--select-on', str(sel), '--model-args', json.dumps(tiny_mtvif)])
    assert code == 2


def test_selection_chooses_best_by_the_rule_and_resumes(make_data, tmp_path, tiny_mtvif):
    data = make_data(tmp_path / 'data', n=5)
    sel = make_data(tmp_path / 'sel', n=2, size=(32, 40), seed=3, labels=False)
    out = tmp_path / 'run'
    kw = dict(select_on=str(sel), lr=5e-3)
    train(_cfg(data, out, tiny_mtvif, max_steps=4, **kw))  # 2 steps per epoch: stops after epoch 2
    cfg = json.loads((out / 'config.json').read_text())
    assert (cfg['train']['select_on'], cfg['train']['select_rule'], cfg['train']['select_every']) == \
        (str(sel), 'mean_rank', 1)
    st = read_state(out / 'last')
    sel_state = st['selection']
    # the references are the ones evaluate() gives for the selection pairs, paper convention
    ref = evaluate(None, sel / 'vi', sel / 'ir', metrics=list(PAPER_METRICS), references=('average', 'max'),
                   progress=False, workers=1, pool='thread').summary
    for m in ('EN', 'MI', 'Qabf', 'SSIM', 'dE'):
        assert sel_state['references']['max'][m] == pytest.approx(ref['max (reference)'][m], rel=1e-12)
    assert [h['epoch'] for h in sel_state['history']] == [1, 2]
    with open(out / 'log.csv') as f:
        rows = list(csv.DictReader(f))
    ranked = rank_candidates([h['metrics'] for h in sel_state['history']], sel_state['references'])
    for r, h in zip(rows, sel_state['history']):
        assert float(r['select_EN']) == pytest.approx(h['metrics']['EN'], rel=1e-5)
    assert float(rows[1]['select_mean_rank']) == pytest.approx(ranked[1]['mean_rank'], rel=1e-5)
    want = best_index(ranked, 'mean_rank') + 1
    assert read_state(out / 'best')['global_step'] == 2 * want
    assert [r['best'] for r in rows] == (['1', '1'] if want == 2 else ['1', '0'])
    # resume: the history goes on (epoch 3), ranked against the saved epochs
    train(_cfg(data, out, tiny_mtvif, max_steps=6, resume=True, **kw))
    assert [h['epoch'] for h in read_state(out / 'last')['selection']['history']] == [1, 2, 3]


MFNET = Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'mfnet220'


@pytest.mark.skipif(not MFNET.is_dir(), reason=f'{MFNET} absent (the shared data folder is not beside the repository)')
def test_mfnet220_old_splits_are_refused_and_the_clean_ones_accepted(tmp_path, tiny_mtvif):
    with pytest.raises(MSRSTestLeakError, match=r'46 training / validation image name\(s\).*00103D'):
        Trainer(_cfg(MFNET, tmp_path / 'a', tiny_mtvif, crop=128))
    t = Trainer(_cfg(MFNET, tmp_path / 'b', tiny_mtvif, crop=128, splits='clean'))
    assert (len(t.train_set), len(t.val_set)) == (137, 17)
    names = msrs_test_names()
    assert not any(r.stem in names for r in t.train_set.records + t.val_set.records)
    with pytest.raises(Exception, match='split folder .*nothere not found'):
        Trainer(_cfg(MFNET, tmp_path / 'c', tiny_mtvif, crop=128, splits='nothere'))
