"""Pretrained weights, model cards and publishing (timm / Hugging Face Hub style).

* :mod:`~mtvif_zoo.hub.registry` — ``registry.json``: one entry per published ``arch.tag``;
  timm's pretrained cfgs, ``list_models(pretrained=True)`` and the cards follow from it;
* :mod:`~mtvif_zoo.hub.pretrained` — what ``create_model(name, pretrained=True)`` loads:
  explicit file / ``local-dir:`` / ``MTVIF_WEIGHTS`` > shipped copy > Hugging Face Hub > URL,
  every file sha256-checked, safetensors only;
* :mod:`~mtvif_zoo.hub.cards` — model cards generated from measured results; :func:`model_card`;
* :mod:`~mtvif_zoo.hub.publish` — :func:`save_pretrained`, :func:`push_to_hub`, :func:`publish_weight`.

The hub reaches the models only through the public factory (``mtvif_zoo._factory``); the models
never import the hub (the builder's ``WeightsHook`` is set by ``mtvif_zoo/__init__.py``).
"""
from . import convert  # noqa: F401  (mtvif convert)
from ._net import NetOptions, network_options
from ._validate import ConfigError
from .cards import card_block, card_summary, model_card, render_card
from .pretrained import (
    ENV_WEIGHTS,
    IntegrityError,
    ResolvedWeights,
    WeightsNotFoundError,
    resolve_pretrained,
    sha256_file,
    verify_file,
)
from .publish import publish_weight, push_to_hub, save_pretrained
from .registry import (
    FULL_WEIGHTS_FILE,
    REGISTRY_PATH,
    SHIPPED_DIR,
    WEIGHTS_FILE,
    RegistryError,
    get_weight,
    list_weights,
    register_weight,
    unregister_weight,
    use_registry,
)

__all__ = ['REGISTRY_PATH', 'SHIPPED_DIR', 'WEIGHTS_FILE', 'FULL_WEIGHTS_FILE', 'ENV_WEIGHTS', 'RegistryError',
           'IntegrityError', 'WeightsNotFoundError', 'ResolvedWeights', 'list_weights', 'get_weight',
           'register_weight', 'unregister_weight', 'use_registry', 'resolve_pretrained', 'sha256_file',
           'verify_file', 'model_card', 'render_card', 'card_block', 'card_summary', 'save_pretrained',
           'push_to_hub', 'publish_weight', 'network_options', 'NetOptions', 'ConfigError']
