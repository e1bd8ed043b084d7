"""Publishing weights: an HF-style repo folder, the Hub upload, and the registry entry.

* :func:`save_pretrained` writes ``model.safetensors`` (fusion-only by default, or the full
  multi-task weights), optionally ``model_full.safetensors`` (e.g. fp16), ``README.md`` (the
  generated card) and ``config.json`` — timm-compatible, so ``create_model('local-dir:DIR')`` and
  ``create_model('hf-hub:org/name')`` rebuild the architecture from it, plus an ``mtvif_zoo``
  block recording every file's sha256 (checked before loading);
* :func:`push_to_hub` uploads such a folder with ``huggingface_hub`` (``create_repo`` +
  ``upload_folder``) and returns the commit to pin;
* :func:`publish_weight` does the whole release of a trained model: the shipped folder
  ``mtvif_zoo/hub/weights/<arch.tag>/``, optionally the Hub upload, the torch.hub-named release
  asset for the URL source, ``model_cards/<arch.tag>.md`` and the registry entry — after which
  ``list_models(pretrained=True)``, ``create_model(name, pretrained=True)``, torch.hub and the
  card all follow.
"""
import copy
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from .._factory import architecture_of
from . import registry
from .cards import NOT_RECORDED, card_block, render_card
from .pretrained import load_safetensors, sha256_file
from .registry import FULL_WEIGHTS_FILE, WEIGHTS_FILE

__all__ = ['save_pretrained', 'push_to_hub', 'publish_weight', 'model_args', 'architecture_of',
           'input_convention']

PathLike = Union[str, os.PathLike]
_DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}


def model_args(model: nn.Module) -> Dict[str, Any]:
    """The ``create_model`` keyword arguments that rebuild ``model``'s full (multi-task) architecture."""
    head = model.head
    args = {'backbone': model.backbone_name, 'head': model.head_name, 'in_chans': int(model.in_chans),
            'num_classes': int(getattr(head, 'num_classes', model.num_classes) or 0)}
    given = getattr(model, '_model_args', None) or {}  # what the user passed to create_model (timm records it)
    for k in ('head_args', 'backbone_args'):
        if given.get(k) is not None:
            args[k] = json.loads(json.dumps(given[k]))
    return args


def input_convention(model: nn.Module) -> Dict[str, str]:
    """The input convention of ``mtvif_zoo.fuse`` for this model, for cards and the registry."""
    c = int(model.in_chans)
    return {
        'in_chans': str(c),
        'range': 'float in [0, 1] per channel (uint8 / 255; 16-bit data rescaled, see mtvif_zoo.fuse)',
        'visible': 'RGB' if c == 3 else 'Y channel of YCbCr (fused Y recombined with the visible Cb/Cr)',
        'infrared': 'one channel, replicated to 3 channels' if c == 3 else 'one channel',
        'layout': 'B x C x H x W tensors, vis and ir registered (pixel-aligned) and of equal size',
        'size': (f'any; reflect-padded to a multiple of {int(model.pad_multiple)} and cropped back'
                 if int(model.pad_multiple) > 1 else 'any'),
        'output': 'fused image in [0, 1], same channels as the visible input',
    }


def _states(model: nn.Module) -> Dict[str, Dict[str, torch.Tensor]]:
    full = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if getattr(model, 'has_segmentation', False):
        fusion = {k: v.detach().contiguous().cpu() for k, v in model.fusion_only().state_dict().items()}
    else:
        fusion = full
    return {'full': full, 'fusion': fusion}


