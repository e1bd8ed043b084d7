"""The weight registry: what ships matches what is registered; entries become timm pretrained cfgs."""
import copy
import json

import pytest
import timm

import mtvif_zoo
from mtvif_zoo.hub import registry
from mtvif_zoo.hub.cards import CARDS_DIR, render_card
from mtvif_zoo.hub.pretrained import sha256_file


def test_package_registry_lists_exactly_what_ships():
    """list_models(pretrained=True) == registry entries == shipped folders, every file's sha256 as recorded.

    Holds for the real published weights (shipped in mtvif_zoo/hub/weights/, cards in model_cards/)."""
    entries = registry.read_registry(registry.REGISTRY_PATH)
    shipped_dir = registry.SHIPPED_DIR
    shipped = sorted(p.name for p in shipped_dir.iterdir() if p.is_dir()) if shipped_dir.is_dir() else []
    assert sorted(entries) == shipped
    assert mtvif_zoo.list_models(pretrained=True) == sorted(entries)
    assert timm.list_models('mtvif*', pretrained=True) == sorted(n for n in entries if n.startswith('mtvif'))
    for name, entry in entries.items():
        folder = registry.SHIPPED_DIR / name
        assert sorted(p.name for p in folder.iterdir()) == sorted(entry['files']), name
        for fname, info in entry['files'].items():
            assert sha256_file(folder / fname) == info['sha256'], f'{name}/{fname}'
            assert (folder / fname).stat().st_size == info['size']
        card = (folder / 'README.md').read_text(encoding='utf-8')
        assert card == render_card(entry), f'{name}: card is not what the generator makes from the entry'
        assert (CARDS_DIR / f'{name}.md').read_text(encoding='utf-8') == card
    cards = sorted(p.stem for p in CARDS_DIR.glob('*.md')) if CARDS_DIR.is_dir() else []
    assert cards == sorted(entries)
    for arch in ('mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv'):  # no placeholder under a real variant
        assert not any(n.startswith(arch + '.') for n in entries if 'test' in n)


def test_registered_weight_becomes_the_models_pretrained_cfg(published):
    """A weight registered at run time (use_registry) is what the zoo builds and loads, through the
    builder's hook; timm's own registry keeps what was registered at import (never rewritten)."""
    entry = published['entries']['mtvif_iii.testonly']
    before = timm.list_models('mtvif_iii*', pretrained=True)
    assert mtvif_zoo.list_models(pretrained=True) == ['mtvif_iii.testonly', 'mtvif_iv.testonly']
    cfg = mtvif_zoo.create_model('mtvif_iii.testonly').pretrained_cfg
    assert cfg['tag'] == 'testonly'
    assert cfg['hf_hub_id'] == f'test-org/mtvif_iii-testonly@{published["revision"]}'
    assert cfg['hf_hub_filename'] == 'model.safetensors'
    assert cfg['url'].endswith(f'/mtvif_iii_testonly-{entry["sha256"][:12]}.safetensors')
    assert tuple(cfg['label_names']) == mtvif_zoo.MSRS_CLASSES and cfg['license'] == 'apache-2.0'
    assert tuple(cfg['input_size']) == (3, 256, 256) and cfg['num_classes'] == 9
    assert any(entry['sha256'] in n for n in cfg['notes'])
    # the untagged name with pretrained=True is the default (first published) tag, timm style
    assert mtvif_zoo.create_model('mtvif_iii', pretrained=True).pretrained_cfg['tag'] == 'testonly'
    assert registry.get_weight('mtvif_iii.testonly')['revision'] == published['revision']
    assert timm.list_models('mtvif_iii*', pretrained=True) == before  # timm's registry untouched


