"""``mtvif bench``: JSON structure, medians and ratios with sane values. No timing thresholds: speed
belongs in the benchmark's output, never in a test's pass/fail."""
import json
import statistics

import pytest
import torch

from mtvif_zoo import create_model
from mtvif_zoo.bench import DTYPES, ROOFLINE_CONV, SCHEMA, bench, format_table, roofline, roofline_flops
from mtvif_zoo.cli import main
from mtvif_zoo.models.layers._fast import bf16_kernels_available
from mtvif_zoo.models.multitaskvif import VARIANTS
from mtvif_zoo.profile import count_macs

#: the default run benches two models (one that pads to 8); the slow set runs ``--model all``
QUICK_MODELS = ['seafusion', 'emma_ufuser']


def _quick(tmp_path_factory, models):
    path = tmp_path_factory.mktemp('bench') / 'quick.json'
    assert main(['bench', '--model', models, '--quick', '--json', str(path)]) == 0
    return json.loads(path.read_text())


@pytest.fixture(scope='module')
def quick_report(tmp_path_factory):
    """``mtvif bench --model seafusion,emma_ufuser --quick`` on CPU, the CI mode."""
    return _quick(tmp_path_factory, ','.join(QUICK_MODELS))


@pytest.mark.slow
def test_quick_runs_every_variant(tmp_path_factory):
    r = _quick(tmp_path_factory, 'all')
    assert [row['model'] for row in r['results']] == list(VARIANTS)
    assert all(row['size'] == [64, 96] and row['fast_path'] is True for row in r['results'])


def test_quick_report_structure(quick_report):
    r = quick_report
    assert r['schema'] == SCHEMA
    assert [row['model'] for row in r['results']] == QUICK_MODELS
    assert r['config'] == {'size': [64, 96], 'batch': 1, 'device': 'cpu', 'dtypes': ['fp32'], 'compile': False,
                           'warmup': 1, 'runs': 3, 'mode': 'fuse', 'weights': 'random init',
                           'inputs': 'random uniform'}
    assert r['env']['threads'] == torch.get_num_threads() and r['env']['torch'] == torch.__version__
    assert isinstance(r['env']['allocator_tuned'], bool)
    roof = r['roofline']['fp32']
    assert '256x128x128' in roof['op'] and roof['gflops_median'] > 0
    assert roof['gflops_median'] == statistics.median(roof['gflops_runs'])


@pytest.mark.parametrize('name', QUICK_MODELS)
def test_row_is_medians_and_ratios(quick_report, name):
    row = next(x for x in quick_report['results'] if x['model'] == name)
    assert row['size'] == [64, 96] and row['runs'] == 3 and len(row['times_s']) == 3
    assert row['time_median_s'] == statistics.median(row['times_s'])
    assert row['images_per_s'] == pytest.approx(1 / row['time_median_s'])
    assert row['macs_per_image'] > 0
    assert row['gflops'] == pytest.approx(2 * row['macs_per_image'] / row['time_median_s'] / 1e9)
    assert len(row['roofline_runs_gflops']) == 3 and all(g > 0 for g in row['roofline_runs_gflops'])
    assert row['roofline_gflops'] == statistics.median(row['roofline_runs_gflops'])
    # the fraction is the median of the per-run (model, adjacent roofline) ratios
    ratios = [2 * row['macs_per_image'] / t / 1e9 / g for t, g in zip(row['times_s'], row['roofline_runs_gflops'])]
    assert row['roofline_fraction'] == pytest.approx(statistics.median(ratios))
    assert 0 < row['roofline_fraction'] < 1.5
    assert row['peak_memory_mb'] >= 0 and row['memory_method']
    assert row['fast_path'] is True and row['dtype'] == 'fp32' and row['compile'] is False
    assert row['allocator_tuned'] == quick_report['env']['allocator_tuned']


def test_macs_are_the_plain_eval_count():
    res = bench('seafusion', size=(40, 56), warmup=0, runs=1, mode='model')
    from mtvif_zoo import create_model
    assert res.macs_per_image == count_macs(create_model('seafusion'), (40, 56), training=False)
    # a padded model counts the padded size (Ufuser pads to a multiple of 8)
    res = bench('emma_ufuser', size=(30, 41), warmup=0, runs=1)
    assert res.macs_per_image == count_macs(create_model('emma_ufuser'), (32, 48), training=False)


def test_table_and_cli_output(capsys, tmp_path):
    path = tmp_path / 'b.json'
    assert main(['bench', '--model', 'seafusion', '--size', '32x40', '--runs', '2', '--warmup', '0', '--batch', '2',
                 '--mode', 'model', '--json', str(path)]) == 0
    out = capsys.readouterr().out
    assert 'seafusion' in out and '% roof' in out and 'roofline' in out
    rep = json.loads(path.read_text())
    row, = rep['results']
    assert row['batch'] == 2 and row['mode'] == 'model' and row['size'] == [32, 40]
    assert row['images_per_s'] == pytest.approx(2 / row['time_median_s'])
    assert 'seafusion' in format_table(rep['results'])


