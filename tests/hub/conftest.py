"""Hub fixtures: an isolated HF/torch cache per test, the loopback Hub, and test-made weights.

Isolation (huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HOME once, at import): each
test gets a temporary HF_HOME and TORCH_HOME, set both as environment variables (for
subprocesses and torch.hub, which reads TORCH_HOME per call) and on ``huggingface_hub.constants``
(``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``ENDPOINT`` and the URL template derived from
it), which the client reads at call time. Offline by default; the ``loopback`` fixture points the
endpoint at the loopback server and goes online. Subprocess tests prove the real environment
variables work end to end.

No real trained weights exist: ``published`` publishes randomly initialised models under
test-only tags (``mtvif_iii.testonly``, ``mtvif_iv.testonly``) into a temporary registry, never
into the package's.
"""
import shutil
from pathlib import Path

import pytest
import torch

from .loopback_hub import LoopbackHub, _commit_id

TEST_RESULTS = [{'task': 'fusion', 'dataset': 'MSRS', 'split': 'test', 'convention': 'test-only',
                 'metrics': {'EN': 1.25, 'SD': 2.5}},
                {'task': 'segmentation', 'dataset': 'MSRS', 'split': 'test', 'convention': 'test-only',
                 'metrics': {'mIoU': 0.125}}]
TEST_TRAINING = {'data': 'none: random initialisation (test weight)', 'budget': 'none', 'seed': 0}
HUB_REPO = 'test-org/mtvif_iii-testonly'


def _set_hf(monkeypatch, home: Path, offline: bool, endpoint: str = None) -> None:
    from huggingface_hub import constants
    monkeypatch.setenv('HF_HOME', str(home))
    monkeypatch.delenv('HF_HUB_CACHE', raising=False)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1' if offline else '0')
    monkeypatch.setattr(constants, 'HF_HOME', str(home))
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(home / 'hub'))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', offline)
    if endpoint:
        monkeypatch.setenv('HF_ENDPOINT', endpoint)
        monkeypatch.setattr(constants, 'ENDPOINT', endpoint)
        monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE',
                            endpoint + '/{repo_id}/resolve/{revision}/{filename}')


@pytest.fixture(autouse=True)
def _forget_unanswering_endpoints(monkeypatch):
    """Each test starts without the zoo's memory of Hub endpoints that left a request unanswered."""
    import mtvif_zoo.hub.pretrained as hp
    monkeypatch.setattr(hp, '_UNANSWERED', {}, raising=False)


@pytest.fixture(autouse=True)
def hub_env(tmp_path, monkeypatch):
    """Every hub test: private HF_HOME + TORCH_HOME, offline, no MTVIF_WEIGHTS, unreachable endpoint."""
    home = tmp_path / 'hf_home'
    _set_hf(monkeypatch, home, offline=True, endpoint='http://127.0.0.1:9')  # port 9: nothing listens
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.delenv('MTVIF_WEIGHTS', raising=False)
    return {'hf_home': home, 'hf_cache': home / 'hub',
            'torch_checkpoints': tmp_path / 'torch_home' / 'hub' / 'checkpoints'}


@pytest.fixture
def loopback(hub_env, monkeypatch):
    """A running loopback Hub; huggingface_hub points at it and is online."""
    with LoopbackHub() as hub:
        _set_hf(monkeypatch, hub_env['hf_home'], offline=False, endpoint=hub.url)
        yield hub


def _publish(root: Path, arch: str, seed: int, **kwargs):
    import mtvif_zoo
    from mtvif_zoo.hub import publish_weight
    torch.manual_seed(seed)
    model = mtvif_zoo.create_model(arch)
    name = f'{arch}.testonly'
    entry = publish_weight(model, name, dataset='none (random initialisation, test only)', results=TEST_RESULTS,
                           training=TEST_TRAINING, registry_path=root / 'registry.json', shipped_dir=root / 'weights',
                           cards_dir=root / 'model_cards', release_dir=root / 'release',
                           url_base=(root / 'release').as_uri(), **kwargs)
    return model, entry


@pytest.fixture(scope='session')
def published_src(tmp_path_factory):
    """Test weights published once per session into a temporary registry (never the package's).

    ``mtvif_iii.testonly``: random mtvif_iii, fusion-only model.safetensors + fp16 model_full,
    hf_hub_id ``test-org/mtvif_iii-testonly`` pinned to the commit the loopback Hub will give the
    folder (content-addressed, so every test's server reproduces it); ``mtvif_iv.testonly`` for
    the torch.hub test; URLs are ``file://`` release assets.
    """
    root = tmp_path_factory.mktemp('published')
    # the loopback Hub's commit of a folder is a function of its files (not of the revision, which
    # neither the card nor config.json contains): publish, then pin the commit the server will report
    model_iii, entry_iii = _publish(root, 'mtvif_iii', 0, hf_hub_id=HUB_REPO, revision='0' * 40)
    files = {p.name: p.read_bytes() for p in sorted((root / 'weights' / 'mtvif_iii.testonly').iterdir())}
    revision = _commit_id(None, files, 'initial')
    # re-pin: rewrite the registry with the real commit (the card does not contain the revision)
    from mtvif_zoo.hub import registry
    weights = registry.read_registry(root / 'registry.json')
    weights['mtvif_iii.testonly']['revision'] = revision
    registry.write_registry(weights, root / 'registry.json')
    entry_iii['revision'] = revision
    model_iv, entry_iv = _publish(root, 'mtvif_iv', 1)
    from mtvif_zoo.hub import sha256_file
    fingerprint = {p: sha256_file(p) for p in sorted(root.rglob('*')) if p.is_file()}
    return {'root': root, 'models': {'mtvif_iii.testonly': model_iii, 'mtvif_iv.testonly': model_iv},
            'entries': {'mtvif_iii.testonly': entry_iii, 'mtvif_iv.testonly': entry_iv}, 'revision': revision,
            'fingerprint': fingerprint}


@pytest.fixture
def published(published_src, tmp_path):
    """A private copy of the published test registry, in use for the test (restored afterwards).

    The entries' ``file://`` URLs still name the session's release folder (they are part of the
    cards); a test that damages a release asset copies it and re-registers the entry.
    """
    from mtvif_zoo.hub import use_registry
    root = tmp_path / 'published'
    shutil.copytree(published_src['root'], root)
    with use_registry(root / 'registry.json', root / 'weights'):
        yield {**published_src, 'root': root, 'weights': root / 'weights', 'release': root / 'release',
               'cards': root / 'model_cards'}
    from mtvif_zoo.hub import sha256_file  # the shared originals must stay intact for the other tests
    assert {p: sha256_file(p) for p in published_src['fingerprint']} == published_src['fingerprint']


@pytest.fixture
def no_pickle(monkeypatch):
    """Fail the test if anything calls torch.load (pickle) while loading weights."""
    def refuse(*a, **k):
        raise AssertionError('torch.load (pickle) was called')
    monkeypatch.setattr(torch, 'load', refuse)
    import timm.models._helpers as th
    monkeypatch.setattr(th, '_torch_load', refuse)
