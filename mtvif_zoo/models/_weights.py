"""Published weights as timm pretrained cfgs (``arch.tag``), generated from data at import.

The weight facts (hub id @ pinned revision, URL, in_chans, classes, licence, sha256) live in
``mtvif_zoo/hub/registry.json``, written by ``mtvif_zoo.hub.publish_weight``. This module only
*reads* that file (JSON, no import of the hub code) and turns each entry into a timm cfg on top of
the architecture's base cfg, so ``generate_default_cfgs`` registers them once, at import, and
nothing rewrites timm's registry afterwards. A malformed file or entry is skipped with a warning:
``import mtvif_zoo`` never fails because of it.

The zoo's registry can be swapped at run time (``mtvif_zoo.hub.use_registry``, staging a weight):
the model builder then asks the hub, through the hook set by ``mtvif_zoo/__init__.py``, for the
current entry and builds its cfg with :func:`weight_cfg` -- timm's registry is left alone.
"""
import json
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ['REGISTRY_JSON', 'SHIPPED_DIR', 'WEIGHTS_FILE', 'read_entries', 'weight_cfg', 'timm_cfgs']

REGISTRY_JSON = Path(__file__).resolve().parents[1] / 'hub' / 'registry.json'
SHIPPED_DIR = Path(__file__).resolve().parents[1] / 'hub' / 'weights'
WEIGHTS_FILE = 'model.safetensors'


def _usable(name: str, entry: Any) -> Optional[str]:
    """Why ``entry`` cannot give a cfg (None: it can)."""
    if not isinstance(entry, dict):
        return 'not an object'
    arch, _, tag = name.partition('.')
    if entry.get('architecture') != arch or entry.get('tag') != tag or not tag:
        return 'architecture / tag do not match the name "arch.tag"'
    if not isinstance(entry.get('model_args'), dict) or 'in_chans' not in entry['model_args']:
        return 'model_args must be an object with in_chans'
    for key in ('license', 'dataset', 'weights', 'sha256'):
        if not isinstance(entry.get(key), str):
            return f'{key} must be a string'
    if not isinstance(entry.get('input'), dict):
        return 'input must be an object'
    return None


def read_entries(path: Path = REGISTRY_JSON) -> Dict[str, Dict[str, Any]]:
    """The usable entries of a registry file; problems are warned about and skipped, never raised."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        weights = data.get('weights') or {}
        if not isinstance(weights, dict):
            raise ValueError('"weights" is not an object')
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as e:
        warnings.warn(f'{path}: unreadable weight registry ({e}); no pretrained weights are listed', stacklevel=2)
        return {}
    out = {}
    for name, entry in weights.items():
        problem = _usable(name, entry)
        if problem:
            warnings.warn(f'{path}: weight {name!r} skipped: {problem}', stacklevel=2)
            continue
        out[name] = entry
    return out


def weight_cfg(base: Dict[str, Any], entry: Dict[str, Any], shipped_dir: Path = SHIPPED_DIR) -> Dict[str, Any]:
    """The timm cfg of one published weight: ``base`` (the architecture's) + the entry's facts."""
    in_chans = int(entry['model_args']['in_chans'])
    cfg = dict(base)
    cfg.update(
        hf_hub_id=f'{entry["hf_hub_id"]}@{entry["revision"]}' if entry.get('hf_hub_id') else None,
        hf_hub_filename=WEIGHTS_FILE,
        url=entry.get('url') or '',
        input_size=(in_chans, *tuple(base.get('input_size', (3, 256, 256)))[1:]),
        num_classes=entry['model_args'].get('num_classes', base.get('num_classes')),
        label_names=tuple(entry['label_names']) if entry.get('label_names') else None,
        license=entry['license'],
        description=f'{entry["weights"]} weights trained on {entry["dataset"]}',
        notes=(f'sha256 {entry["sha256"]}', 'input: ' + ', '.join(f'{k}={v}' for k, v in entry['input'].items())),
    )
    if not cfg['hf_hub_id'] and not cfg['url']:
        # shipped-only weight: timm needs a source key for has_weights; the zoo's resolver finds the file
        cfg['file'] = str(Path(shipped_dir) / f'{entry["architecture"]}.{entry["tag"]}' / WEIGHTS_FILE)
    return cfg


def timm_cfgs(base_cfgs: Dict[str, Dict[str, Any]], entries: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """What ``generate_default_cfgs`` gets: the ``arch.tag`` cfgs of the published weights, and the
    weightless base cfg of architectures without any (timm style: once weights exist every cfg is
    tagged, so ``list_models(pretrained=True)`` lists ``arch.tag`` names only)."""
    tagged = {}
    for name, entry in sorted(entries.items()):
        if entry['architecture'] not in base_cfgs:
            warnings.warn(f'weight {name!r}: unknown architecture {entry["architecture"]!r}, skipped', stacklevel=2)
            continue
        tagged[name] = weight_cfg(base_cfgs[entry['architecture']], entry)
    with_weights = {n.split('.')[0] for n in tagged}
    return {**{a: c for a, c in base_cfgs.items() if a not in with_weights}, **tagged}