def test_roofline_definition():
    c = ROOFLINE_CONV
    assert (c['batch'], c['in_chs'], c['size'], c['out_chs'], c['kernel']) == (1, 256, (128, 128), 256, 3)
    assert roofline_flops() == 2 * 256 * 256 * 9 * 128 * 128
    r = roofline(runs=2)
    assert r['gflops_median'] > 0 and len(r['gflops_runs']) == 2


@pytest.mark.parametrize('args,match', [
    (['--model', 'nope'], 'unknown model'),
    (['--model', 'seafusion', '--dtype', 'fp8'], 'unknown dtype'),
    (['--model', 'seafusion', '--size', '12'], 'size must be HxW'),
    (['--model', 'seafusion,swinfusion', '--pretrained', '--quick'], 'no published weights for swinfusion'),
    (['--model', 'seafusion', '--pair', 'nope_vis.png', 'nope_ir.png'], 'visible image not found'),
])
def test_cli_errors(args, match, capsys):
    assert main(['bench', *args]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.slow  # the bf16 roofline conv is slow on CPUs without native bf16
def test_bf16_row_on_cpu():
    """bf16 autocast runs on CPU too (the CUDA path is checked by tools/cuda_check.py)."""
    res = bench('seafusion', size=(32, 40), dtype='bf16', warmup=0, runs=1, check_fp32=True)
    # oneDNN bf16 kernels where the CPU has them
    assert res.dtype == "bf16" and res.fast_path == bf16_kernels_available()
    assert res.max_abs_diff_vs_fp32 is not None and res.max_abs_diff_vs_fp32 < 0.1
    assert set(DTYPES) == {'fp32', 'bf16', 'fp16'}


def _touch(nbytes):
    buf = torch.empty(nbytes // 4, dtype=torch.float32)
    buf.fill_(1.0)  # resident, not just reserved
    return buf


@pytest.mark.parametrize('kernel_hwm', [True, False])
def test_peak_rss_sees_a_transient_buffer(monkeypatch, kernel_hwm):
    """Peak memory: a 256 MiB buffer that lives and dies inside the block is in the peak, whether
    the kernel's high-water mark is used (Linux) or the sampling thread (the fallback)."""
    import time

    from mtvif_zoo import bench as B
    if kernel_hwm and not B._reset_hwm():
        pytest.skip('/proc/self/clear_refs is not writable here (not Linux or restricted)')
    if not kernel_hwm:
        monkeypatch.setattr(B, '_reset_hwm', lambda: False)
    B._malloc_trim()
    with B._PeakRSS() as rss:
        buf = _touch(256 * 2 ** 20)
        time.sleep(0.05)  # the sampler's interval is 2 ms
        deadline = time.monotonic() + 2.0
        while not kernel_hwm and rss.peak - rss.base < 250 * 2 ** 20 and time.monotonic() < deadline:
            time.sleep(0.01)  # on a busy 2-core machine the sampling thread can be scheduled late
        del buf
    assert rss.method == ('hwm' if kernel_hwm else 'sampled')
    assert 250 <= (rss.peak - rss.base) / 2 ** 20 < 400


@pytest.fixture
def small_pair(tmp_path):
    """A 40x56 crop of the shipped sample pair, as PNG files."""
    from pathlib import Path

    from PIL import Image
    ex = Path(__file__).resolve().parents[1] / 'examples'
    paths = []
    for sub in ('vi', 'ir'):
        p = tmp_path / f'{sub}.png'
        with Image.open(ex / sub / '00036N.png') as im:
            im.crop((200, 150, 256, 190)).save(p)
        paths.append(p)
    return tuple(paths)


def test_pair_and_published_weights(small_pair, tmp_path):
    """--pretrained --pair: the published weights on a real pair at its own size; the timed tensors
    are what fuse() converts the files to."""
    from mtvif_zoo.bench import load_pair
    from mtvif_zoo.fusion import _ir_to_grey, load_image, to_tensor_image
    vis, ir = load_pair(*small_pair, batch=3)
    assert vis.shape == (3, 3, 40, 56) and ir.shape == (3, 1, 40, 56)
    ref_v, _ = to_tensor_image(load_image(small_pair[0]), 'visible', 'full')
    ref_i, _ = to_tensor_image(load_image(small_pair[1]), 'infrared', 'minmax')
    assert torch.equal(vis[2:], ref_v) and torch.equal(ir[1:2], _ir_to_grey(ref_i))
    path = tmp_path / 'b.json'
    assert main(['bench', '--model', 'seafusion', '--pretrained', '--pair', *map(str, small_pair),
                 '--runs', '1', '--warmup', '0', '--json', str(path)]) == 0
    rep = json.loads(path.read_text())
    row, = rep['results']
    assert row['size'] == [40, 56] and row['weights'] == 'pretrained seafusion.mfnet220'
    assert row['inputs'] == f'pair {small_pair[0]} + {small_pair[1]}'
    assert rep['config']['inputs'] == [str(p) for p in small_pair]
    with pytest.raises(ValueError, match='the pair is 40x56'):
        bench('seafusion', size=(48, 56), pair=small_pair, runs=1, warmup=0)
    with pytest.raises(ValueError, match='needs a model name'):
        bench(create_model('seafusion'), pretrained=True, size=(32, 32), runs=1, warmup=0)
    assert bench('seafusion', size=(32, 40), runs=1, warmup=0).weights == 'random init'
