"""Integrity: every file is checked against its sha256 before use; bad downloads never stay in a cache."""
import shutil

import pytest

import mtvif_zoo
from mtvif_zoo.hub import IntegrityError, sha256_file

NAME = 'mtvif_iii.testonly'


def _tamper(path, offset=200):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('damage', ['tampered', 'truncated', 'lfs-pointer'])
def test_damaged_shipped_copy_is_refused(published, damage, no_pickle):
    f = published['weights'] / NAME / 'model.safetensors'
    expected = published['entries'][NAME]['sha256']
    if damage == 'tampered':
        _tamper(f)
    elif damage == 'truncated':
        f.write_bytes(f.read_bytes()[:1000])
    else:
        f.write_text('version https://git-lfs.github.com/spec/v1\noid sha256:' + expected + '\nsize 123\n')
    got = sha256_file(f)
    with pytest.raises(IntegrityError) as e:
        mtvif_zoo.create_model(NAME, pretrained=True)
    msg = str(e.value)
    assert str(f) in msg and expected in msg and got in msg  # names the file and both hashes
    assert ('git lfs pull' in msg) == (damage == 'lfs-pointer')
    assert f.is_file()  # the shipped copy is reported, never deleted


def test_env_mirror_with_wrong_content_is_refused(published, tmp_path, monkeypatch):
    mirror = tmp_path / 'mirror' / NAME
    shutil.copytree(published['weights'] / NAME, mirror)
    _tamper(mirror / 'model.safetensors')
    monkeypatch.setenv('MTVIF_WEIGHTS', str(tmp_path / 'mirror'))
    with pytest.raises(IntegrityError, match='MTVIF_WEIGHTS'):
        mtvif_zoo.create_model(NAME, pretrained=True)


def test_user_folder_with_config_is_checked(published, tmp_path):
    folder = tmp_path / 'copy'
    shutil.copytree(published['weights'] / NAME, folder)
    _tamper(folder / 'model.safetensors')
    with pytest.raises(IntegrityError, match='recorded in'):
        mtvif_zoo.create_model(f'local-dir:{folder}', pretrained=True)


def test_file_url_with_wrong_hash_is_refused_and_not_cached(published, hub_env, no_pickle):
    """torch.hub check_hash naming: the file's content does not match the sha256 prefix in its name."""
    from mtvif_zoo.hub import registry
    entry = registry.get_weight(NAME)
    asset = published['release'] / f'mtvif_iii_testonly-{entry["sha256"][:12]}.safetensors'  # this test's copy
    _tamper(asset)
    entry['url'] = entry['files']['model.safetensors']['url'] = asset.as_uri()
    registry.register_weight(NAME, entry)
    shutil.rmtree(published['weights'] / NAME)
    with pytest.raises(IntegrityError) as e:
        mtvif_zoo.create_model(NAME, pretrained=True)
    assert entry['sha256'] in str(e.value) and sha256_file(asset) in str(e.value) and asset.name in str(e.value)
    cache = hub_env['torch_checkpoints']
    assert not cache.exists() or list(cache.iterdir()) == []  # neither the file nor a partial download


def test_corrupt_url_cache_entry_is_replaced(published, hub_env, no_pickle):
    entry = published['entries'][NAME]
    shutil.rmtree(published['weights'] / NAME)
    cache = hub_env['torch_checkpoints']
    cache.mkdir(parents=True)
    cached = cache / f'mtvif_iii_testonly-{entry["sha256"][:12]}.safetensors'
    cached.write_bytes(b'corrupt')  # e.g. a download interrupted by another tool
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'url' and sha256_file(cached) == entry['sha256']


def test_torch_hub_itself_refuses_the_wrong_hash(published, tmp_path):
    """The same file:// URL through torch.hub's own check_hash download: refused, nothing left behind.
    (The zoo downloads with torch.hub too, but never hands the file to torch.load.)"""
    import torch
    entry = published['entries'][NAME]
    asset = published['release'] / f'mtvif_iii_testonly-{entry["sha256"][:12]}.safetensors'
    _tamper(asset)
    dst = tmp_path / 'dl' / asset.name
    dst.parent.mkdir()
    with pytest.raises(RuntimeError, match='invalid hash value'):
        torch.hub.download_url_to_file(asset.as_uri(), str(dst), hash_prefix=entry['sha256'][:12], progress=False)
    assert list(dst.parent.iterdir()) == []
