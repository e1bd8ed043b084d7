"""Name -> backbone class registry (``register_backbone``) and name -> converter of the original
release's state dict (``register_original_converter``, for ``mtvif convert``); the backbone modules
register themselves."""
from typing import Callable, Dict, List, Type

import torch.nn as nn

__all__ = ['register_backbone', 'create_backbone', 'list_backbones', 'get_backbone_cls', 'register_original_converter',
           'get_original_converter', 'list_original_converters']

_BACKBONES: Dict[str, Type[nn.Module]] = {}
_CONVERTERS: Dict[str, Callable] = {}


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


def register_original_converter(name: str) -> Callable[[Callable], Callable]:
    """Function decorator: ``fn(original_state_dict) -> state dict`` converts the original release of
    backbone ``name`` (its network, decoder included) to the zoo's layout."""
    def _register(fn: Callable) -> Callable:
        if name in _CONVERTERS and _CONVERTERS[name] is not fn:
            raise ValueError(f'backbone {name!r} already has an original-checkpoint converter')
        _CONVERTERS[name] = fn
        return fn
    return _register


def list_original_converters() -> List[str]:
    return sorted(_CONVERTERS)


def get_original_converter(name: str) -> Callable:
    try:
        return _CONVERTERS[name]
    except KeyError:
        raise ValueError(f'no original-checkpoint converter for backbone {name!r}; backbones with one: '
                         f'{", ".join(list_original_converters())}') from None
