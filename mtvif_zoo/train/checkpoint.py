"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a folder::

    model.safetensors      model state dict (mtvif_zoo.weights.save_weights, architecture in metadata)
    optimizer.safetensors  every tensor of optimizer.state_dict()['state'] as 'state.<param id>.<key>'
    state.json             epoch / batch / global step, early-stopping state, RNG states (base64),
                           optimizer param_groups + non-tensor state, scheduler and AMP scaler
                           state, the run's config, the last validation metrics

It is written atomically: everything goes into a hidden temporary folder beside the target, the
old folder is renamed aside, the new one renamed into place, the old one kept as ``.<name>.prev``
(one generation). A crash between the two renames leaves ``.<name>.old`` complete.
``state.json`` records the sha256 of each tensor file and of its own content (``state_sha256``,
see :func:`_state_digest`); :func:`load_checkpoint` verifies them
and falls back from a damaged checkpoint (bytes flipped, truncated, torn ``state.json``) to the
newest intact one (``.old``, then ``.prev``), saying which file was damaged.
Reading never unpickles: ``safetensors.torch.load_file`` and ``json.load`` only.
"""
import base64
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..hub.pretrained import sha256_file as _sha256
from ..weights import save_weights

__all__ = ['save_checkpoint', 'load_checkpoint', 'resolve_checkpoint', 'get_rng_state', 'set_rng_state',
           'optimizer_to_flat', 'optimizer_from_flat', 'read_state', 'candidates', 'CheckpointError',
           'CHECKPOINT_FORMAT']

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


class CheckpointError(ValueError):
    """A checkpoint is damaged (a file missing, truncated or not matching its recorded sha256) and no
    intact one could replace it; the message names every damaged file."""


#: what resuming (``optimizer=`` given) reads from ``state.json``
_RESUME_KEYS = ('optimizer', 'scheduler', 'rng', 'global_step')

#: the tensor files of a checkpoint whose sha256 ``state.json`` records under ``files``
_TENSOR_FILES = ('model.safetensors', 'optimizer.safetensors')


def _state_digest(state: Dict[str, Any]) -> str:
    """sha256 of ``state.json``'s content without its own ``state_sha256`` entry, over a canonical
    serialisation (sorted keys; Python's JSON floats round-trip exactly), so that an edit that keeps
    the file valid JSON (a flipped digit, a changed base64 character) is caught."""
    body = {k: v for k, v in state.items() if k != 'state_sha256'}
    text = json.dumps(body, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def save_checkpoint(path: os.PathLike, model: torch.nn.Module, state: Dict[str, Any],
                    optimizer: Optional[torch.optim.Optimizer] = None) -> Path:
    """Write a checkpoint folder atomically (see module docstring); returns its path.

    ``state.json`` records the sha256 of every tensor file; the checkpoint it replaces is kept as
    ``.<name>.prev`` (one generation), the fallback when this one turns out damaged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f'.{path.name}.tmp'
    old = path.parent / f'.{path.name}.old'
    prev = path.parent / f'.{path.name}.prev'
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_weights(model, tmp / 'model.safetensors')
    state = dict(state, format=CHECKPOINT_FORMAT)
    if optimizer is not None:
        tensors, meta = optimizer_to_flat(optimizer)
        save_file(tensors, str(tmp / 'optimizer.safetensors'))
        state['optimizer'] = meta
    state['files'] = {n: _sha256(tmp / n) for n in _TENSOR_FILES if (tmp / n).is_file()}
    for n in _TENSOR_FILES:
        if (tmp / n).is_file():
            with open(tmp / n, 'rb') as f:
                os.fsync(f.fileno())
    body = _jsonable(state)
    body['state_sha256'] = _state_digest(body)
    with open(tmp / 'state.json', 'w') as f:  # written last: its presence marks a complete checkpoint
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():  # the replaced checkpoint becomes the one-generation fallback
        if prev.exists():
            shutil.rmtree(prev)
        os.replace(old, prev)
    return path


def candidates(path: os.PathLike) -> List[Path]:
    """The checkpoint folders that may hold ``path``'s checkpoint, newest first: ``path``, its
    ``.old`` twin (a crash between the two renames) and ``.prev`` (the checkpoint it replaced)."""
    path = Path(path)
    out = [path, path.parent / f'.{path.name}.old', path.parent / f'.{path.name}.prev']
    return [p for p in out if p.is_dir()]


def resolve_checkpoint(path: os.PathLike) -> Path:
    """The complete checkpoint folder at ``path`` (or its ``.old`` / ``.prev`` fallback)."""
    path = Path(path)
    for c in candidates(path):
        if (c / 'state.json').is_file():
            return c
    raise FileNotFoundError(f'no checkpoint in {str(path)!r} (expected state.json and model.safetensors)')


def _read_state_file(folder: Path) -> Dict[str, Any]:
    f = folder / 'state.json'
    try:
        with open(f, encoding='utf-8') as fh:
            state = json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f'{str(f)!r} is missing') from None
    except (OSError, ValueError) as e:  # truncated / garbled JSON, undecodable bytes
        raise CheckpointError(f'{str(f)!r} is damaged (not valid JSON: {e})') from None
    if not isinstance(state, dict):
        raise CheckpointError(f'{str(f)!r} is damaged (not a JSON object)')
    expected = state.get('state_sha256')
    if expected is not None:  # checkpoints written before it was recorded load unverified
        got = _state_digest(state)
        if got != expected:
            raise CheckpointError(f'{str(f)!r} is damaged: the sha256 of its content, {got}, is not the {expected} '
                                  'recorded in it')
    return state


