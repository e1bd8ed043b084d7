"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a folder::

    model.safetensors      model state dict (mtvif_zoo.weights.save_weights, architecture in metadata)
    optimizer.safetensors  every tensor of optimizer.state_dict()['state'] as 'state.<param id>.<key>'
    state.json             epoch / batch / global step, early-stopping state, RNG states (base64),
                           optimizer param_groups + non-tensor state, scheduler and AMP scaler
                           state, the run's config, the last validation metrics

It is written atomically: everything goes into a hidden temporary folder beside the target, the
old folder is renamed aside, the new one renamed into place, the old one deleted. A crash between
the two renames leaves ``.<name>.old`` complete, and :func:`resolve_checkpoint` falls back to it.
Reading never unpickles: ``safetensors.torch.load_file`` and ``json.load`` only.
"""
import base64
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..weights import load_weights, save_weights

__all__ = ['save_checkpoint', 'load_checkpoint', 'resolve_checkpoint', 'get_rng_state', 'set_rng_state',
           'optimizer_to_flat', 'optimizer_from_flat', 'read_state', 'CHECKPOINT_FORMAT']

CHECKPOINT_FORMAT = 'mtvif_zoo.train.checkpoint/1'


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode('ascii')


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def get_rng_state() -> Dict[str, Any]:
    """torch (CPU + every CUDA device), numpy and python RNG states as JSON-able values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        'torch': _b64(torch.get_rng_state()),
        'cuda': [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        'numpy': [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        'python': [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(_unb64(state['torch']))
    if state.get('cuda') and torch.cuda.is_available():
        cuda = [_unb64(s) for s in state['cuda']]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    n = state['numpy']
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state['python']
    random.setstate((p[0], tuple(p[1]), p[2]))


def _jsonable(x):
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f'cannot store {type(x).__name__} in a JSON checkpoint')


def optimizer_to_flat(optimizer: torch.optim.Optimizer):
    """``(tensors, meta)``: optimizer state tensors for safetensors and the rest for JSON."""
    sd = optimizer.state_dict()
    tensors, other = {}, {}
    for pid, st in sd['state'].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f'state.{pid}.{k}'] = v.detach().contiguous().cpu()
            else:
                other.setdefault(str(pid), {})[k] = _jsonable(v)
    return tensors, {'param_groups': _jsonable(sd['param_groups']), 'state': other}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]):
    state: Dict[int, Dict[str, Any]] = {}
    for name, t in tensors.items():
        _, pid, key = name.split('.', 2)
        state.setdefault(int(pid), {})[key] = t
    for pid, st in meta.get('state', {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = meta['param_groups']
    for g in groups:  # JSON turned tuples into lists; optimizers expect tuples for e.g. betas
        for k, v in list(g.items()):
            if k != 'params' and isinstance(v, list):
                g[k] = tuple(v)
    optimizer.load_state_dict({'state': state, 'param_groups': groups})


def save_checkpoint(path: os.PathLike, model: torch.nn.Module, state: Dict[str, Any],
                    optimizer: Optional[torch.optim.Optimizer] = None) -> Path:
    """Write a checkpoint folder atomically (see module docstring); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f'.{path.name}.tmp'
    old = path.parent / f'.{path.name}.old'
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_weights(model, tmp / 'model.safetensors')
    state = dict(state, format=CHECKPOINT_FORMAT)
    if optimizer is not None:
        tensors, meta = optimizer_to_flat(optimizer)
        save_file(tensors, str(tmp / 'optimizer.safetensors'))
        state['optimizer'] = meta
    with open(tmp / 'state.json', 'w') as f:  # written last: its presence marks a complete checkpoint
        json.dump(_jsonable(state), f)
        f.flush()
        os.fsync(f.fileno())
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def resolve_checkpoint(path: os.PathLike) -> Path:
    """The complete checkpoint folder at ``path`` (or its ``.old`` twin after a crash mid-swap)."""
    path = Path(path)
    if (path / 'state.json').is_file():
        return path
    old = path.parent / f'.{path.name}.old'
    if (old / 'state.json').is_file():
        return old
    raise FileNotFoundError(f'no checkpoint in {str(path)!r} (expected state.json and model.safetensors)')


def read_state(path: os.PathLike) -> Dict[str, Any]:
    with open(resolve_checkpoint(path) / 'state.json') as f:
        return json.load(f)


def load_checkpoint(path: os.PathLike, model: torch.nn.Module,
                    optimizer: Optional[torch.optim.Optimizer] = None) -> Dict[str, Any]:
    """Load model (and optimizer) from a checkpoint folder; returns its ``state.json`` dict."""
    path = resolve_checkpoint(path)
    state = read_state(path)
    load_weights(model, path / 'model.safetensors')
    if optimizer is not None:
        if 'optimizer' not in state or not (path / 'optimizer.safetensors').is_file():
            raise FileNotFoundError(f'checkpoint {str(path)!r} has no optimizer state (a best/ checkpoint?); '
                                    'resume from last/')
        optimizer_from_flat(optimizer, load_file(str(path / 'optimizer.safetensors')), state['optimizer'])
    return state
