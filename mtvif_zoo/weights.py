"""Weights I/O in safetensors (never pickle for the zoo's own weights).

``save_weights(model, path)`` writes the state dict (plus the architecture as string metadata) to
a ``.safetensors`` file; ``load_weights(model, path)`` loads it back bit-exactly and refuses files
whose keys, shapes or dtypes do not match (only floating tensors for floating weights), naming
every mismatching key.
"""
import json
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = ['save_weights', 'load_weights', 'read_metadata', 'WeightsMismatchError', 'model_config',
           'check_state_dict', 'bad_dtypes']

PathLike = Union[str, os.PathLike]


class WeightsMismatchError(ValueError):
    """A weight file's keys or shapes do not match the model."""


def model_config(model: nn.Module) -> Dict[str, object]:
    """The keyword arguments that rebuild ``model`` with :func:`mtvif_zoo.create_model`."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return {
        'architecture': cfg.get('architecture') or getattr(model, 'variant_name', None),
        'backbone': getattr(model, 'backbone_name', None),
        'head': getattr(model, 'head_name', None),
        'in_chans': getattr(model, 'in_chans', None),
        'num_classes': getattr(model, 'num_classes', None),
    }


def save_weights(model: nn.Module, path: PathLike, metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write ``model.state_dict()`` to ``path`` (``.safetensors``) atomically; returns the path."""
    path = Path(path)
    if path.suffix != '.safetensors':
        raise ValueError(f'weights are saved as safetensors; use a .safetensors file name, got {str(path)!r}')
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {'format': 'pt', 'mtvif_zoo_config': json.dumps(model_config(model))}
    meta.update(metadata or {})
    tmp = path.with_name(path.name + '.tmp')
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_metadata(path: PathLike) -> Dict[str, str]:
    from safetensors import safe_open
    with safe_open(str(path), framework='pt') as f:
        return dict(f.metadata() or {})


def bad_dtypes(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """``'key: dtype int32 (model float32)'`` for every tensor whose dtype would be cast lossily into
    the model: a floating parameter / buffer must come as a floating tensor (int / bool / complex
    would load truncated), an integer buffer (BatchNorm ``num_batches_tracked``) as an integer one.
    The same rule as pretrained loading (``mtvif_zoo.models.multitaskvif.lossy_dtypes``)."""
    from .models.multitaskvif import lossy_dtypes
    return lossy_dtypes(model.state_dict(), state_dict)


def check_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str = 'state dict') -> None:
    """Raise :class:`WeightsMismatchError` naming missing, unexpected and wrongly-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f'{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                    for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    dtypes = bad_dtypes(model, state_dict)
    if missing or unexpected or shapes or dtypes:
        def _fmt(title, items):
            if not items:
                return ''
            shown = ', '.join(items[:10]) + (f', ... ({len(items)} in all)' if len(items) > 10 else '')
            return f'\n  {title}: {shown}'
        raise WeightsMismatchError(
            f'{source} does not match the model' + _fmt('missing keys', missing) +
            _fmt('unexpected keys', unexpected) + _fmt('shape mismatches', shapes) +
            _fmt('wrong dtypes (weights must be floating point)', dtypes) +
            '\n  build the model with the architecture the weights were saved from '
            '(see mtvif_zoo.weights.read_metadata(path)["mtvif_zoo_config"])')


def load_weights(model: nn.Module, path: PathLike, strict: bool = True) -> nn.Module:
    """Load a ``.safetensors`` file into ``model`` (in place, returns it).

    Every key of the model must be in the file and nothing else (names listed otherwise), with
    the model's shapes and floating dtypes. ``strict=False`` is the explicit request for partial
    loading: missing keys keep the model's values and are listed in a ``UserWarning`` (e.g.
    fusion-only weights into a full multi-task model, whose segmentation classifier then stays at
    its initialisation); unexpected keys, shape and dtype mismatches, and a file that holds none of
    the model's keys are still refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'weights file not found: {str(path)!r}')
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f'{str(path)!r} is not a readable safetensors file ({e})') from None
    if not strict:  # tolerate missing keys only: fill them from the model before checking
        own = model.state_dict()
        if not set(own) & set(state):
            raise WeightsMismatchError(f'{str(path)!r} holds none of the model\'s keys ({len(state)} tensors: '
                                       f'{", ".join(sorted(state)[:5]) or "none"}); it is not a weight file for '
                                       'this model')
        missing = sorted(set(own) - set(state))
        state_for_check = {**{k: v for k, v in own.items() if k not in state}, **state}
    check_state_dict(model, state if strict else state_for_check, source=str(path))
    if not strict and missing:
        warnings.warn(f'partial loading of {str(path)!r}: {len(missing)} missing keys keep the model\'s values: '
                      + ', '.join(missing[:20]) + (' ...' if len(missing) > 20 else ''), UserWarning, stacklevel=2)
    model.load_state_dict(state, strict=strict)
    return model
