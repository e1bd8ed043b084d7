"""``create_model`` / ``list_models``: thin, validating wrappers around timm's registry.

Every model is registered with timm (``@register_model``), so after ``import mtvif_zoo`` both
``mtvif_zoo.create_model('mtvif_iii')`` and ``timm.create_model('mtvif_iii')`` work. The wrappers
add what a zoo user expects: unknown names raise a ``ValueError`` listing the valid ones, and
``list_models`` only lists this zoo's models.
"""
import difflib
import fnmatch
from typing import Iterable, List, Union

import timm
import torch.nn as nn
from timm.models import split_model_name_tag

from .models.backbones import get_backbone_cls, get_original_converter, list_backbones, list_original_converters
from .models.heads import get_head_cls, list_heads
from .models.multitaskvif import (
    _BASE_CFGS,
    MAX_CLASSES,
    MAX_INT_ARG,
    MSRS_CLASSES,
    VARIANTS,
    WeightsHook,
    check_model_args,
    check_num_classes,
)

# the backbone / head / converter registries and VARIANTS are re-exported for mtvif_zoo.hub (which reaches
# models only here)
__all__ = ['create_model', 'list_models', 'MODULE_NAME', 'architecture_of', 'base_cfg', 'MSRS_CLASSES', 'VARIANTS',
           'get_backbone_cls', 'list_backbones', 'get_head_cls', 'list_heads', 'get_original_converter',
           'list_original_converters', 'MAX_CLASSES', 'MAX_INT_ARG', 'check_model_args', 'check_num_classes']

#: the timm registry module name of the zoo's models
MODULE_NAME = 'multitaskvif'


def list_models(filter: Union[str, Iterable[str]] = '', pretrained: bool = False, **kwargs) -> List[str]:
    """Names of this zoo's models (``'mtvif*'`` style wildcards), ``pretrained=True``: ``arch.tag`` with
    weights in the zoo's registry in use (:func:`mtvif_zoo.hub.use_registry` included)."""
    if not pretrained:
        return timm.list_models(filter, module=MODULE_NAME, **kwargs)
    filters = [filter] if isinstance(filter, str) else list(filter)
    names = [n for n in (WeightsHook.names() if WeightsHook.names else []) if n.split('.')[0] in VARIANTS]
    return sorted(n for n in names if not any(filters) or any(fnmatch.fnmatch(n, f) or fnmatch.fnmatch(
        n.split('.')[0], f) for f in filters if f))


def architecture_of(model: nn.Module) -> str:
    """The registered architecture a zoo model was built as (``mtvif_iii``, ``seafusion``, ...)."""
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
    if arch in VARIANTS:
        return arch
    b, h = getattr(model, 'backbone_name', None), getattr(model, 'head_name', None)
    for name, (vb, vh, _) in VARIANTS.items():  # a MultiTaskVIF built directly: match backbone x head family
        if vb == b and (vh == h or (vh.startswith('mth') and str(h).startswith('mth'))):
            return name
    raise ValueError(f'cannot tell which zoo architecture this model is (backbone {b!r}, head {h!r})')


def base_cfg(architecture: str) -> dict:
    """The weightless timm pretrained cfg of an architecture (a copy)."""
    return dict(_BASE_CFGS[architecture])


def _did_you_mean(arch: str) -> List[str]:
    """Close names for a mistyped architecture: case / '-' vs '_' first (``MTVIF-IV`` -> ``mtvif_iv``),
    then substrings and spelling neighbours."""
    norm = arch.strip().lower().replace('-', '_').replace(' ', '_')
    if norm in VARIANTS:
        return [norm]
    matches = [n for n in VARIANTS if norm and fnmatch.fnmatch(n, f'*{norm}*')]
    return matches + [n for n in difflib.get_close_matches(norm, list(VARIANTS), n=3, cutoff=0.6) if n not in matches]


def create_model(model_name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a zoo model by name, e.g. ``create_model('mtvif_iv', head='mth_nohia', in_chans=1)``.

    Keyword arguments: ``backbone``, ``head``, ``in_chans`` (1 or 3), ``num_classes``,
    ``backbone_args``, ``head_args``, plus timm's ``pretrained_cfg_overlay`` / ``checkpoint_path``
    / ``cache_dir``. Names may carry a pretrained tag (``mtvif_iii.mfnet220``) or be ``hf-hub:`` /
    ``local-dir:`` names. ``pretrained=True`` follows the loading order of
    :mod:`mtvif_zoo.hub.pretrained` (explicit file > shipped copy > Hub > URL, sha256-checked);
    ``checkpoint_path`` must be a ``.safetensors`` file (never unpickled).
    """
    if not isinstance(model_name, str):
        raise ValueError(f'model_name must be a string, got {type(model_name).__name__}')
    if ':' not in model_name:
        arch, tag = split_model_name_tag(model_name)
        if arch not in VARIANTS:
            matches = _did_you_mean(arch)
            hint = (f' (did you mean {" or ".join(repr(n + model_name[len(arch):]) for n in matches)}?)'
                    if matches else '')
            raise ValueError(f'unknown model {model_name!r}{hint}; valid models: {", ".join(sorted(VARIANTS))}')
        if tag and WeightsHook.entry is not None and WeightsHook.entry(arch, tag) is None:
            tags = [n for n in list_models(arch, pretrained=True) if '.' in n]
            raise ValueError(f'unknown pretrained tag {model_name!r}; published for {arch}: '
                             f'{", ".join(tags) or "none yet"}')
    if model_name.startswith(('hf-hub:', 'local-dir:')) and WeightsHook.config is not None:
        # validate config.json (parse, zoo architectures only, known keys, value ranges, safetensors
        # only) before timm builds anything from it; a Hub copy corrupted in transit is fetched again
        WeightsHook.config(model_name, kwargs.get('cache_dir'))
    # timm's checkpoint_path would torch.load (pickle) non-safetensors files: it becomes an explicit
    # file source of pretrained loading (safetensors only, sha256-checked against a config.json beside it)
    checkpoint_path = kwargs.pop('checkpoint_path', None)
    if checkpoint_path:
        kwargs['pretrained_cfg_overlay'] = {**(kwargs.get('pretrained_cfg_overlay') or {}),
                                            'file': str(checkpoint_path)}
        pretrained = True
    model = timm.create_model(model_name, pretrained=pretrained, **kwargs)
    if checkpoint_path and isinstance(getattr(model, 'pretrained_source', None), dict):
        model.pretrained_source['source'] = 'checkpoint_path'
    return model
