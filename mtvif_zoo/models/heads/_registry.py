"""Name -> head class registry (``register_head``); the head modules register themselves."""
from typing import Callable, Dict, List, Type

import torch.nn as nn

__all__ = ['register_head', 'create_head', 'list_heads', 'get_head_cls']

_HEADS: Dict[str, Type[nn.Module]] = {}


def register_head(name: str) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    def _register(cls):
        if name in _HEADS and _HEADS[name] is not cls:
            raise ValueError(f'head {name!r} is already registered by {_HEADS[name].__name__}')
        _HEADS[name] = cls
        return cls
    return _register


def list_heads() -> List[str]:
    return sorted(_HEADS)


def get_head_cls(name: str) -> Type[nn.Module]:
    try:
        return _HEADS[name]
    except KeyError:
        raise ValueError(f'unknown head {name!r}; valid heads: {", ".join(list_heads())}') from None


def create_head(name: str, **kwargs) -> nn.Module:
    return get_head_cls(name)(**kwargs)
