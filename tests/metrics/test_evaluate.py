"""``mtvif_zoo.evaluate`` and ``mtvif eval``: tables, CSV / JSON, and every problem named."""
import argparse
import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from mtvif_zoo.evaluate import evaluate
from mtvif_zoo.metrics import compute

H, W = 168, 176

# evaluate() warns about every problem it names; the tests check result.problems instead
pytestmark = pytest.mark.filterwarnings('ignore:unmatched', 'ignore:unreadable', 'ignore:skipped',
                                        'ignore:method .*no fused image')


def _write(p, a):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(p)


@pytest.fixture()
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    stems = ['00001D', 'a_b', '00003N']          # an underscore in a stem on purpose
    for s in stems:
        vis = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        vis[40:90, 30:100] = (200, 120, 40)
        ir = rng.integers(0, 256, (H, W), dtype=np.uint8)
        ir[60:120, 50:150] = 230
        _write(tmp_path / 'vi' / f'{s}.png', vis)
        _write(tmp_path / 'ir' / f'{s}.png', ir)
        avg = ((vis.astype(np.uint16) + ir[..., None] + 1) // 2).astype(np.uint8)
        _write(tmp_path / 'fused' / 'avg' / f'{s}.png', avg)
        _write(tmp_path / 'fused' / 'max_rule' / f'{s}.png', np.maximum(vis, ir[..., None]))
        _write(tmp_path / 'flat' / f'{s}_avg.png', avg)
        _write(tmp_path / 'flat' / f'{s}_max_rule.png', np.maximum(vis, ir[..., None]))
    _write(tmp_path / 'vi' / 'lonely.png', np.zeros((H, W, 3), np.uint8))             # no infrared partner
    _write(tmp_path / 'fused' / 'avg' / 'stray.png', np.zeros((H, W, 3), np.uint8))   # no pair
    (tmp_path / 'fused' / 'max_rule' / '00003N.png').write_bytes(b'garbage')          # unreadable
    _write(tmp_path / 'fused' / 'small' / '00001D.png', np.zeros((H - 8, W, 3), np.uint8))  # wrong size
    return tmp_path, stems


def test_evaluate_folders_of_methods(dataset):
    root, stems = dataset
    with pytest.warns(UserWarning, match='stray.png'):
        res = evaluate(root / 'fused', root / 'vi', root / 'ir', metrics=['EN', 'MI', 'SSIM', 'Qabf', 'dE'],
                       convention='paper', out=root / 'out', progress=False)
    assert list(res.summary) == ['avg', 'max_rule', 'small']
    assert res.counts == {'avg': 3, 'max_rule': 2, 'small': 0} and res.num_pairs == 3
    # means are the means of compute() over the evaluated images
    for m, ss in (('avg', stems), ('max_rule', stems[:2])):
        per = [compute(root / 'fused' / m / f'{s}.png', root / 'vi' / f'{s}.png', root / 'ir' / f'{s}.png',
                       metrics=['EN', 'MI', 'SSIM', 'Qabf', 'dE'], convention='paper') for s in ss]
        for k in ('EN', 'MI', 'SSIM', 'Qabf', 'dE'):
            assert res.summary[m][k] == pytest.approx(np.mean([p[k] for p in per]), abs=1e-12)
    text = '\n'.join(res.problems)
    for needle in ('lonely.png', 'stray.png', f'{root / "fused" / "max_rule" / "00003N.png"}',
                   'small/00001D.png', 'is 176x160 but its sources are 176x168'):
        assert needle in text, needle
    # the problems that left an image out (mtvif eval: exit code 1); unmatched files are not among them
    assert len(res.skipped) == 2 and all(p in res.problems for p in res.skipped)
    assert '00003N.png' in res.skipped[0] + res.skipped[1] and 'small/00001D.png' in res.skipped[0] + res.skipped[1]
    # table like the paper's Table 4, convention named
    table = res.table()
    assert "convention 'paper'" in table and 'CDDFuse' in table
    assert table.splitlines()[3].split()[:7] == ['Method', 'n', 'EN', 'MI', 'Qabf', 'SSIM', 'dE']
    assert any(l.startswith('avg') and l.split()[1] == '3' for l in table.splitlines())
    # files
    rows = list(csv.DictReader(open(root / 'out' / 'per_image.csv')))
    assert len(rows) == 5 and {r['method'] for r in rows} == {'avg', 'max_rule'}
    summ = list(csv.DictReader(open(root / 'out' / 'summary.csv')))
    assert summ[0]['method'] == 'avg' and summ[0]['convention'] == 'paper'
    assert float(summ[0]['SSIM']) == pytest.approx(res.summary['avg']['SSIM'])
    js = json.loads((root / 'out' / 'results.json').read_text(), parse_constant=lambda c: pytest.fail(c))
    assert js['convention']['name'] == 'paper' and js['convention']['ssim_data_range'] == 2.0
    assert js['summary']['small']['EN'] is None  # NaN (no images) -> null in strict JSON
    assert len(js['problems']) == len(res.problems)


def test_evaluate_flat_vifb_style_pattern(dataset):
    root, stems = dataset
    res = evaluate(root / 'flat', root / 'vi', root / 'ir', metrics=['EN', 'SD'], convention='vifb',
                   pattern='{image}_{method}', progress=False, workers=2)
    assert sorted(res.summary) == ['avg', 'max_rule'] and res.counts == {'avg': 3, 'max_rule': 3}
    assert {r['image'] for r in res.rows} == set(stems)          # 'a_b_avg' -> image 'a_b', method 'avg'
    ref = compute(root / 'flat' / 'a_b_max_rule.png', root / 'vi' / 'a_b.png', root / 'ir' / 'a_b.png',
                  metrics=['EN', 'SD'], convention='vifb')
    row = [r for r in res.rows if r['image'] == 'a_b' and r['method'] == 'max_rule'][0]
    assert row['EN'] == pytest.approx(ref['EN']) and row['SD'] == pytest.approx(ref['SD'])
    assert "convention 'vifb'" in res.table()
    serial = evaluate(root / 'flat', root / 'vi', root / 'ir', metrics=['EN', 'SD'], convention='vifb',
                      pattern='{image}_{method}', progress=False, workers=1)
    assert serial.rows == res.rows and serial.summary == res.summary  # same for any number of workers


def test_evaluate_worker_pools_agree(dataset):
    """Worker processes (the Linux default) and threads give the serial results, problems included;
    also after torch ran multi-threaded in the parent."""
    import sys

    import torch
    root, _ = dataset
    torch.nn.functional.conv2d(torch.rand(1, 8, 64, 64), torch.rand(8, 8, 3, 3))  # parent uses its thread pool
    kw = dict(metrics=['EN', 'MI', 'SSIM', 'VIF', 'dE'], convention='paper', progress=False)
    serial = evaluate(root / 'fused', root / 'vi', root / 'ir', workers=1, **kw)
    pools = ['thread'] + (['process'] if sys.platform.startswith('linux') else [])
    for pool in pools:
        par = evaluate(root / 'fused', root / 'vi', root / 'ir', workers=2, pool=pool, **kw)
        assert par.rows == serial.rows and par.summary == serial.summary and par.problems == serial.problems, pool
    with pytest.raises(ValueError, match="pool must be 'process' or 'thread'"):
        evaluate(root / 'fused', root / 'vi', root / 'ir', workers=2, pool='gpu', **kw)


def test_evaluate_process_pool_never_forks_the_caller(dataset, monkeypatch):
    """Bug (CI hung 90 min in test_evaluate_worker_pools_agree): the process pool forked the caller,
    and a child forked while another thread of the parent held the MKL allocator lock spun forever
    in its first allocation. Workers now start from a forkserver (spawn where there is none), whose
    single-threaded server holds no such lock; the results are unchanged."""
    import importlib
    import multiprocessing as mp

    ev = importlib.import_module('mtvif_zoo.evaluate')  # (the package attribute is the function)
    root, _ = dataset
    seen = {}

    class Recording(ev.ProcessPoolExecutor):
        def __init__(self, *a, mp_context=None, **k):
            seen['method'] = mp_context.get_start_method() if mp_context else mp.get_start_method()
            super().__init__(*a, mp_context=mp_context, **k)

    monkeypatch.setattr(ev, 'ProcessPoolExecutor', Recording)
    kw = dict(metrics=['EN', 'SSIM'], convention='paper', progress=False)
    par = evaluate(root / 'fused', root / 'vi', root / 'ir', workers=2, pool='process', **kw)
    assert seen['method'] in ('forkserver', 'spawn') and seen['method'] != 'fork'
    assert seen['method'] == ('forkserver' if 'forkserver' in mp.get_all_start_methods() else 'spawn')
    serial = evaluate(root / 'fused', root / 'vi', root / 'ir', workers=1, **kw)
    assert par.rows == serial.rows and par.summary == serial.summary
    # the default pool is the process pool wherever a forkserver exists
    assert ev._pool_kind(None) == ('process' if 'forkserver' in mp.get_all_start_methods() else 'thread')


def test_evaluate_several_folders_and_nan_notes(dataset, tmp_path):
    root, _ = dataset
    small = tmp_path / 'tiny'
    for s in ('p1', 'p2'):
        _write(small / 'vi' / f'{s}.png', np.full((64, 64, 3), 50, np.uint8))
        _write(small / 'ir' / f'{s}.png', np.full((64, 64), 90, np.uint8))
        _write(small / 'mA' / f'{s}.png', np.full((64, 64, 3), 70, np.uint8))
        _write(small / 'mB' / f'{s}.png', np.full((64, 64, 3), 60, np.uint8))
    res = evaluate([small / 'mA', small / 'mB'], small / 'vi', small / 'ir', metrics=['EN', 'MS_SSIM'],
                   progress=False)
    assert list(res.summary) == ['mA', 'mB'] and res.summary['mA']['EN'] == 0.0
    assert math.isnan(res.summary['mA']['MS_SSIM'])
    assert any('MS_SSIM is NaN for 4 image(s)' in n and '> 160 pixels' in n for n in res.notes)
    assert 'note: MS_SSIM is NaN' in res.table()


def test_cli_eval(dataset, capsys):
    from mtvif_zoo.cli.eval import add_parser
    root, _ = dataset
    parser = argparse.ArgumentParser(prog='mtvif')
    add_parser(parser.add_subparsers(dest='command'))
    args = parser.parse_args(['eval', '--fused', str(root / 'flat'), '--vis', str(root / 'vi'),
                              '--ir', str(root / 'ir'),
                              '--pattern', '{image}_{method}', '--convention', 'vifb', '--metrics', 'EN,SSIM',
                              '-o', str(root / 'cli_out'), '-q'])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert "convention 'vifb'" in out.out and 'max_rule' in out.out and 'SSIM' in out.out
    assert (root / 'cli_out' / 'results.json').is_file() and 'per_image.csv' in out.err
    with pytest.raises(ValueError, match='--fused folders, --model'):
        args.func(parser.parse_args(['eval', '--vis', str(root / 'vi'), '--ir', str(root / 'ir')]))


def test_evaluate_with_model_and_labels(dataset):
    """--model path: the pairs are fused by the model and evaluated as a row; labels add its mIoU."""
    mz = pytest.importorskip('mtvif_zoo')
    if not hasattr(mz, 'create_model'):
        pytest.skip('mtvif_zoo.create_model not available')
    root, stems = dataset
    for s in stems:
        lab = np.zeros((H, W), np.uint8)
        lab[60:120, 50:150] = 2
        _write(root / 'label' / f'{s}.png', lab)
    import torch
    torch.manual_seed(0)
    # variant III with a narrow MTH (0.11 M instead of 0.93 M parameters): the same code path, a fraction of the time
    model = mz.create_model('mtvif_iii', pretrained=False,
                            head_args=dict(fusion_chs=(16, 8), fusion_tail_chs=(8, 8), seg_chs=(8,)))
    res = evaluate(root / 'fused' / 'avg', root / 'vi', root / 'ir', metrics=['EN', 'SSIM'], model=model,
                   model_name='mtvif_iii', labels_dir=root / 'label', out=root / 'mout', progress=False)
    assert list(res.summary) == ['avg', 'mtvif_iii'] and res.counts['mtvif_iii'] == 3
    assert (sorted(p.name for p in (root / 'mout' / 'fused' / 'mtvif_iii').iterdir())
            == [f'{s}.png' for s in sorted(stems)])
    seg = res.segmentation['mtvif_iii']
    assert seg['images'] == 3 and 0.0 <= seg['mIoU'] <= 1.0
    assert seg['num_pixels'] == 3 * H * W and sum(map(sum, seg['confusion_matrix'])) == 3 * H * W
    # classes seen in neither labels (0, 2) nor predictions are listed, not averaged
    seen = set(seg['IoU']) | set(seg['absent_classes'])
    assert len(seen) == model.num_classes
    assert 'mIoU' in res.table()


def test_references_equal_the_same_rules_written_to_disk(dataset):
    root, stems = dataset
    metrics = ['EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'dE']
    res = evaluate(None, root / 'vi', root / 'ir', metrics=metrics, convention='paper', progress=False,
                   references=['average', 'max'], workers=1)
    disk = evaluate([root / 'fused' / 'avg', root / 'fused' / 'max_rule'], root / 'vi', root / 'ir', metrics=metrics,
                    convention='paper', progress=False, workers=1)
    assert list(res.summary) == ['average (reference)', 'max (reference)']
    ref_rows = {(r['method'], r['image']): r for r in res.rows}
    for r in disk.rows:
        name = 'average (reference)' if r['method'] == 'avg' else 'max (reference)'
        for k in metrics:
            assert ref_rows[(name, r['image'])][k] == pytest.approx(r[k], abs=1e-9), (name, r['image'], k)
    with pytest.raises(ValueError, match="unknown reference 'median'; valid: average, max"):
        evaluate(None, root / 'vi', root / 'ir', references=['median'], progress=False)


def test_evaluate_mixes_8_and_16_bit_files(tmp_path):
    """8-bit files take compute_batch's uint8 paths, a 16-bit file in the same method folder the
    float path (batched apart): v * 257 in 16 bits gives the 8-bit image's values."""
    rng = np.random.default_rng(3)
    for s in ('a', 'b'):
        vis = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        ir = rng.integers(0, 256, (H, W), dtype=np.uint8)
        _write(tmp_path / 'vi' / f'{s}.png', vis)
        _write(tmp_path / 'ir' / f'{s}.png', ir)
        fused = ((ir.astype(np.uint16) + vis[..., 1] + 1) // 2).astype(np.uint8)
        _write(tmp_path / 'eight' / 'm' / f'{s}.png', fused)
        _write(tmp_path / 'mixed' / 'm' / f'{s}.png', fused.astype(np.uint16) * 257 if s == 'b' else fused)
    assert Image.open(tmp_path / 'mixed' / 'm' / 'b.png').mode.startswith('I')
    kw = dict(metrics=['EN', 'SSIM', 'VIF', 'dE'], convention='paper', progress=False)
    a = evaluate(tmp_path / 'eight', tmp_path / 'vi', tmp_path / 'ir', out=tmp_path / 'o1', **kw)
    b = evaluate(tmp_path / 'mixed', tmp_path / 'vi', tmp_path / 'ir', out=tmp_path / 'o2', **kw)
    assert b.counts == {'m': 2} and not b.problems
    for k in ('EN', 'SSIM', 'VIF', 'dE'):
        assert b.summary['m'][k] == pytest.approx(a.summary['m'][k], abs=1e-12), k
