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
import inspect
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional, Set, Union

__all__ = ['ConfigError', 'parse_config', 'validate_config', 'load_local_config', 'load_hub_config',
           'MAX_CLASSES', 'MAX_INT_ARG']

#: the largest segmentation class count a config may ask for (MSRS has 9 classes, FMB 15)
MAX_CLASSES = 1000
#: the largest integer (a width, depth, window size ...) inside backbone_args / head_args
MAX_INT_ARG = 4096

TOP_KEYS = {'architecture', 'num_classes', 'num_features', 'pretrained_cfg', 'model_args', 'label_names',
            'label_descriptions', 'mtvif_zoo'}
MODEL_ARGS = {'backbone', 'head', 'in_chans', 'num_classes', 'backbone_args', 'head_args'}
#: arguments MultiTaskVIF passes to the backbone / head itself
_INTERNAL = {'self', 'in_chs', 'in_chans', 'out_chans', 'num_classes', 'backbone_cls'}


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


def _accepted(cls) -> Optional[Set[str]]:
    """Keyword arguments ``cls(...)`` accepts (following ``**kwargs`` to the base class); ``None``: any."""
    names: Set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names - _INTERNAL
    return None


def _check_numbers(value: Any, where: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not 0 <= value <= MAX_INT_ARG:
            raise ConfigError(f'{where} = {value} is out of range (0 .. {MAX_INT_ARG})')
        return
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_INT_ARG:
            raise ConfigError(f'{where} = {value} is out of range (finite, |x| <= {MAX_INT_ARG})')
        return
    if isinstance(value, (list, tuple)):
        if len(value) > 64:
            raise ConfigError(f'{where} has {len(value)} entries (at most 64)')
        for k, v in enumerate(value):
            _check_numbers(v, f'{where}[{k}]')
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, f'{where}.{k}')
        return
    raise ConfigError(f'{where} has an unsupported value type {type(value).__name__}')


def _check_classes(value: Any, where: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CLASSES:
        raise ConfigError(f'{where} = {value!r} must be an integer in 0 .. {MAX_CLASSES}')


def validate_config(cfg: Dict[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` unless ``cfg`` (a parsed ``config.json``) is one the zoo builds safely."""
    from .._factory import VARIANTS, get_backbone_cls, get_head_cls, list_backbones, list_heads

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
    for key, cls in (('backbone_args', get_backbone_cls(backbone)), ('head_args', get_head_cls(head))):
        sub = args.get(key) or {}
        if not isinstance(sub, dict):
            bad(f'model_args.{key} must be an object')
        accepted = _accepted(cls)
        if key == 'head_args' and head == 'cnn':  # the cnn head passes **kwargs on to the decoder it builds
            decoder = sub.get('decoder') or backbone
            if decoder not in list_backbones():
                bad(f'model_args.head_args.decoder {decoder!r} is not a zoo backbone ({", ".join(list_backbones())})')
            dec = _accepted(get_backbone_cls(decoder).original_decoder)
            accepted = None if dec is None else {'decoder'} | dec
        if accepted is not None:
            extra = sorted(set(sub) - accepted)
            if extra:
                bad(f'model_args.{key} has unknown argument(s) {extra} for {cls.__name__}; accepted: '
                    f'{", ".join(sorted(accepted)) or "none"}')
        _check_numbers(sub, f'model_args.{key}')


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
