"""The weight registry: one JSON entry per published weight, everything else follows from it.

``mtvif_zoo/hub/registry.json`` maps ``arch.tag`` names (timm style, e.g. ``mtvif_iii.mfnet220``)
to the weight's metadata. From each entry come:

* the timm pretrained cfg of ``arch.tag`` (``hf_hub_id='<repo>@<revision>'``, ``url``,
  ``label_names``, ``input_size``, ``license``, ...): ``mtvif_zoo/models/_weights.py`` reads this
  file at import and feeds ``generate_default_cfgs``; at run time the builder asks
  :func:`entry_for` for the current entry (so :func:`use_registry` works without rewriting timm's
  registry), hence ``list_models(pretrained=True)`` and ``create_model(name, pretrained=True)``;
* the sha256 every copy of the file is checked against (:mod:`mtvif_zoo.hub.pretrained`);
* the model card (:mod:`mtvif_zoo.hub.cards` renders it from the entry's ``card`` block).

The shipped copy of a weight lives in ``mtvif_zoo/hub/weights/<arch.tag>/`` (an HF-style repo
folder: ``model.safetensors``, optional ``model_full.safetensors``, ``config.json``,
``README.md``). Publishing a weight = :func:`mtvif_zoo.hub.publish_weight` (writes that folder,
the entry and ``model_cards/<arch.tag>.md``); nobody edits the JSON by hand.

Entry format (``format_version`` 1), every key required unless marked optional::

    "mtvif_iii.mfnet220": {
      "architecture": "mtvif_iii", "tag": "mfnet220",
      "model_args": {"backbone": "seafusion", "head": "mth", "in_chans": 3, "num_classes": 9},
      "weights": "fusion",                 # content of model.safetensors: "fusion" (no seg classifier) | "full"
      "sha256": "<64 hex>",                # of model.safetensors (== files["model.safetensors"]["sha256"])
      "files": {"model.safetensors": {"sha256": .., "size": .., "dtype": "float32", "content": "fusion",
                                      "url": "https://.../mtvif_iii_mfnet220-<sha256[:12]>.safetensors"},
                "model_full.safetensors": {...optional, "content": "full", "dtype": "float16"},
                "config.json": {"sha256": .., "size": ..}, "README.md": {"sha256": .., "size": ..}},
      "hf_hub_id": "<org>/<repo>" | null,  # optional source
      "revision": "<40 hex commit>" | null, # required with hf_hub_id: the pinned commit
      "url": "<files['model.safetensors'].url>" | null,
      "dataset": "MSRS (train split)", "label_names": [..] | null,
      "input": {"in_chans": 3, "range": "[0, 1]", ...}, "license": "apache-2.0",
      "card": {...}                        # the measured numbers the card is generated from
    }
"""
import contextlib
import copy
import json
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

__all__ = ['REGISTRY_PATH', 'SHIPPED_DIR', 'FORMAT_VERSION', 'WEIGHTS_FILE', 'FULL_WEIGHTS_FILE',
           'RegistryError', 'list_weights', 'get_weight', 'find_weight', 'shipped_dir', 'registry_path',
           'validate_entry', 'entry_for', 'register_weight', 'unregister_weight', 'use_registry',
           'write_registry', 'read_registry', 'url_file_name', 'split_name']

#: the registry shipped with the package
REGISTRY_PATH = Path(__file__).resolve().parent / 'registry.json'
#: where shipped weight folders live: ``SHIPPED_DIR / '<arch.tag>' / 'model.safetensors'``
SHIPPED_DIR = Path(__file__).resolve().parent / 'weights'
FORMAT_VERSION = 1
WEIGHTS_FILE = 'model.safetensors'
FULL_WEIGHTS_FILE = 'model_full.safetensors'

_HEX40 = re.compile(r'[0-9a-f]{40}')
_HEX64 = re.compile(r'[0-9a-f]{64}')
_TAG = re.compile(r'[a-z0-9][a-z0-9_]*')
_URL_HASH = re.compile(r'-([a-f0-9]*)\.')  # torch.hub.HASH_REGEX
#: hash prefix length in URL file names (torch.hub check_hash needs >= 8)
URL_HASH_CHARS = 12
_REQUIRED = ('architecture', 'tag', 'model_args', 'weights', 'sha256', 'files', 'hf_hub_id', 'revision', 'url',
             'dataset', 'label_names', 'input', 'license', 'card')


