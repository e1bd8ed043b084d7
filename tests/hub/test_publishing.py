"""save_pretrained / push_to_hub (against the loopback Hub's upload endpoints) / publish_weight."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file

import mtvif_zoo
from mtvif_zoo.hub import publish_weight, push_to_hub, registry, save_pretrained, sha256_file

from .conftest import TEST_RESULTS, TEST_TRAINING


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(11)
    return mtvif_zoo.create_model('mtvif_iii')


def test_save_pretrained_folder(model, tmp_path, no_pickle):
    out = save_pretrained(model, tmp_path / 'repo', name='mtvif_iii.mine', full_copy='float16', dataset='MSRS')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors',
                                                     'model_full.safetensors']
    fusion, full = load_file(str(out / 'model.safetensors')), load_file(str(out / 'model_full.safetensors'))
    assert not any(k.startswith('head.seg_classifier') for k in fusion)  # fusion-only
    assert set(full) == set(model.state_dict()) and full['head.seg_classifier.1.weight'].dtype == torch.float16
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == 'mtvif_iii' and cfg['model_args'] == {
        'backbone': 'seafusion', 'head': 'mth', 'in_chans': 3, 'num_classes': 9}
    files = cfg['mtvif_zoo']['files']
    for f in ('model.safetensors', 'model_full.safetensors', 'README.md'):
        assert files[f]['sha256'] == sha256_file(out / f)
    # timm's own parser accepts it (an unknown pretrained_cfg key would raise)
    from timm.models._hub import load_model_config_from_path
    pcfg, arch, args = load_model_config_from_path(out)
    assert arch == 'mtvif_iii' and pcfg['tag'] == 'mine' and pcfg['hf_hub_filename'] == 'model.safetensors'
    # fusion-only default vs the full weights as model.safetensors
    out2 = save_pretrained(model, tmp_path / 'full', weights='full')
    assert set(load_file(str(out2 / 'model.safetensors'))) == set(model.state_dict())
    assert json.loads((out2 / 'config.json').read_text())['pretrained_cfg']['tag'] == 'custom'
    m = mtvif_zoo.create_model(f'local-dir:{out2}', pretrained=True)
    assert m.has_segmentation and all(torch.equal(v, model.state_dict()[k]) for k, v in m.state_dict().items())


def test_save_pretrained_is_deterministic_and_keeps_custom_args(tmp_path):
    torch.manual_seed(0)
    tiny = mtvif_zoo.create_model('mtvif_iii', in_chans=1, head_args=dict(fusion_chs=(8, 8), fusion_tail_chs=(8,),
                                                                          seg_chs=(8,)))
    a = save_pretrained(tiny, tmp_path / 'a', name='mtvif_iii.tiny')
    b = save_pretrained(tiny, tmp_path / 'b', name='mtvif_iii.tiny')
    for f in ('model.safetensors', 'config.json', 'README.md'):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f  # same weights, same bytes, same sha256
    cfg = json.loads((a / 'config.json').read_text())
    assert cfg['model_args']['head_args'] == {'fusion_chs': [8, 8], 'fusion_tail_chs': [8], 'seg_chs': [8]}
    m = mtvif_zoo.create_model(f'local-dir:{a}', pretrained=True, num_classes=0)
    assert m.in_chans == 1 and m.pretrained_source['verified']


def test_save_pretrained_refuses_wrong_names(model, tmp_path):
    with pytest.raises(ValueError, match="architecture 'mtvif_iii'"):
        save_pretrained(model, tmp_path / 'x', name='mtvif_iv.mine')
    with pytest.raises(ValueError, match='arch.tag'):
        save_pretrained(model, tmp_path / 'x', name='mtvif_iii.Mine')


def test_push_to_hub_uses_the_upload_endpoints(model, loopback, tmp_path, no_pickle):
    """push_to_hub is tested against the loopback server's upload endpoints (create repo, validate the card's
    YAML, preupload, ndjson commit), then read back with hf_hub_download and timm."""
    info = push_to_hub(model, 'test-org/pushed', token='hf_test', name='mtvif_iii.pushed', full_copy='float16')
    assert re.fullmatch(r'[0-9a-f]{40}', info.oid)
    posts = [p for m, p in loopback.requests if m == 'POST']
    assert posts == ['/api/repos/create', '/api/validate-yaml', '/api/models/test-org/pushed/preupload/main',
                     '/api/models/test-org/pushed/commit/main']
    assert loopback.commits[-1]['files'] == ['README.md', 'config.json', 'model.safetensors',
                                             'model_full.safetensors']
    m = mtvif_zoo.create_model(f'hf-hub:test-org/pushed@{info.oid}', pretrained=True, num_classes=0)
    assert m.pretrained_source['verified'] and not m.has_segmentation
    ref = model.fusion_only().state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())
    # default num_classes: the classifier comes from the repo's model_full.safetensors (fp16)
    m = mtvif_zoo.create_model(f'hf-hub:test-org/pushed@{info.oid}', pretrained=True)
    assert m.has_segmentation and all(torch.equal(v, model.state_dict()[k].half().to(v.dtype))
                                      for k, v in m.state_dict().items() if k.startswith('head.seg_classifier.'))
    # pushing a folder written before works the same, and a second commit moves main
    folder = save_pretrained(model, tmp_path / 'again', name='mtvif_iii.pushed')
    info2 = push_to_hub(folder, 'test-org/pushed', token='hf_test')
    assert info2.oid != info.oid
    with pytest.raises(FileNotFoundError, match='save_pretrained folder'):
        push_to_hub(tmp_path, 'test-org/pushed', token='hf_test')


def test_publish_weight_end_to_end(model, loopback, tmp_path, no_pickle):
    root = tmp_path / 'pkg'
    kwargs = dict(dataset='MSRS (test-only)', results=TEST_RESULTS, training=TEST_TRAINING,
                  registry_path=root / 'registry.json', shipped_dir=root / 'weights', cards_dir=root / 'model_cards',
                  release_dir=root / 'release', url_base='https://github.com/o/r/releases/download/w1')
    package_weights = mtvif_zoo.list_models(pretrained=True)  # the weights this checkout ships
    with registry.use_registry(root / 'registry.json', root / 'weights'):
        assert mtvif_zoo.list_models(pretrained=True) == []
        entry = publish_weight(model, 'mtvif_iii.pubtest', hf_hub_id='test-org/pubtest', push=True, token='hf_test',
                               **kwargs)
        # (2) one registry entry, pinned to the commit the upload made
        assert entry['revision'] == loopback.repos['test-org/pubtest']['refs']['main']
        assert registry.read_registry(root / 'registry.json') == {'mtvif_iii.pubtest': entry}
        # (1) the shipped folder, the card copy and the torch.hub-named release assets
        folder = root / 'weights' / 'mtvif_iii.pubtest'
        assert (root / 'model_cards' / 'mtvif_iii.pubtest.md').read_bytes() == (folder / 'README.md').read_bytes()
        sha = entry['sha256']
        assert entry['url'] == f'https://github.com/o/r/releases/download/w1/mtvif_iii_pubtest-{sha[:12]}.safetensors'
        assert sha256_file(root / 'release' / f'mtvif_iii_pubtest-{sha[:12]}.safetensors') == sha
        assert sorted(p.name for p in (root / 'release').iterdir()) == sorted(
            f.split('/')[-1] for f in (i.get('url') for i in entry['files'].values()) if f)
        # and everything follows: timm registry, loading, the card
        assert mtvif_zoo.list_models(pretrained=True) == ['mtvif_iii.pubtest']
        m = mtvif_zoo.create_model('mtvif_iii.pubtest', pretrained=True)
        assert m.pretrained_source['source'] == 'shipped'
        assert mtvif_zoo.hub.model_card('mtvif_iii.pubtest') == (folder / 'README.md').read_text()
        with pytest.raises(FileExistsError, match='already published'):
            publish_weight(model, 'mtvif_iii.pubtest', **kwargs)
        # re-publishing the same model (overwrite): byte-identical files, same sha256
        again = publish_weight(model, 'mtvif_iii.pubtest', overwrite=True, hf_hub_id='test-org/pubtest',
                               revision=entry['revision'], **kwargs)
        assert again['files'] == entry['files']
    assert mtvif_zoo.list_models(pretrained=True) == package_weights  # the package registry is back


def test_publish_weight_refuses_incomplete_metadata(model, tmp_path):
    kw = dict(registry_path=tmp_path / 'r.json', shipped_dir=tmp_path / 'w', cards_dir=tmp_path / 'c')
    with pytest.raises(ValueError, match='measured results'):
        publish_weight(model, 'mtvif_iii.x', dataset='MSRS', results=[], training=TEST_TRAINING, **kw)
    with pytest.raises(ValueError, match='budget'):
        publish_weight(model, 'mtvif_iii.x', dataset='MSRS', results=TEST_RESULTS, training={'data': 'MSRS'}, **kw)
    with pytest.raises(ValueError, match='revision'):
        publish_weight(model, 'mtvif_iii.x', dataset='MSRS', results=TEST_RESULTS, training=TEST_TRAINING,
                       hf_hub_id='o/n', **kw)
    bad = [{**TEST_RESULTS[0], 'metrics': {'EN': float('nan')}}]
    with pytest.raises(ValueError, match='finite number'):
        publish_weight(model, 'mtvif_iii.x', dataset='MSRS', results=bad, training=TEST_TRAINING, **kw)
    assert not (tmp_path / 'w' / 'mtvif_iii.x').exists() and not (tmp_path / 'r.json').exists()
