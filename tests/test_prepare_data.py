"""tools/prepare_data.py: the committed data manifest, and a build from a local copy (hash checks, dedup, guard)."""
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared' / 'data'


@pytest.fixture(scope='module')
def prep():
    spec = importlib.util.spec_from_file_location('mtvif_prepare_data', REPO / 'tools' / 'prepare_data.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_manifest_lists_every_source_with_hashes(prep):
    man = json.loads((REPO / 'tools' / 'data_manifest.json').read_text())
    src = man['sources']
    counts = {k: len(v['pairs']) for k, v in src.items()}
    assert counts == {'msrs_test361': 361, 'msrs_train30': 30, 'roadscene': 221, 'tno': 42, 'llvip': 44}
    names = prep.msrs_test_names()
    assert {p['stem'] for p in src['msrs_test361']['pairs']} == names  # the whole MSRS test split
    for key in ('msrs_train30', 'roadscene', 'tno', 'llvip'):
        assert not {p['stem'] for p in src[key]['pairs']} & names, key
    assert src['msrs_train30']['commit'] == '0dbd4153df307c31b06c2e37a7d9a867cb8893c7'
    assert 'non-commercial' in src['llvip']['licence'].lower()
    assert not any('.ipynb_checkpoints' in p['vi']['path'] for p in src['msrs_test361']['pairs'])
    for v in src.values():
        assert len(v['commit']) == 40
        for p in v['pairs']:
            assert len(p['vi']['sha256']) == len(p['ir']['sha256']) == 64
    mf = man['mfnet220_clean']
    assert {k: len(v) for k, v in mf['splits'].items()} == {'train': 137, 'val': 17, 'test': 16}
    assert not {p['stem'] for p in mf['pairs']} & names


@pytest.mark.skipif(not (SHARED / 'mfnet220').is_dir(), reason='needs ../shared/data/mfnet220')
def test_manifest_hashes_match_the_shared_mfnet220(prep):
    man = json.loads((REPO / 'tools' / 'data_manifest.json').read_text())
    for pair in man['mfnet220_clean']['pairs'][:20]:
        for role in ('vi', 'ir', 'label'):
            data = (SHARED / pair[role]['path']).read_bytes()
            assert hashlib.sha256(data).hexdigest() == pair[role]['sha256']


def _png(path: Path, arr) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path.read_bytes()


def _entry(path: str, data: bytes, size):
    return {'path': path, 'sha256': hashlib.sha256(data).hexdigest(), 'size': list(size)}


def test_build_from_a_plain_copy_verifies_drops_duplicates_and_refuses_test_names(prep, tmp_path):
    rng = np.random.default_rng(0)
    mirror, shared = tmp_path / 'mirror', tmp_path / 'shared'
    repo = mirror / 'someone+pairs'
    imgs = {s: (rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), rng.integers(0, 256, (40, 48), dtype=np.uint8))
            for s in ('a1', 'a2', 'a3')}
    pairs = []
    for s, (v, i) in imgs.items():
        pairs.append({'stem': s, 'vi': _entry(f'vis/{s}.png', _png(repo / 'vis' / f'{s}.png', v), (48, 40)),
                      'ir': _entry(f'inf/{s}.png', _png(repo / 'inf' / f'{s}.png', i), (48, 40))})
    # the evaluation sets: a2's infrared image stored as RGB (grey channels) counts as equal
    _png(shared / 'tno25' / 'vi' / 'x.png', rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _png(shared / 'tno25' / 'ir' / 'x.png', np.repeat(imgs['a2'][1][..., None], 3, axis=2))
    _png(shared / 'roadscene50' / 'vi' / 'y.png', rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _png(shared / 'roadscene50' / 'ir' / 'y.png', rng.integers(0, 256, (8, 8), dtype=np.uint8))
    man = {'sources': {'toy': {'repo': 'someone/pairs', 'commit': '0' * 40, 'prefix': 'toy_', 'use': 'unlabelled',
                               'pairs': pairs}}, 'mfnet220_clean': None}
    mpath = tmp_path / 'manifest.json'
    mpath.write_text(json.dumps(man))
    out = tmp_path / 'out'
    rep = prep.build(mirror, shared, out, min_side=32, manifest=mpath)
    assert sorted(p.name for p in (out / 'unlabelled' / 'vi').iterdir()) == ['toy_a1.png', 'toy_a3.png']
    assert (out / 'unlabelled' / 'ir' / 'toy_a3.png').read_bytes() == (repo / 'inf' / 'a3.png').read_bytes()
    assert rep['dropped'] == [{'source': 'toy', 'stem': 'a2', 'reason': 'equal to evaluation image ir: tno25/ir/x.png'}]
    assert json.loads((out / 'prepare_report.json').read_text())['sets'] == {'unlabelled': {'toy': 2}}
    # a side under --min-side is dropped
    rep = prep.build(mirror, shared, tmp_path / 'out2', min_side=44, manifest=mpath)
    assert [d['stem'] for d in rep['dropped']] == ['a1', 'a2', 'a3']
    # a modified file fails the hash check
    _png(repo / 'vis' / 'a3.png', np.zeros((40, 48, 3), dtype=np.uint8))
    with pytest.raises(prep.PrepareError, match='a3.png: sha256 .* differs from the manifest'):
        prep.build(mirror, shared, tmp_path / 'out3', min_side=32, manifest=mpath)
    # a training pair named like an MSRS test image is refused
    man['sources']['toy']['pairs'][0]['stem'] = '00004N'
    mpath.write_text(json.dumps(man))
    with pytest.raises(prep.PrepareError, match="MSRS test name '00004N'"):
        prep.build(mirror, shared, tmp_path / 'out4', min_side=32, manifest=mpath)
    # never into the repository
    with pytest.raises(prep.PrepareError, match='inside the repository'):
        prep.build(mirror, shared, REPO / 'data_out', manifest=mpath)
    with pytest.raises(prep.PrepareError, match='no copy of someone/missing'):
        prep.Mirror(mirror, 'someone/missing')