def test_bad_registry_entry_does_not_break_import(tmp_path):
    """One malformed registry.json entry: import mtvif_zoo still works, the good weights stay listed."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    good = json.loads(registry.REGISTRY_PATH.read_text())
    name = sorted(good['weights'])[0]
    bad = dict(good, weights={**good['weights'], 'mtvif_ii.broken': {'architecture': 'mtvif_ii'}})
    path = tmp_path / 'registry.json'
    path.write_text(json.dumps(bad))
    from mtvif_zoo.models import _weights
    with pytest.warns(UserWarning, match="'mtvif_ii.broken' skipped"):
        entries = _weights.read_entries(path)
    assert name in entries and 'mtvif_ii.broken' not in entries
    with pytest.warns(UserWarning, match='entry skipped'):
        with registry.use_registry(path, registry.SHIPPED_DIR):
            assert name in mtvif_zoo.list_models(pretrained=True)
    path.write_text('{not json')
    with pytest.warns(UserWarning, match='unreadable weight registry'):
        assert _weights.read_entries(path) == {}
    # and a fresh interpreter imports a copy of the package whose registry.json has the broken entry
    pkg = Path(mtvif_zoo.__file__).resolve().parent
    shutil.copytree(pkg, tmp_path / 'copy' / 'mtvif_zoo', ignore=shutil.ignore_patterns('weights', '__pycache__'))
    (tmp_path / 'copy' / 'mtvif_zoo' / 'hub' / 'registry.json').write_text(json.dumps(bad))
    probe = 'import mtvif_zoo, timm; print(timm.list_models("mtvif_*", pretrained=True))'
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=str(tmp_path / 'copy'),
                         env={**__import__('os').environ, 'PYTHONPATH': str(tmp_path / 'copy')})
    assert out.returncode == 0, out.stderr
    assert "'mtvif_ii.broken' skipped" in out.stderr and name.split('.')[0] in out.stdout


def test_registry_swap_does_not_leak(published_src):
    from mtvif_zoo.hub import use_registry
    before = mtvif_zoo.list_models(pretrained=True)
    with use_registry(published_src['root'] / 'registry.json', published_src['root'] / 'weights'):
        assert 'mtvif_iii.testonly' in mtvif_zoo.list_models(pretrained=True)
    assert mtvif_zoo.list_models(pretrained=True) == before
    with pytest.raises(ValueError, match='unknown pretrained tag'):
        mtvif_zoo.create_model('mtvif_iii.testonly')


def test_unknown_tag_is_a_clear_error(published):
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'mtvif_iii.nope'; published for mtvif_iii: "
                                         r'mtvif_iii.testonly'):
        mtvif_zoo.create_model('mtvif_iii.nope', pretrained=True)


@pytest.mark.parametrize('mutate, match', [
    (lambda e: e.update(revision='main'), 'revision must pin'),
    (lambda e: e.update(hf_hub_id='org/name@abc'), 'hf_hub_id must be'),
    (lambda e: e['files']['model.safetensors'].update(url='https://x/y/mtvif_iii_testonly.safetensors'),
     'sha256 prefix'),
    (lambda e: e['files']['model.safetensors'].update(url='https://x/y/m-deadbeef00.safetensors'), 'sha256 prefix'),
    (lambda e: e.update(sha256='0' * 64), 'sha256 differs'),
    (lambda e: e.pop('license'), 'missing keys'),
    (lambda e: e.update(weights='half'), 'weights must be'),
])
def test_validate_entry_rejects_inconsistent_entries(published_src, mutate, match):
    entry = copy.deepcopy(published_src['entries']['mtvif_iii.testonly'])
    registry.validate_entry('mtvif_iii.testonly', entry)
    mutate(entry)
    with pytest.raises(registry.RegistryError, match=match):
        registry.validate_entry('mtvif_iii.testonly', entry)
    with pytest.raises(registry.RegistryError, match='arch.tag'):
        registry.validate_entry('mtvif_iii.Test', published_src['entries']['mtvif_iii.testonly'])


def test_registry_file_is_sorted_json(published):
    data = json.loads((published['root'] / 'registry.json').read_text())
    assert data['format_version'] == registry.FORMAT_VERSION
    assert list(data['weights']) == sorted(data['weights'])
