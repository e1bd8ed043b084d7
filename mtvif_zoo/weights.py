"""Weights I/O in safetensors (never pickle for the zoo's own weights).

``save_weights(model, path)`` writes the state dict (plus the architecture as string metadata) to
a ``.safetensors`` file; ``load_weights(model, path)`` loads it back bit-exactly and refuses files
whose keys or shapes do not match, naming every mismatching key.
"""
import json
import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = ['save_weights', 'load_weights', 'read_metadata', 'WeightsMismatchError', 'model_config',
           'check_state_dict']

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


def check_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str = 'state dict') -> None:
    """Raise :class:`WeightsMismatchError` naming missing, unexpected and wrongly-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f'{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                    for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or shapes:
        def _fmt(title, items):
            if not items:
                return ''
            shown = ', '.join(items[:10]) + (f', ... ({len(items)} in all)' if len(items) > 10 else '')
            return f'\n  {title}: {shown}'
        raise WeightsMismatchError(
            f'{source} does not match the model' + _fmt('missing keys', missing) +
            _fmt('unexpected keys', unexpected) + _fmt('shape mismatches', shapes) +
            '\n  build the model with the architecture the weights were saved from '
            '(see mtvif_zoo.weights.read_metadata(path)["mtvif_zoo_config"])')


def load_weights(model: nn.Module, path: PathLike, strict: bool = True) -> nn.Module:
    """Load a ``.safetensors`` file into ``model`` (in place, returns it).

    ``strict=False`` accepts missing keys (e.g. fusion-only weights into a full multi-task model,
    whose segmentation classifier then stays at its initialisation) but still refuses unexpected
    keys and shape mismatches.
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
        state_for_check = {**{k: v for k, v in own.items() if k not in state}, **state}
    check_state_dict(model, state if strict else state_for_check, source=str(path))
    model.load_state_dict(state, strict=strict)
    return model