def read_state(path: os.PathLike) -> Dict[str, Any]:
    """The ``state.json`` dict of a checkpoint; :class:`CheckpointError` naming the file if damaged."""
    return _read_state_file(resolve_checkpoint(path))


def _verified_tensors(folder: Path, state: Dict[str, Any], name: str) -> Dict[str, torch.Tensor]:
    f = folder / name
    if not f.is_file():
        raise CheckpointError(f'{str(f)!r} is missing')
    expected = (state.get('files') or {}).get(name)
    if expected is not None:  # checkpoints written before sha256s were recorded load unverified
        got = _sha256(f)
        if got != expected:
            raise CheckpointError(f'{str(f)!r} is damaged: sha256 {got} is not the {expected} recorded in state.json')
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f'{str(f)!r} is damaged (not a readable safetensors file: {e})') from None


def load_checkpoint(path: os.PathLike, model: torch.nn.Module,
                    optimizer: Optional[torch.optim.Optimizer] = None,
                    quarantine: bool = False) -> Dict[str, Any]:
    """Load model (and optimizer) from the newest intact checkpoint at ``path``; returns its ``state.json``.

    Each candidate (``path``, ``.old``, ``.prev``; see :func:`candidates`) is checked before anything
    is loaded: ``state.json`` parses, every tensor file matches the sha256 recorded there and
    reads as safetensors, the model's keys / shapes / dtypes match. A damaged candidate is skipped
    for the next; the returned dict carries ``loaded_from`` (the folder used) and ``fallbacks``
    (one line per skipped folder, naming the damaged file). ``quarantine=True`` renames skipped
    folders to ``.<name>.damaged`` so that the next save does not rotate a damaged checkpoint into
    the fallback slot (``last`` -> ``.last.damaged``, ``.last.old`` -> ``.last.old.damaged``).
    No intact candidate: :class:`CheckpointError` listing every problem.
    """
    from ..weights import WeightsMismatchError, check_state_dict
    path = Path(path)
    found = candidates(path)
    if not found:
        raise FileNotFoundError(f'no checkpoint in {str(path)!r} (expected state.json and model.safetensors)')
    problems = []
    for folder in found:
        try:
            state = _read_state_file(folder)
            if optimizer is not None:
                missing = [k for k in _RESUME_KEYS if k not in state]
                if missing:  # parses but cannot be resumed: {} after a bad edit, a best/ state.json copied over
                    raise CheckpointError(f'{str(folder / "state.json")!r} has no {", ".join(missing)} entries '
                                          '(damaged, or a best/ checkpoint: resume from last/)')
            weights = _verified_tensors(folder, state, 'model.safetensors')
            check_state_dict(model, weights, source=str(folder / 'model.safetensors'))
            opt = _verified_tensors(folder, state, 'optimizer.safetensors') if optimizer is not None else None
        except (CheckpointError, WeightsMismatchError) as e:
            problems.append((folder, str(e).splitlines()[0]))
            continue
        model.load_state_dict(weights, strict=True)
        if optimizer is not None:
            optimizer_from_flat(optimizer, opt, state['optimizer'])
        fallbacks = []
        for f, msg in problems:
            line = f'{str(f)!r} skipped: {msg}'
            if quarantine:
                dst = f.parent / f'.{f.name.lstrip(".")}.damaged'
                if dst.exists():
                    shutil.rmtree(dst)
                os.replace(f, dst)
                line += f'; moved aside to {str(dst)!r}'
            fallbacks.append(line)
        state['loaded_from'] = str(folder)
        state['fallbacks'] = fallbacks
        return state
    raise CheckpointError(f'no intact checkpoint in {str(path)!r}: ' + '; '.join(msg for _, msg in problems))
