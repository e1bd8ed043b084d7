"""pretrained=True: explicit > MTVIF_WEIGHTS > shipped > Hub > URL, each tested; classifier semantics; no pickle."""
import shutil

import pytest
import torch

import mtvif_zoo
from mtvif_zoo.hub import WeightsNotFoundError, save_pretrained

NAME = 'mtvif_iii.testonly'


def _same(model, ref_state, keys=None):
    """Every key of ``ref_state`` (or ``keys``) is in the model with the same value."""
    own = model.state_dict()
    keys = keys or ref_state.keys()
    return all(k in own and torch.equal(own[k], ref_state[k].to(own[k].dtype)) for k in keys)


@pytest.fixture
def other_weights(tmp_path):
    """A different mtvif_iii (seed 7) saved by save_pretrained: config.json records its sha256."""
    torch.manual_seed(7)
    model = mtvif_zoo.create_model('mtvif_iii')
    folder = save_pretrained(model, tmp_path / 'mine', name='mtvif_iii.mine')
    return model, folder


def test_shipped_copy_is_used_offline(published, no_pickle, loopback):
    ref = published['models'][NAME].fusion_only().state_dict()
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'shipped' and m.pretrained_source['verified']
    assert _same(m, ref)
    assert loopback.requests == []  # the Hub was never asked: the shipped copy comes first
    # the untagged name is the default tag; timm's own create_model goes through the same loader
    import timm
    assert timm.create_model('mtvif_iii', pretrained=True).pretrained_source['source'] == 'shipped'


def test_classifier_semantics_as_in_timm(published, no_pickle):
    """Default num_classes: the multi-task model, fusion weights from model.safetensors (fp32) and the
    trained classifier from model_full.safetensors, so config, state and output agree; num_classes=0:
    the fusion-only model; another num_classes: a fresh last classifier conv."""
    src = published['models'][NAME]
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.has_segmentation and m.num_classes == m.pretrained_cfg['num_classes'] == 9
    fusion_keys = set(src.fusion_only().state_dict())
    assert _same(m, src.state_dict(), fusion_keys)  # exact fp32 fusion weights
    cls = {k: v.half() for k, v in src.state_dict().items() if k not in fusion_keys}
    assert cls and _same(m, cls)  # the trained classifier, from the fp16 full copy
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m.eval()(x, y), src.eval()(x, y))
        assert m.segment(x, y).shape == (1, 9, 16, 16)
    f = mtvif_zoo.create_model(NAME, pretrained=True, num_classes=0)
    assert not f.has_segmentation and f.num_classes == 0 and f.training
    assert set(f.state_dict()) == fusion_keys and _same(f, src.state_dict(), fusion_keys)
    with pytest.raises(ValueError, match='no segmentation classifier'):
        f.segment(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with torch.no_grad():
        assert torch.equal(f.eval()(x, y), src.eval()(x, y))
    # num_classes asked explicitly: the multi-task model, last classifier conv fresh, the rest loaded
    full = mtvif_zoo.create_model(NAME, pretrained=True, num_classes=5)
    assert full.has_segmentation and full.num_classes == 5 and full.get_classifier().out_channels == 5
    assert _same(full, src.state_dict(), fusion_keys)
    assert _same(full, cls, [k for k in cls if k.startswith('head.seg_classifier.0.')])


def test_full_multitask_file_via_hf_hub_filename(published, no_pickle):
    src = published['models'][NAME]
    m = mtvif_zoo.create_model(NAME, pretrained=True,
                               pretrained_cfg_overlay=dict(hf_hub_filename='model_full.safetensors'))
    assert m.has_segmentation and m.pretrained_source['path'].endswith('model_full.safetensors')
    ref = {k: v.half().float() for k, v in src.state_dict().items()}  # the full copy is fp16
    assert all(torch.equal(v.float(), ref[k]) for k, v in m.state_dict().items() if v.is_floating_point())
    # a different class count: timm semantics, the classifier is replaced, everything else loads
    m5 = mtvif_zoo.create_model(NAME, pretrained=True, num_classes=5,
                                pretrained_cfg_overlay=dict(hf_hub_filename='model_full.safetensors'))
    assert m5.head.seg_classifier[1].out_channels == 5


def test_explicit_file_beats_env_and_shipped(published, other_weights, monkeypatch, no_pickle):
    model, folder = other_weights
    monkeypatch.setenv('MTVIF_WEIGHTS', str(published['weights']))  # would give the published weight
    with pytest.raises(ValueError, match='fusion-only .* pass num_classes=0'):  # no model_full beside it
        mtvif_zoo.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(folder)))
    for file in (folder, folder / 'model.safetensors'):
        m = mtvif_zoo.create_model(NAME, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=str(file)))
        assert m.pretrained_source['source'] == 'file' and m.pretrained_source['verified']  # sha from config.json
        assert _same(m, model.fusion_only().state_dict())
    # a file with no recorded sha256 (no config.json beside it) is the user's own: loaded, marked unverified
    lone = folder.parent / 'lone.safetensors'
    shutil.copyfile(folder / 'model.safetensors', lone)
    m = mtvif_zoo.create_model('mtvif_iii', pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=str(lone)))
    assert m.pretrained_source['source'] == 'file' and not m.pretrained_source['verified']


