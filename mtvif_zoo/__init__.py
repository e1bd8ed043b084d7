"""mtvif_zoo: the MultiTaskVIF model zoo (segmentation-oriented visible + infrared image fusion).

>>> import mtvif_zoo
>>> model = mtvif_zoo.create_model('mtvif_iii')             # variant III, random init
>>> fused = mtvif_zoo.fuse('vis.png', 'ir.png', model=model)  # PIL image out

``import mtvif_zoo`` imports the library and registers the models with timm (so
``timm.create_model('mtvif_ii')`` works afterwards). Only when the process was started as the
command line (``mtvif ...`` or ``python -m mtvif_zoo``) is that deferred to the first use, so that
``mtvif --help`` answers without importing torch; any attribute access loads everything.
"""
import os
import sys

from .version import __version__

__all__ = ['__version__', 'create_model', 'list_models', 'list_backbones', 'list_heads', 'fuse', 'segment', 'profile',
           'save_weights', 'load_weights', 'WeightsMismatchError', 'MultiTaskVIF', 'MSRS_CLASSES',
           'DEFAULT_MODEL', 'evaluate', 'EvaluationResult', 'hub', 'metrics']

#: public name -> the module that defines it (None: the name is a subpackage), in import order
#: (``.models`` first: importing it registers the models with timm)
_EXPORTS = {
    'MSRS_CLASSES': 'models', 'MultiTaskVIF': 'models', 'list_backbones': 'models', 'list_heads': 'models',
    'create_model': '_factory', 'list_models': '_factory',
    'DEFAULT_MODEL': 'fusion', 'fuse': 'fusion', 'segment': 'fusion',
    'profile': 'profile',
    'WeightsMismatchError': 'weights', 'load_weights': 'weights', 'save_weights': 'weights',
    'EvaluationResult': 'evaluate', 'evaluate': 'evaluate',
    'hub': None, 'metrics': None,
}
_LOADED = False
_LOADING = False  # inside _load_all: submodule imports ('from . import hub') must not re-enter it


def _load_all() -> None:
    """Import the library (torch, timm, the models and their timm registration); idempotent."""
    global _LOADED, _LOADING
    if _LOADED or _LOADING:
        return
    _LOADING = True
    try:
        _import_all()
    finally:
        _LOADING = False


def _import_all() -> None:
    global _LOADED
    import importlib
    for name, module in _EXPORTS.items():
        mod = importlib.import_module(f'.{module or name}', __name__)
        globals()[name] = mod if module is None else getattr(mod, name)
    from .models.multitaskvif import MultiTaskVIF as _MultiTaskVIF, set_weights_hook
    hub = globals()['hub']
    # the models import nothing from hub / fusion: the builder reaches the zoo's registry and sources, and
    # model.fuse reaches fuse(), through these hooks
    from .hub._validate import check_model_name_config
    set_weights_hook(entry=hub.registry.entry_for, resolve=hub.pretrained.resolve_for_build,
                     names=hub.registry.list_weights, config=check_model_name_config)
    _MultiTaskVIF._fuse_fn = staticmethod(globals()['fuse'])
    _LOADED = True


def _started_as_cli() -> bool:
    """The process is the ``mtvif`` console script or ``python -m mtvif_zoo[.cli]``."""
    if sys.argv and os.path.basename(sys.argv[0]).lower() in ('mtvif', 'mtvif.exe', 'mtvif-script.py'):
        return True
    orig = list(getattr(sys, 'orig_argv', ()))
    if '-m' in orig:
        i = orig.index('-m')
        return i + 1 < len(orig) and orig[i + 1] in ('mtvif_zoo', 'mtvif_zoo.cli')
    return False


def __getattr__(name: str):
    if name in __all__ and not _LOADED and not _LOADING:
        _load_all()
        return globals()[name]
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


if not _started_as_cli():
    _load_all()