class RegistryError(ValueError):
    """A registry entry is malformed or inconsistent."""


_lock = threading.RLock()
_state: Dict[str, Any] = {'path': REGISTRY_PATH, 'shipped': SHIPPED_DIR, 'weights': None}


def split_name(name: str) -> Tuple[str, str]:
    arch, _, tag = name.partition('.')
    return arch, tag


def url_file_name(name: str, sha256: str, full: bool = False) -> str:
    """torch.hub-style file name ``<arch>_<tag>[_full]-<sha256 prefix>.safetensors`` (check_hash naming)."""
    arch, tag = split_name(name)
    return f'{arch}_{tag}{"_full" if full else ""}-{sha256[:URL_HASH_CHARS]}.safetensors'


def read_registry(path: Union[str, os.PathLike], strict: bool = True) -> Dict[str, Dict[str, Any]]:
    """The validated ``weights`` mapping of a registry file (``{}`` if the file does not exist).

    ``strict=False`` (the registry in use): a bad entry is warned about and skipped instead of
    raising, so one broken entry never takes the other weights (or ``import mtvif_zoo``) down."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, encoding='utf-8') as f:
        data = json.load(f)
    if data.get('format_version') != FORMAT_VERSION:
        raise RegistryError(f'{path}: unsupported format_version {data.get("format_version")!r} '
                            f'(this mtvif_zoo reads {FORMAT_VERSION})')
    weights = data.get('weights') or {}
    good = {}
    for name, entry in weights.items():
        try:
            validate_entry(name, entry)
        except (RegistryError, AttributeError, TypeError, KeyError) as e:
            if strict:
                raise RegistryError(str(e)) from None
            warnings.warn(f'{path}: {e}; entry skipped', stacklevel=2)
            continue
        good[name] = entry
    return good


def _weights() -> Dict[str, Dict[str, Any]]:
    with _lock:
        if _state['weights'] is None:
            try:
                _state['weights'] = read_registry(_state['path'], strict=False)
            except (OSError, ValueError) as e:  # unreadable JSON, unknown format_version
                warnings.warn(f'weight registry {_state["path"]} unusable ({e}); no published weights', stacklevel=2)
                _state['weights'] = {}
        return _state['weights']


def registry_path() -> Path:
    """The registry file in use (``REGISTRY_PATH`` unless :func:`use_registry` swapped it)."""
    return Path(_state['path'])


def shipped_dir() -> Path:
    """The folder of shipped weight folders in use (``SHIPPED_DIR`` unless swapped)."""
    return Path(_state['shipped'])


def list_weights() -> List[str]:
    """Every registered ``arch.tag``, sorted."""
    return sorted(_weights())


def get_weight(name: str) -> Dict[str, Any]:
    """The registry entry of ``arch.tag`` (a copy); ``KeyError`` listing the published names."""
    w = _weights()
    if name not in w:
        raise KeyError(f'no published weight {name!r}; published: {", ".join(sorted(w)) or "none yet"}')
    return copy.deepcopy(w[name])


def find_weight(architecture: str, tag: Optional[str]) -> Optional[Dict[str, Any]]:
    """The entry of ``architecture.tag`` or ``None`` (``tag`` ``None``/empty: no entry)."""
    if not tag:
        return None
    entry = _weights().get(f'{architecture}.{tag}')
    return copy.deepcopy(entry) if entry is not None else None


def validate_entry(name: str, entry: Dict[str, Any]) -> None:
    """Raise :class:`RegistryError` unless ``entry`` is a complete, self-consistent registry entry."""
    def bad(msg):
        raise RegistryError(f'registry entry {name!r}: {msg}')
    arch, tag = split_name(name)
    if not tag or not _TAG.fullmatch(tag):
        bad('names are "arch.tag" with a tag of [a-z0-9_]')
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        bad(f'missing keys {missing}')
    if entry['architecture'] != arch or entry['tag'] != tag:
        bad(f'architecture/tag {entry["architecture"]!r}/{entry["tag"]!r} do not match the name')
    if entry['weights'] not in ('fusion', 'full'):
        bad(f'weights must be "fusion" or "full", got {entry["weights"]!r}')
    files = entry['files']
    if not isinstance(files, dict) or WEIGHTS_FILE not in files:
        bad(f'files must list {WEIGHTS_FILE}')
    for fname, info in files.items():
        if not _HEX64.fullmatch(str(info.get('sha256', ''))):
            bad(f'files[{fname!r}].sha256 must be 64 lowercase hex digits')
        if not isinstance(info.get('size'), int):
            bad(f'files[{fname!r}].size must be an int')
        url = info.get('url')
        if url:
            m = _URL_HASH.search(os.path.basename(url.split('?')[0]))
            if not m or len(m.group(1)) < 8 or not info['sha256'].startswith(m.group(1)):
                bad(f'files[{fname!r}].url file name must carry the sha256 prefix (torch.hub check_hash '
                    f'naming "name-<sha256[:8+]>.ext"), got {url!r}')
    if entry['sha256'] != files[WEIGHTS_FILE]['sha256']:
        bad('sha256 differs from files["model.safetensors"].sha256')
    if entry['url'] != files[WEIGHTS_FILE].get('url'):
        bad('url differs from files["model.safetensors"].url')
    if entry['hf_hub_id']:
        if '@' in entry['hf_hub_id'] or entry['hf_hub_id'].count('/') != 1:
            bad(f'hf_hub_id must be "org/name" (revision separate), got {entry["hf_hub_id"]!r}')
        if not _HEX40.fullmatch(str(entry['revision'] or '')):
            bad('revision must pin the Hub repo to a 40-hex commit id')
    if not isinstance(entry['model_args'], dict) or 'in_chans' not in entry['model_args']:
        bad('model_args must be a dict with at least in_chans')


def entry_for(architecture: str, tag: Optional[str]) -> Optional[Tuple[Dict[str, Any], Path]]:
    """``(entry, shipped_dir)`` of ``architecture.tag`` in the registry in use, ``tag=None``: the
    architecture's default weight (the first tag, as timm's default); ``None`` if there is none.
    The model builder's hook (``mtvif_zoo.models.multitaskvif.WeightsHook.entry``)."""
    w = _weights()
    if not tag:
        names = sorted(n for n in w if split_name(n)[0] == architecture)
        if not names:
            return None
        tag = split_name(names[0])[1]
    entry = w.get(f'{architecture}.{tag}')
    return (copy.deepcopy(entry), shipped_dir()) if entry is not None else None


