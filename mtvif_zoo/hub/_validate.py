"""Checks on a weight repo's ``config.json`` before anything is built or read (``hf-hub:`` / ``local-dir:``).

timm builds whatever architecture a ``config.json`` names, with whatever ``model_args`` it holds,
and loads ``pytorch_model.bin`` with ``torch.load`` when there is no safetensors file. For the zoo
a config must:

* parse: UTF-8 JSON holding an object (a Hub copy corrupted in transit is removed from the cache
  and fetched once more, see :func:`load_hub_config`);
* name one of the zoo's architectures (never ``resnet18`` & co., whose weights timm would unpickle);
* hold only known keys: top level ``architecture``, ``num_classes``, ``num_features``,
  ``pretrained_cfg``, ``model_args``, ``label_names``, ``label_descriptions``, ``mtvif_zoo``;
  ``model_args`` only ``create_model``'s (``backbone``, ``head``, ``in_chans``, ``num_classes``,
  ``backbone_args``, ``head_args``), and ``backbone_args`` / ``head_args`` only the parameters of
  that backbone / head;
* keep values in range: ``in_chans`` 1 or 3, ``num_classes`` 0 .. :data:`MAX_CLASSES`, every
  integer inside ``backbone_args`` / ``head_args`` 0 .. :data:`MAX_INT_ARG` (a 10-million-class
  classifier would be allocated before any other check and get the process OOM-killed);
* name safetensors files only (``pretrained_cfg.hf_hub_filename``).

Violations raise :class:`ConfigError` naming the file, the key and the allowed values.
"""
import json
import os
from pathlib import Path
from typing import Any, Dict, Union

from .._factory import MAX_CLASSES, MAX_INT_ARG, check_model_args, check_num_classes

__all__ = ['ConfigError', 'parse_config', 'validate_config', 'load_local_config', 'load_hub_config',
           'MAX_CLASSES', 'MAX_INT_ARG']

TOP_KEYS = {'architecture', 'num_classes', 'num_features', 'pretrained_cfg', 'model_args', 'label_names',
            'label_descriptions', 'mtvif_zoo'}
MODEL_ARGS = {'backbone', 'head', 'in_chans', 'num_classes', 'backbone_args', 'head_args'}


class ConfigError(ValueError):
    """A ``config.json`` is unreadable or asks for something the zoo does not build."""


def parse_config(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read ``path`` as UTF-8 JSON holding an object; :class:`ConfigError` otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f'cannot read {str(path)!r}: {e}') from None
    try:
        cfg = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f'{str(path)!r} is not valid UTF-8 JSON ({e})') from None
    if not isinstance(cfg, dict):
        raise ConfigError(f'{str(path)!r} must hold a JSON object, got {type(cfg).__name__}')
    return cfg


