"""The real huggingface_hub client, timm and the zoo against the loopback Hub: success and failure paths."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mtvif_zoo
from mtvif_zoo.hub import IntegrityError, WeightsNotFoundError, save_pretrained, sha256_file

NAME = 'mtvif_iii.testonly'
REPO = 'test-org/mtvif_iii-testonly'
REPO_ROOT = Path(__file__).resolve().parents[2]


def _snapshot_files(cache: Path):
    return sorted(p.name for p in cache.rglob('snapshots/*/*'))


def _blobs(cache: Path):
    return sorted(p.name for p in cache.rglob('blobs/*') if not p.name.endswith('.incomplete'))


@pytest.fixture
def tiny_repo(loopback, tmp_path):
    """A 1-channel SeAFusion (Table 6 v style) saved as an HF repo on the loopback Hub."""
    torch.manual_seed(3)
    model = mtvif_zoo.create_model('seafusion', in_chans=1)
    folder = save_pretrained(model, tmp_path / 'tiny', name='seafusion.tiny')
    commit = loopback.add_repo('test-org/tiny', folder)
    return model, folder, commit


def test_hf_hub_download_against_loopback(loopback, tiny_repo, hub_env):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    _, folder, commit = tiny_repo
    path = hf_hub_download('test-org/tiny', 'model.safetensors', revision=commit)
    assert Path(path).read_bytes() == (folder / 'model.safetensors').read_bytes()
    assert f'snapshots/{commit}/model.safetensors' in path and path.startswith(str(hub_env['hf_cache']))
    with pytest.raises(EntryNotFoundError):
        hf_hub_download('test-org/tiny', 'pytorch_model.bin')
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download('test-org/missing', 'config.json')
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download('test-org/tiny', 'config.json', revision='no-such-branch')


def test_hf_hub_names_build_the_architecture_from_config_json(tiny_repo, loopback, no_pickle):
    import timm
    model, _, commit = tiny_repo
    for name in (f'hf-hub:test-org/tiny@{commit}', 'hf-hub:test-org/tiny'):
        m = timm.create_model(name, pretrained=True)  # timm itself, mtvif_zoo registered the architecture
        assert (m.backbone_name, m.head_name, m.in_chans) == ('seafusion', 'cnn', 1)
        assert m.pretrained_source['source'] == 'hf-hub' and m.pretrained_source['verified']
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in m.state_dict().items())
    assert ('GET', f'/test-org/tiny/resolve/{commit}/model.safetensors') in loopback.requests
    assert not any(p.endswith(('.bin', '.pth')) for _, p in loopback.requests)  # never asks for pickles
    m = mtvif_zoo.create_model('hf-hub:test-org/tiny', pretrained=True)
    assert m.in_chans == 1


def test_registered_weight_from_the_hub_with_timm(published, loopback, hub_env, no_pickle):
    import shutil

    import timm
    assert loopback.add_repo(REPO, published['weights'] / NAME) == published['revision']
    shutil.rmtree(published['weights'] / NAME)
    m = timm.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'hf-hub'
    # now cached at the pinned commit: offline works, with the server gone
    loopback.stop()
    from huggingface_hub import constants
    constants.HF_HUB_OFFLINE = True
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'hf-hub'


def test_head_500_once_is_retried(published, loopback, hub_env):
    import shutil
    loopback.add_repo(REPO, published['weights'] / NAME)
    shutil.rmtree(published['weights'] / NAME)
    loopback.fault(method='HEAD', path_endswith='model.safetensors', status=500, times=1)
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'hf-hub'
    heads = [p for meth, p in loopback.requests if meth == 'HEAD' and p.endswith('model.safetensors')]
    # the zoo's bounded HEAD met the 500 and retried (MTVIF_DOWNLOAD_RETRIES), then hf_hub_download's own HEAD
    assert len(heads) == 3


def test_get_500_fails_over_to_the_url_and_leaves_no_cache(published, loopback, hub_env):
    import shutil
    loopback.add_repo(REPO, published['weights'] / NAME)
    shutil.rmtree(published['weights'] / NAME)
    loopback.fault(method='GET', path_endswith='model.safetensors', status=500, times=-1)
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'url'  # the next source in the order
    assert 'model.safetensors' not in _snapshot_files(hub_env['hf_cache'])
    # with no URL either: one clear error naming what failed
    from mtvif_zoo.hub import registry
    entry = registry.get_weight(NAME)
    entry['url'] = entry['files']['model.safetensors']['url'] = None
    registry.register_weight(NAME, entry)
    with pytest.raises(WeightsNotFoundError, match='500'):
        mtvif_zoo.create_model(NAME, pretrained=True)
    assert 'model.safetensors' not in _snapshot_files(hub_env['hf_cache'])


def test_broken_transfer_is_resumed(published, loopback, hub_env):
    import shutil
    loopback.add_repo(REPO, published['weights'] / NAME)
    shutil.rmtree(published['weights'] / NAME)
    loopback.fault(method='GET', path_endswith='model.safetensors', truncate_at=100_000, times=1)
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'hf-hub' and m.pretrained_source['verified']
    assert sum(1 for meth, p in loopback.requests if meth == 'GET' and p.endswith('model.safetensors')) == 2


def test_short_body_fails_clearly_and_is_not_cached(tiny_repo, loopback, hub_env):
    loopback.fault(method='GET', path_endswith='model.safetensors', short_body=True, times=-1)
    with pytest.raises(WeightsNotFoundError, match='Consistency check failed'):
        mtvif_zoo.create_model('hf-hub:test-org/tiny', pretrained=True)
    assert 'model.safetensors' not in _snapshot_files(hub_env['hf_cache'])


def test_tampered_download_is_refused_and_purged_from_the_cache(published, loopback, hub_env, no_pickle):
    """Same size, wrong bytes: huggingface_hub accepts it, the sha256 check does not, and the cache
    entry is deleted so that the next call (server fixed) downloads a good copy."""
    import shutil
    loopback.add_repo(REPO, published['weights'] / NAME)
    shutil.rmtree(published['weights'] / NAME)
    loopback.fault(method='GET', path_endswith='model.safetensors', tamper=True, times=1)
    with pytest.raises(IntegrityError) as e:
        mtvif_zoo.create_model(NAME, pretrained=True)
    assert published['entries'][NAME]['sha256'] in str(e.value) and 'model.safetensors' in str(e.value)
    assert 'model.safetensors' not in _snapshot_files(hub_env['hf_cache'])
    assert published['entries'][NAME]['sha256'] not in _blobs(hub_env['hf_cache'])
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'hf-hub' and m.pretrained_source['verified']


def test_tampered_hf_hub_repo_file_is_refused(tiny_repo, loopback):
    """hf-hub: repos are checked against the sha256 their own config.json records."""
    model, folder, commit = tiny_repo
    loopback.fault(method='GET', path_endswith='model.safetensors', tamper=True, times=1)
    with pytest.raises(IntegrityError, match=sha256_file(folder / 'model.safetensors')):
        mtvif_zoo.create_model(f'hf-hub:test-org/tiny@{commit}', pretrained=True)


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'MTVIF_'))}
    full_env.update(env, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], env=full_env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow  # two fresh processes that import torch
def test_environment_variables_end_to_end(tiny_repo, loopback, tmp_path):
    """HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE as a user sets them, read by huggingface_hub at import."""
    _, _, commit = tiny_repo
    home = tmp_path / 'sub_hf_home'
    code = f"""
        import json, mtvif_zoo
        m = mtvif_zoo.create_model('hf-hub:test-org/tiny@{commit}', pretrained=True)
        print(json.dumps(m.pretrained_source))
    """
    r = _run(code, {'HF_ENDPOINT': loopback.url, 'HF_HOME': str(home), 'HF_HUB_OFFLINE': '0'})
    assert r.returncode == 0, r.stderr
    src = json.loads(r.stdout.strip().splitlines()[-1])
    assert src['source'] == 'hf-hub' and src['verified'] and src['path'].startswith(str(home / 'hub'))
    n = len(loopback.requests)
    r = _run(code, {'HF_ENDPOINT': 'http://127.0.0.1:9', 'HF_HOME': str(home), 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, r.stderr  # offline, from HF_HOME's cache at the pinned commit
    assert len(loopback.requests) == n  # offline means not a single request
    assert json.loads(r.stdout.strip().splitlines()[-1])['path'] == src['path']
