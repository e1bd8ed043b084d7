"""Name -> backbone class registry (``register_backbone``); the backbone modules register themselves."""
from typing import Callable, Dict, List, Type

import torch.nn as nn

__all__ = ['register_backbone', 'create_backbone', 'list_backbones', 'get_backbone_cls']

_BACKBONES: Dict[str, Type[nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    """Class decorator: make a backbone buildable by name (``create_model(..., backbone=name)``)."""
    def _register(cls: Type[nn.Module]) -> Type[nn.Module]:
        if name in _BACKBONES and _BACKBONES[name] is not cls:
            raise ValueError(f'backbone {name!r} is already registered by {_BACKBONES[name].__name__}')
        _BACKBONES[name] = cls
        cls.backbone_name = name
        return cls
    return _register


def list_backbones() -> List[str]:
    return sorted(_BACKBONES)


def get_backbone_cls(name: str) -> Type[nn.Module]:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ValueError(
            f'unknown backbone {name!r}; valid backbones: {", ".join(list_backbones())}') from None


def create_backbone(name: str, in_chans: int = 3, **kwargs) -> nn.Module:
    if in_chans not in (1, 3):
        raise ValueError(
            f'in_chans must be 1 (Y-channel mode) or 3 (RGB + IR replicated to 3 channels), got {in_chans!r}')
    return get_backbone_cls(name)(in_chans=in_chans, **kwargs)
