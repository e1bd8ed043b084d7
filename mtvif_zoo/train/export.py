"""Export a training checkpoint as fusion-only weights for the pretrained hub.

``export_checkpoint('runs/iii/best', 'exported/mtvif_iii.mfnet220')`` rebuilds the model from the
checkpoint's ``state.json`` (model name + ``create_model`` keyword arguments), loads
``model.safetensors``, drops the segmentation classifier (:meth:`MultiTaskVIF.fusion_only`) and
writes a Hugging Face style folder: ``model.safetensors`` (fusion-only), ``config.json`` and
``README.md``. When :mod:`mtvif_zoo.hub` provides ``save_pretrained`` it writes the folder (so the
layout is exactly what the hub loads); otherwise the folder is written here with
:func:`mtvif_zoo.weights.save_weights` and a ``config.json`` holding ``architecture``,
``backbone``, ``head``, ``in_chans``, ``num_classes`` (:func:`mtvif_zoo.weights.model_config`),
the training recipe and the last validation metrics.
"""
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch.nn as nn

from .._factory import create_model
from ..weights import load_weights, model_config, save_weights
from .checkpoint import read_state, resolve_checkpoint

__all__ = ['export_checkpoint', 'model_from_checkpoint']


def model_from_checkpoint(checkpoint: os.PathLike) -> Tuple[nn.Module, Dict[str, Any]]:
    """``(model, state)``: the full (multi-task) model of a checkpoint folder, weights loaded, eval mode."""
    path = resolve_checkpoint(checkpoint)
    state = read_state(path)
    model = create_model(state['model_name'], **state.get('model_kwargs', {}))
    load_weights(model, path / 'model.safetensors')
    return model.eval(), state


def _readme(name: str, cfg: Dict[str, Any], state: Dict[str, Any]) -> str:
    train = state.get('config', {})
    metrics = state.get('metrics') or {}
    lines = [f'# {name}', '',
             f'Fusion-only weights of `{cfg.get("architecture")}` (backbone `{cfg.get("backbone")}`, head '
             f'`{cfg.get("head")}`, {cfg.get("in_chans")}-channel), trained with `mtvif train` '
             '(MultiTaskVIF, Zhao, Howes, Zhang, arXiv 2505.06665). The segmentation classifier, only needed '
             'during training, is not included.', '',
             '```python', 'import mtvif_zoo',
             f"model = mtvif_zoo.create_model('{cfg.get('architecture')}', pretrained=True, "
             "pretrained_cfg_overlay=dict(file='model.safetensors'))", '```', '',
             '## Training', '',
             f'- data: `{train.get("data")}` (layout `{train.get("layout")}`)',
             f'- crop {train.get("crop")}, batch {train.get("batch_size")}, lr {train.get("lr")}, '
             f'epochs {state.get("epoch")}, steps {state.get("global_step")}, seed {train.get("seed")}',
             f'- loss weights: {json.dumps(train.get("loss_weights") or {})} (defaults: b1=b2=1, l=(20, 20, 10, 20))']
    if metrics:
        shown = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()
                 if k in ('total', 'fusion', 'seg', 'miou', 'pixel_acc', 'epoch', 'step') and v is not None}
        lines.append(f'- validation at export: {json.dumps(shown)}')
    return '\n'.join(lines) + '\n'


def export_checkpoint(checkpoint: os.PathLike, out: os.PathLike, name: Optional[str] = None) -> Path:
    """Write the fusion-only weights of ``checkpoint`` (a ``best/`` or ``last/`` folder) to ``out``."""
    model, state = model_from_checkpoint(checkpoint)
    fusion = model.fusion_only()
    out = Path(out)
    name = name or out.name
    try:
        from ..hub import save_pretrained  # the hub's own writer when it exists
    except ImportError:
        save_pretrained = None
    if save_pretrained is not None:
        params = inspect.signature(save_pretrained).parameters
        kw: Dict[str, Any] = {}
        if 'weights' in params:
            kw['weights'] = 'fusion'
        elif 'fusion_only' in params:
            kw['fusion_only'] = True
        arch = state['model_name']
        if 'name' in params and re.fullmatch(rf'{arch}\.[a-z0-9_]+', name or ''):
            kw['name'] = name
        if 'dataset' in params and state.get('config', {}).get('data'):
            kw['dataset'] = Path(state['config']['data']).name
        save_pretrained(model, out, **kw)
        readme = out / 'README.md'
        if not readme.exists():
            readme.write_text(_readme(name, model_config(fusion), state))
        return out
    out.mkdir(parents=True, exist_ok=True)
    save_weights(fusion, out / 'model.safetensors', metadata={'fusion_only': 'true'})
    cfg = model_config(fusion)
    cfg['architecture'] = cfg.get('architecture') or state['model_name']
    cfg.update({'model_kwargs': {k: v for k, v in state.get('model_kwargs', {}).items() if k != 'num_classes'},
                'fusion_only': True, 'pad_multiple': fusion.pad_multiple,
                'training': {k: state.get('config', {}).get(k) for k in
                             ('data', 'layout', 'crop', 'batch_size', 'lr', 'seed', 'loss_weights')},
                'metrics': state.get('metrics')})
    (out / 'config.json').write_text(json.dumps(cfg, indent=2))
    (out / 'README.md').write_text(_readme(name, cfg, state))
    return out
