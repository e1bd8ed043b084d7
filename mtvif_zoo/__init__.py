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
from .models.multitaskvif import MultiTaskVIF as _MultiTaskVIF, set_weights_hook as _set_weights_hook

# the models import nothing from hub / fusion: the builder reaches the zoo's registry and sources, and
# model.fuse reaches fuse(), through these hooks
_set_weights_hook(entry=hub.registry.entry_for, resolve=hub.pretrained.resolve_for_build,
                  names=hub.registry.list_weights)
_MultiTaskVIF._fuse_fn = staticmethod(fuse)

__all__ = ['__version__', 'create_model', 'list_models', 'list_backbones', 'list_heads', 'fuse', 'segment', 'profile',
           'save_weights', 'load_weights', 'WeightsMismatchError', 'MultiTaskVIF', 'MSRS_CLASSES',
           'DEFAULT_MODEL', 'evaluate', 'EvaluationResult', 'hub', 'metrics']