def test_local_dir_and_checkpoint_path(published, other_weights, no_pickle, tmp_path):
    model, folder = other_weights
    m = mtvif_zoo.create_model(f'local-dir:{folder}', pretrained=True, num_classes=0)
    assert m.pretrained_source['source'] == 'local-dir' and m.pretrained_source['verified']
    assert _same(m, model.fusion_only().state_dict())
    m = mtvif_zoo.create_model('mtvif_iii', checkpoint_path=str(folder / 'model.safetensors'), num_classes=0)
    assert m.pretrained_source['source'] == 'checkpoint_path' and _same(m, model.fusion_only().state_dict())
    # checkpoint_path never unpickles: a .pth is refused before anything reads it
    pth = tmp_path / 'weights.pth'
    pth.write_bytes(b'not read')
    with pytest.raises(ValueError, match='never unpickles'):
        mtvif_zoo.create_model('mtvif_iii', checkpoint_path=str(pth))


def test_env_var_mirror_beats_shipped(published, other_weights, monkeypatch, tmp_path, no_pickle):
    mirror = tmp_path / 'mirror'
    shutil.copytree(published['weights'] / NAME, mirror / NAME)
    monkeypatch.setenv('MTVIF_WEIGHTS', str(mirror))
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'MTVIF_WEIGHTS' and m.pretrained_source['verified']
    assert m.pretrained_source['path'].startswith(str(mirror))
    # a mirror folder without this weight: falls through to the shipped copy
    monkeypatch.setenv('MTVIF_WEIGHTS', str(tmp_path / 'empty'))
    (tmp_path / 'empty').mkdir()
    assert mtvif_zoo.create_model(NAME, pretrained=True).pretrained_source['source'] == 'shipped'
    # for an architecture with no published weight, MTVIF_WEIGHTS=<dir>/<arch>/ (save_pretrained folders) works
    m2 = mtvif_zoo.create_model('seafusion', in_chans=1)
    save_pretrained(m2, tmp_path / 'own' / 'seafusion', name='seafusion.own')
    monkeypatch.setenv('MTVIF_WEIGHTS', str(tmp_path / 'own'))
    m = mtvif_zoo.create_model('seafusion', pretrained=True, in_chans=1)
    assert m.pretrained_source['source'] == 'MTVIF_WEIGHTS' and m.pretrained_source['verified']
    # the env var may also name one file
    monkeypatch.setenv('MTVIF_WEIGHTS', str(tmp_path / 'own' / 'seafusion' / 'model.safetensors'))
    assert mtvif_zoo.create_model('seafusion', pretrained=True, in_chans=1).pretrained_source['verified']


def test_hub_is_used_when_nothing_ships(published, loopback, hub_env, no_pickle):
    loopback.add_repo('test-org/mtvif_iii-testonly', published['weights'] / NAME)
    shutil.rmtree(published['weights'] / NAME)
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'hf-hub' and m.pretrained_source['verified']
    assert m.pretrained_source['detail'] == f'test-org/mtvif_iii-testonly@{published["revision"]}'
    # the pinned revision is what was requested, and the file landed in HF_HOME's cache
    pinned = f'/test-org/mtvif_iii-testonly/resolve/{published["revision"]}/model.safetensors'
    assert ('GET', pinned) in loopback.requests
    assert m.pretrained_source['path'].startswith(str(hub_env['hf_cache']))
    assert _same(m, published['models'][NAME].fusion_only().state_dict())


def test_url_is_used_when_hub_is_unavailable(published, hub_env, no_pickle):
    shutil.rmtree(published['weights'] / NAME)  # offline (hub_env): the Hub step fails, the file:// URL serves
    m = mtvif_zoo.create_model(NAME, pretrained=True)
    assert m.pretrained_source['source'] == 'url' and m.pretrained_source['verified']
    entry = published['entries'][NAME]
    cached = hub_env['torch_checkpoints'] / f'mtvif_iii_testonly-{entry["sha256"][:12]}.safetensors'
    assert m.pretrained_source['path'] == str(cached) and cached.is_file()
    assert _same(m, published['models'][NAME].fusion_only().state_dict())
    # cache_dir= overrides the torch hub cache, timm style
    m = mtvif_zoo.create_model(NAME, pretrained=True, cache_dir=str(hub_env['hf_home'].parent / 'cache'))
    assert m.pretrained_source['path'].startswith(str(hub_env['hf_home'].parent / 'cache'))


def test_offline_skips_remote_urls_and_lists_what_it_tried(published, monkeypatch):
    from mtvif_zoo.hub import registry
    entry = registry.get_weight(NAME)
    entry['files']['model.safetensors']['url'] = entry['url'] = \
        f'https://weights.invalid/mtvif_iii_testonly-{entry["sha256"][:12]}.safetensors'
    registry.register_weight(NAME, entry)
    shutil.rmtree(published['weights'] / NAME)
    with pytest.raises(WeightsNotFoundError) as e:
        mtvif_zoo.create_model(NAME, pretrained=True)
    msg = str(e.value)
    assert 'shipped copy' in msg and 'Hugging Face Hub test-org/mtvif_iii-testonly' in msg and 'offline' in msg
    assert msg.endswith('. What to do: HF_HUB_OFFLINE=1 and not in the cache: unset it once to download; or use a '
                        "local copy: pretrained_cfg_overlay=dict(file='path/model.safetensors') or MTVIF_WEIGHTS=DIR "
                        '(a folder of mtvif_iii.testonly/model.safetensors), sha256-checked against the registry.'), msg


def test_no_weights_published_for_architecture():
    from mtvif_zoo.hub import list_weights
    from mtvif_zoo.models.multitaskvif import VARIANTS
    arch = next(a for a in VARIANTS if not any(n.startswith(a + '.') for n in list_weights()))
    with pytest.raises(WeightsNotFoundError, match=f"no pretrained weights are published for '{arch}'"):
        mtvif_zoo.create_model(arch, pretrained=True)
