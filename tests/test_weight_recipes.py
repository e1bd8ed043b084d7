"""The recorded weight recipes (tools/weight_recipes.json) are valid ``mtvif train`` command lines,
and a two-stage recipe starts its second stage from the first stage's best weights."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

import mtvif_zoo
from mtvif_zoo.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def weights_tool():
    spec = importlib.util.spec_from_file_location('mtvif_weights_tool', REPO / 'tools' / 'weights.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_recipe_parses_with_the_train_cli(weights_tool, tmp_path):
    parser = build_parser()
    recipes = weights_tool.recipes()
    assert recipes, 'no recorded recipes'
    for name, rec in recipes.items():
        arch = name.split('.')[0]
        assert rec['model'] == arch and arch in mtvif_zoo.list_models(), name
        stages = weights_tool.stages(name)
        for i in range(len(stages)):
            cmd = weights_tool.train_command(name, tmp_path / 'data', tmp_path / 'runs', i)
            assert cmd[:4] == [sys.executable, '-m', 'mtvif_zoo.cli', 'train']
            args = parser.parse_args(cmd[3:])  # the real parser: unknown flags would exit
            assert args.model == arch and args.max_steps and args.max_steps > 0
            out = Path(args.out)
            if i == len(stages) - 1:
                assert out == tmp_path / 'runs' / name  # what evaluate / publish read
            else:
                assert out == tmp_path / 'runs' / f'{name}.stage{i + 1}'
            if i:
                assert Path(args.init_from) == tmp_path / 'runs' / f'{name}.stage{i}' / 'best' / 'model.safetensors'
            else:
                assert args.init_from is None


def test_baseline_has_the_budget_of_variant_iii(weights_tool):
    """Issue 6: the seafusion baseline is trained with the same data and budget as mtvif_iii."""
    r = weights_tool.recipes()
    if 'seafusion.mfnet220' not in r or 'mtvif_iii.mfnet220' not in r:
        pytest.skip('baseline or variant III recipe not recorded')
    assert r['seafusion.mfnet220']['data'] == r['mtvif_iii.mfnet220']['data']
    assert ([s['train_args'] for s in weights_tool.stages('seafusion.mfnet220')]
            == [s['train_args'] for s in weights_tool.stages('mtvif_iii.mfnet220')])


def test_gap_table_puts_the_paper_row_and_ratio_next_to_the_measured_one(weights_tool, tmp_path, monkeypatch):
    monkeypatch.setattr(weights_tool, 'RESULTS', tmp_path)
    means = dict(EN=6.6, MI=2.0, VIF=0.5, Qabf=0.32, SSIM=0.99, MSS=1.0, dE=3.0, MS_SSIM=1.5)
    (tmp_path / 'mtvif_iii.x.json').write_text(json.dumps({'datasets': {'msrs_test361': {'paper': {'means': means}}}}))
    (tmp_path / 'references.json').write_text(json.dumps({'msrs_test361': {'paper': {
        'average (reference)': {'means': dict(means, MI=1.5)}}}}))
    tables = tmp_path / 'tables.json'
    tables.write_text(json.dumps({'table5_msrs_fusion': {'III': dict(EN=6.64, MI=3.75, VIF=0.91, Qabf=0.64, SSIM=0.99,
                                                                         MS_SSIM=1.05, dE=3.33)}}))
    out = weights_tool.gap_table(['mtvif_iii.x'], 'msrs_test361', tables).splitlines()
    assert out[0] == '| row | EN | MI (bits) | VIF | Qabf | SSIM | MSS | dE |'
    bits = 2.0 / math.log(2)  # the zoo's MI is in nats, Table 5's in bits
    assert out[2] == (f'| mtvif_iii.x (measured, msrs_test361) | 6.600 | {bits:.3f} | 0.500 | 0.320 | 0.990 | 1.000 | '
                      '3.000 |')
    assert out[3] == ('| paper Table 5, III (copied from the paper) | 6.640 | 3.750 | 0.910 | 0.640 | 0.990 | 1.050 | '
                      '3.330 |')
    assert out[4].split(' | ')[2:4] == [f'{bits / 3.75:.3f}', f'{0.5 / 0.91:.3f}']
    assert out[4].split(' | ')[6] == f'{1.0 / 1.05:.3f}'
    assert out[5].startswith(f'| average (reference) (measured, msrs_test361) | 6.600 | {1.5 / math.log(2):.3f} |')
