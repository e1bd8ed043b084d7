"""mtvif_zoo: the MultiTaskVIF model zoo (segmentation-oriented visible + infrared image fusion).

>>> import mtvif_zoo
>>> model = mtvif_zoo.create_model('mtvif_iii')             # variant III, random init
>>> fused = mtvif_zoo.fuse('vis.png', 'ir.png', model=model)  # PIL image out
"""
from .version import __version__
from .models import MSRS_CLASSES, MultiTaskVIF, list_backbones, list_heads  # registers the models
from ._factory import create_model, list_models
from .fusion import DEFAULT_MODEL, fuse, segment
from .profile import profile
from .weights import WeightsMismatchError, load_weights, save_weights
from .evaluate import EvaluationResult, evaluate
from . import hub, metrics
from .models.multitaskvif import set_weights_resolver as _set_weights_resolver

_set_weights_resolver(hub.pretrained.resolve_for_build)  # pretrained=True: the zoo's sources + sha256 check

__all__ = ['__version__', 'create_model', 'list_models', 'list_backbones', 'list_heads', 'fuse', 'segment', 'profile',
           'save_weights', 'load_weights', 'WeightsMismatchError', 'MultiTaskVIF', 'MSRS_CLASSES',
           'DEFAULT_MODEL', 'evaluate', 'EvaluationResult', 'hub', 'metrics']