def _safetensors_bytes(state: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> bytes:
    """safetensors bytes with a canonical header (the library writes metadata in hash-map order,
    which would give a different sha256 for the same weights on every run). Not
    ``huggingface_hub.save_torch_state_dict``: it writes through the same safetensors call (same
    per-process order, ``tests/hub/test_library_equivalents.py``), and its sharding is not needed for
    files of a few MB."""
    from safetensors.torch import save
    raw = save(state, metadata=metadata)
    n = int.from_bytes(raw[:8], 'little')
    header = json.dumps(json.loads(raw[8:8 + n]), separators=(',', ':'), sort_keys=True).encode()
    header += b' ' * (-len(header) % 8)
    return len(header).to_bytes(8, 'little') + header + raw[8 + n:]


def _write_safetensors(state: Dict[str, torch.Tensor], path: Path, dtype: Optional[torch.dtype],
                       metadata: Dict[str, str]) -> Dict[str, Any]:
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(_safetensors_bytes(state, metadata))
    os.replace(tmp, path)
    floats = {str(v.dtype).replace('torch.', '') for v in state.values() if v.is_floating_point()}
    return {'sha256': sha256_file(path), 'size': path.stat().st_size, 'dtype': ','.join(sorted(floats))}


def _label_names(model: nn.Module, num_classes: int, label_names: Optional[Sequence[str]]):
    if label_names is not None:
        label_names = [str(x) for x in label_names]
        if len(label_names) != num_classes:
            raise ValueError(f'{len(label_names)} label names for {num_classes} classes')
        return label_names
    known = (getattr(model, 'pretrained_cfg', None) or {}).get('label_names')
    if num_classes and known and len(known) == num_classes:
        return list(known)
    if num_classes:
        from .._factory import MSRS_CLASSES
        if num_classes == len(MSRS_CLASSES):
            return list(MSRS_CLASSES)
    return None


def _hf_config(model: nn.Module, arch: str, tag: str, args: Dict[str, Any], label_names, license: str,
               files: Dict[str, Dict[str, Any]], weights: str, dataset: str, input: Dict[str, str],
               source: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    from .._factory import base_cfg
    from ..version import __version__
    pc = base_cfg(arch)
    pc.update(architecture=arch, tag=tag, hf_hub_filename=WEIGHTS_FILE, license=license,
              input_size=[args['in_chans'], *pc.get('input_size', (3, 256, 256))[1:]],
              num_classes=args['num_classes'], label_names=label_names,
              description=f'{weights} weights trained on {dataset}')
    pc.pop('url', None)
    pc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in pc.items() if v is not None or k in
          ('first_conv', 'classifier')}
    return {
        'architecture': arch,
        'num_classes': args['num_classes'],
        'num_features': int(model.num_features),
        'pretrained_cfg': pc,
        'model_args': args,
        'mtvif_zoo': {'format_version': registry.FORMAT_VERSION, 'library_version': __version__,
                      'name': f'{arch}.{tag}', 'weights': weights, 'dataset': dataset, 'input': input,
                      'files': {k: {kk: vv for kk, vv in v.items() if kk != 'url'} for k, v in files.items()},
                      **({'source': dict(source)} if source else {})},
    }


def _save(model: nn.Module, folder: Path, *, name: str, weights: str, full_copy: Optional[str], dataset: str,
          card: Optional[Dict[str, Any]], license: str, label_names, hf_hub_id: Optional[str],
          url_base: Optional[str], input: Optional[Dict[str, str]],
          source: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Write the repo folder, check it rebuilds and reloads bit-exactly; return the registry-style entry."""
    arch = architecture_of(model)
    n_arch, tag = registry.split_name(name)
    if n_arch != arch:
        raise ValueError(f'name {name!r} must start with the model\'s architecture {arch!r}')
    if not re.fullmatch(r'[a-z0-9][a-z0-9_]*', tag or ''):
        raise ValueError(f'name must be "arch.tag" with a tag of [a-z0-9_], got {name!r}')
    if weights not in ('fusion', 'full'):
        raise ValueError(f"weights must be 'fusion' or 'full', got {weights!r}")
    has_seg = bool(getattr(model, 'has_segmentation', False))
    if weights == 'full' and not has_seg and getattr(model, 'head_name', '').startswith('mth'):
        raise ValueError("weights='full' needs the multi-task model; this one has no segmentation classifier")
    if full_copy is not None and full_copy not in _DTYPES:
        raise ValueError(f'full_copy must be one of {sorted(_DTYPES)} or None, got {full_copy!r}')
    args = model_args(model)
    label_names = _label_names(model, args['num_classes'], label_names)
    input = dict(input or input_convention(model))
    states = _states(model)

    folder.mkdir(parents=True, exist_ok=True)
    meta = {'format': 'pt', 'mtvif_zoo_config': json.dumps({'architecture': arch, **args}, sort_keys=True)}
    files: Dict[str, Dict[str, Any]] = {}
    files[WEIGHTS_FILE] = {**_write_safetensors(states[weights], folder / WEIGHTS_FILE, None,
                                                {**meta, 'content': weights}), 'content': weights}
    if full_copy and has_seg and weights == 'fusion':
        files[FULL_WEIGHTS_FILE] = {**_write_safetensors(states['full'], folder / FULL_WEIGHTS_FILE,
                                                         _DTYPES[full_copy], {**meta, 'content': 'full'}),
                                    'content': 'full'}
    for fname, info in files.items():
        if url_base:
            asset = registry.url_file_name(name, info['sha256'], full=fname != WEIGHTS_FILE)
            info['url'] = f'{url_base.rstrip("/")}/{asset}'

    entry = {'architecture': arch, 'tag': tag, 'model_args': args, 'weights': weights,
             'sha256': files[WEIGHTS_FILE]['sha256'], 'files': files, 'hf_hub_id': hf_hub_id, 'revision': None,
             'url': files[WEIGHTS_FILE].get('url'), 'dataset': dataset, 'label_names': label_names,
             'input': input, 'license': license,
             'card': card if card is not None else card_block(model)}
    readme = folder / 'README.md'
    readme.write_text(render_card(entry), encoding='utf-8')
    files['README.md'] = {'sha256': sha256_file(readme), 'size': readme.stat().st_size}
    config = _hf_config(model, arch, tag, args, label_names, license, files, weights, dataset, input, source)
    cfg_path = folder / 'config.json'
    cfg_path.write_text(json.dumps(config, indent=2, sort_keys=False) + '\n', encoding='utf-8')
    files['config.json'] = {'sha256': sha256_file(cfg_path), 'size': cfg_path.stat().st_size}
    _check_round_trip(folder, states, files, arch, args)
    return entry


def _check_round_trip(folder: Path, states, files, arch: str, args: Dict[str, Any]) -> None:
    """The folder rebuilds the architecture from config.json and every file reloads as written."""
    from .._factory import create_model
    from ..weights import check_state_dict
    rebuilt = create_model(arch, **args)
    own = rebuilt.state_dict()
    for fname, info in files.items():
        if not fname.endswith('.safetensors'):
            continue
        loaded = load_safetensors(folder / fname)
        ref = states[info['content']]
        check_state_dict(rebuilt, {**{k: own[k] for k in set(own) - set(loaded)}, **loaded},
                         source=str(folder / fname))
        if set(loaded) != set(ref):
            raise RuntimeError(f'{folder / fname}: keys differ from the {info["content"]} state dict')
        for k, v in ref.items():
            w = loaded[k]
            if w.dtype != v.dtype:
                w, v = w.float(), v.to(w.dtype).float()
            if not torch.equal(w, v):
                raise RuntimeError(f'{folder / fname}: tensor {k!r} did not round-trip')


def save_pretrained(model: nn.Module, save_directory: PathLike, *, name: Optional[str] = None,
                    weights: str = 'fusion', full_copy: Optional[str] = None, dataset: str = NOT_RECORDED,
                    card: Optional[Mapping[str, Any]] = None, license: str = 'apache-2.0',
                    label_names: Optional[Sequence[str]] = None, hf_hub_id: Optional[str] = None,
                    url_base: Optional[str] = None, input: Optional[Dict[str, str]] = None,
                    source: Optional[Mapping[str, Any]] = None) -> Path:
    """Write an HF-style repo folder for ``model``; returns the folder.

    ``model.safetensors`` holds the fusion-only weights (``weights='fusion'``, what inference
    needs) or the full multi-task weights (``'full'``); ``full_copy='float16'`` (or ``'float32'``)
    adds ``model_full.safetensors`` for fine-tuning. ``config.json`` is what ``local-dir:`` and
    ``hf-hub:`` loading read (architecture, model_args, timm pretrained cfg, sha256 of every file);
    ``README.md`` is the card generated from ``card`` (a :func:`mtvif_zoo.hub.cards.card_block`;
    default: measured sizes only, everything else "not recorded"). ``name`` is ``arch.tag``
    (default ``<arch>.custom``). ``source``: where the weights came from (e.g. the converted
    original checkpoint's file name and sha256), recorded in ``config.json``'s ``mtvif_zoo`` block.
    """
    name = name or f'{architecture_of(model)}.custom'
    folder = Path(save_directory)
    _save(model, folder, name=name, weights=weights, full_copy=full_copy, dataset=dataset,
          card=dict(card) if card is not None else None, license=license, label_names=label_names,
          hf_hub_id=hf_hub_id, url_base=url_base, input=input, source=source)
    return folder


def push_to_hub(model_or_folder: Union[nn.Module, PathLike], repo_id: str, *, token: Optional[str] = None,
                private: bool = False, revision: Optional[str] = None, commit_message: Optional[str] = None,
                endpoint: Optional[str] = None, create_repo: bool = True, **save_kwargs):
    """Upload a :func:`save_pretrained` folder (or a model, saved to a temporary folder first).

    Uses ``huggingface_hub.HfApi`` (``HF_ENDPOINT`` / ``endpoint``, ``HF_TOKEN`` / ``token``):
    ``create_repo(exist_ok=True)`` then ``upload_folder`` (one commit with every file of the folder).
    Returns the ``CommitInfo``; ``.oid`` is the 40-hex commit to pin as the registry's revision.
    """
    from huggingface_hub import HfApi
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model_or_folder, nn.Module):
            folder = save_pretrained(model_or_folder, Path(tmp) / 'repo', **save_kwargs)
        else:
            folder = Path(model_or_folder)
            if save_kwargs:
                raise TypeError(f'save options {sorted(save_kwargs)} only apply when a model is given')
            if not (folder / 'config.json').is_file() or not (folder / WEIGHTS_FILE).is_file():
                raise FileNotFoundError(f'{folder} is not a save_pretrained folder (config.json + {WEIGHTS_FILE})')
        if create_repo:
            api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 commit_message=commit_message or f'Upload {folder.name} (mtvif_zoo)',
                                 ignore_patterns=['.*'])


def publish_weight(model: nn.Module, name: str, *, dataset: str, results: Sequence[Mapping[str, Any]],
                   training: Mapping[str, Any], label_names: Optional[Sequence[str]] = None,
                   hf_hub_id: Optional[str] = None, revision: Optional[str] = None, push: bool = False,
                   token: Optional[str] = None, endpoint: Optional[str] = None, url_base: Optional[str] = None,
                   license: str = 'apache-2.0', full_copy: Optional[str] = 'float16',
                   limitations: Iterable[str] = (), description: Optional[str] = None,
                   datasets: Optional[Sequence[str]] = None, github_repo: Optional[str] = None,
                   registry_path: Optional[PathLike] = None, shipped_dir: Optional[PathLike] = None,
                   cards_dir: Optional[PathLike] = None, release_dir: Optional[PathLike] = None,
                   overwrite: bool = False) -> Dict[str, Any]:
    """Publish a trained model as ``name`` (``arch.tag``); returns the registry entry written.

    1. ``<shipped_dir>/<name>/``: fusion-only ``model.safetensors`` (+ ``model_full.safetensors``
       in ``full_copy`` precision), ``config.json``, ``README.md`` (card from ``results`` /
       ``training`` as measured, sizes measured here);
    2. with ``hf_hub_id``: ``push=True`` uploads the folder and pins the returned commit, else
       ``revision`` must be the 40-hex commit where these exact files already are;
    3. with ``url_base`` (e.g. a GitHub release download URL): the entry's URLs are
       ``<url_base>/<arch>_<tag>-<sha256[:12]>.safetensors`` and the files to attach to that
       release are copied, with those names, to ``release_dir``;
    4. ``<cards_dir>/<name>.md`` (the card) and the entry in ``registry_path``;
       if that is the registry in use, timm's registry is refreshed at once.

    Defaults: the package's registry and shipped folder, ``model_cards/`` of the checkout,
    ``dist/release/`` of the current directory.
    """
    if not results:
        raise ValueError('publish_weight needs the measured results (the card reports only measured numbers)')
    if not training or not training.get('data') or not any(k in training for k in ('budget', 'epochs', 'iterations')):
        raise ValueError("training must give at least 'data' and the budget ('budget', 'epochs' or 'iterations')")
    if hf_hub_id and not push and not re.fullmatch(r'[0-9a-f]{40}', revision or ''):
        raise ValueError('with hf_hub_id, either push=True or give revision= (the 40-hex commit of the upload)')
    registry_path = Path(registry_path or registry.registry_path())
    shipped = Path(shipped_dir or registry.shipped_dir())
    cards = Path(cards_dir) if cards_dir else None
    if cards is None:
        from .cards import CARDS_DIR
        cards = CARDS_DIR
    weights_on_disk = registry.read_registry(registry_path)
    folder = shipped / name
    if (name in weights_on_disk or folder.exists()) and not overwrite:
        raise FileExistsError(f'{name} is already published ({registry_path} / {folder}); pass overwrite=True '
                              'to replace it')
    if folder.exists():
        shutil.rmtree(folder)
    block = card_block(model, training=training, results=results, limitations=limitations, datasets=datasets,
                       description=description, github_repo=github_repo)
    try:
        entry = _save(model, folder, name=name, weights='fusion', full_copy=full_copy, dataset=dataset, card=block,
                      license=license, label_names=label_names, hf_hub_id=hf_hub_id, url_base=url_base, input=None)
        if entry['model_args']['num_classes'] and not entry['label_names']:
            raise ValueError(f'give label_names for the {entry["model_args"]["num_classes"]} segmentation classes')
        if hf_hub_id and push:
            info = push_to_hub(folder, hf_hub_id, token=token, endpoint=endpoint,
                               commit_message=f'mtvif_zoo: publish {name}')
            revision = info.oid
        entry['revision'] = revision if hf_hub_id else None
        registry.validate_entry(name, entry)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if url_base:
        rel = Path(release_dir or Path.cwd() / 'dist' / 'release')
        rel.mkdir(parents=True, exist_ok=True)
        for fname, info in entry['files'].items():
            if info.get('url'):
                shutil.copyfile(folder / fname, rel / os.path.basename(info['url']))
    cards.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / 'README.md', cards / f'{name}.md')
    weights_on_disk[name] = entry
    registry.write_registry(weights_on_disk, registry_path)
    if registry_path.resolve() == registry.registry_path().resolve():
        registry.register_weight(name, entry)
    return copy.deepcopy(entry)