def _check_classes(value: Any, where: str) -> None:
    try:
        check_num_classes(value, where)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def validate_config(cfg: Dict[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` unless ``cfg`` (a parsed ``config.json``) is one the zoo builds safely."""
    from .._factory import VARIANTS, list_backbones, list_heads

    def bad(msg):
        raise ConfigError(f'{where}: {msg}')
    unknown = sorted(set(cfg) - TOP_KEYS)
    if unknown:
        bad(f'unknown key(s) {unknown}; a zoo config.json has {", ".join(sorted(TOP_KEYS))}')
    arch = cfg.get('architecture')
    if arch not in VARIANTS:
        bad(f'architecture {arch!r} is not a mtvif_zoo model (zoo models: {", ".join(sorted(VARIANTS))}); the zoo '
            'builds only its own architectures, from safetensors weights')
    _check_classes(cfg.get('num_classes'), 'num_classes')
    pcfg = cfg.get('pretrained_cfg', {})
    if not isinstance(pcfg, dict):
        bad('pretrained_cfg must be an object')
    if pcfg.get('architecture') not in (None, arch):
        bad(f'pretrained_cfg.architecture {pcfg.get("architecture")!r} differs from architecture {arch!r}')
    _check_classes(pcfg.get('num_classes'), 'pretrained_cfg.num_classes')
    fname = pcfg.get('hf_hub_filename')
    if fname is not None and (not isinstance(fname, str) or not fname.endswith('.safetensors') or '/' in fname
                              or '\\' in fname):
        bad(f'pretrained_cfg.hf_hub_filename {fname!r} must be a .safetensors file name (weights are never '
            'unpickled)')
    args = cfg.get('model_args', {})
    if not isinstance(args, dict):
        bad('model_args must be an object')
    unknown = sorted(set(args) - MODEL_ARGS)
    if unknown:
        bad(f'unknown model_args {unknown}; valid: {", ".join(sorted(MODEL_ARGS))}')
    if args.get('in_chans', 3) not in (1, 3) or isinstance(args.get('in_chans'), bool):
        bad(f'model_args.in_chans = {args.get("in_chans")!r} must be 1 or 3')
    _check_classes(args.get('num_classes'), 'model_args.num_classes')
    backbone = args.get('backbone') or VARIANTS[arch][0]
    head = args.get('head') or VARIANTS[arch][1]
    if backbone not in list_backbones():
        bad(f'model_args.backbone {backbone!r} is not a zoo backbone ({", ".join(list_backbones())})')
    if head not in list_heads():
        bad(f'model_args.head {head!r} is not a zoo head ({", ".join(list_heads())})')
    try:  # the same checks the model builder makes (so timm.create_model users get them too)
        check_model_args(backbone, head, None, args.get('backbone_args'), args.get('head_args'), 'model_args.')
    except (TypeError, ValueError) as e:
        bad(str(e))


def load_local_config(folder: Union[str, os.PathLike]) -> Dict[str, Any]:
    """``local-dir:`` names: the folder's ``config.json``, parsed and validated."""
    path = Path(folder).expanduser() / 'config.json'
    if not path.is_file():
        raise FileNotFoundError(f'local-dir: no config.json in {str(Path(folder))!r}')
    cfg = parse_config(path)
    validate_config(cfg, str(path))
    return cfg


def load_hub_config(hf_hub_id: str, cache_dir=None) -> Dict[str, Any]:
    """``hf-hub:`` names: the repo's ``config.json`` through the bounded Hub download, parsed and
    validated. A cached copy that does not parse or does not validate (corrupted in transit: a
    flipped digit can turn ``num_classes: 9`` into an out-of-range value that still parses) is
    removed from the cache and fetched once more (online); if that copy is bad too it is removed as
    well and the error says so. Offline, the error names the cached copy that was removed."""
    from timm.models._hub import hf_split as _hf_split

    from .pretrained import WeightsNotFoundError, _hf_download, _offline, _purge_hf, _Unavailable
    repo_id, revision = _hf_split(hf_hub_id)
    where = f'config.json of the Hub repo {repo_id}@{revision or "main"}'
    for attempt in (1, 2):
        try:
            path = _hf_download(repo_id, 'config.json', revision, cache_dir)
        except _Unavailable as e:
            raise WeightsNotFoundError(str(e)) from e
        try:
            cfg = parse_config(path)
        except ConfigError as e:
            _purge_hf(path)  # never leave a corrupted copy in the cache to fail every later load
            if attempt == 2:
                raise ConfigError(f'{where} is unreadable twice in a row ({e}); the cached copies were removed: '
                                  'the server sends a broken file') from None
            continue
        try:
            validate_config(cfg, where)
        except ConfigError as e:
            _purge_hf(path)  # a bad copy must not fail every later load; a bad file on the server is fetched anew
            if attempt == 2:
                raise ConfigError(f'{e} (fetched twice, the same both times: the repo holds this config.json; '
                                  'the cached copy was removed)') from None
            if _offline():
                raise ConfigError(f'{e} (the cached copy {str(path)!r} was removed: it is fetched again when online)'
                                  ) from None
            continue
        return cfg
    raise AssertionError('unreachable')


def check_model_name_config(model_name: str, cache_dir=None) -> None:
    """The ``config.json`` check of :func:`mtvif_zoo.create_model` for ``local-dir:`` / ``hf-hub:``
    names (installed as ``WeightsHook.config`` by ``mtvif_zoo/__init__.py``)."""
    if model_name.startswith('local-dir:'):
        load_local_config(model_name[len('local-dir:'):])
    elif model_name.startswith('hf-hub:'):
        load_hub_config(model_name[len('hf-hub:'):], cache_dir)