def register_weight(name: str, entry: Dict[str, Any]) -> None:
    """Add (or replace) ``name`` in the in-memory registry (not written to disk). timm's own registry
    is not touched: the zoo's ``create_model`` / ``list_models`` read this registry."""
    validate_entry(name, entry)
    with _lock:
        _weights()[name] = copy.deepcopy(entry)


def unregister_weight(name: str) -> None:
    """Remove ``name`` from the in-memory registry."""
    with _lock:
        _weights().pop(name, None)


def write_registry(weights: Dict[str, Dict[str, Any]], path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Write ``weights`` as a registry file (validated, sorted, atomic)."""
    path = Path(path or registry_path())
    for name, entry in weights.items():
        validate_entry(name, entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump({'format_version': FORMAT_VERSION, 'weights': weights}, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def use_registry(path: Union[str, os.PathLike], shipped: Optional[Union[str, os.PathLike]] = None) -> Iterator[None]:
    """Use another registry file (and shipped-weights folder) inside the ``with`` block.

    For tests and for staging a weight before it is published. ``mtvif_zoo.create_model`` /
    ``list_models`` follow it; timm's own registry keeps the weights registered at import.
    """
    with _lock:
        saved = dict(_state)
        _state.update(path=Path(path), shipped=Path(shipped) if shipped else Path(path).parent / 'weights',
                      weights=None)
        try:
            _weights()
        except Exception:
            _state.clear()
            _state.update(saved)
            raise
    try:
        yield
    finally:
        with _lock:
            _state.clear()
            _state.update(saved)
