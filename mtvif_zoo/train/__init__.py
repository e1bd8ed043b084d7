"""Training MultiTaskVIF (and the baselines) with the paper's one-stage multi-task recipe.

* :class:`Trainer` / :func:`train`: the training loop (:mod:`.trainer` documents every choice);
* :class:`TrainConfig`, :data:`RECIPES`: options and the per-variant defaults (:mod:`.config`);
* :func:`save_checkpoint` / :func:`load_checkpoint`: pickle-free, atomic checkpoints (:mod:`.checkpoint`);
* :func:`export_checkpoint`: a checkpoint -> fusion-only weights for the hub (:mod:`.export`).

Command line: ``mtvif train ...``, ``mtvif export ...``; ``python -m mtvif_zoo.train ...`` (also
under ``torchrun --nproc_per_node N -m mtvif_zoo.train ...``).
"""
from .checkpoint import load_checkpoint, read_state, resolve_checkpoint, save_checkpoint
from .config import RECIPES, TrainConfig
from .export import export_checkpoint, model_from_checkpoint
from .trainer import LOG_COLUMNS, NonFiniteLossError, Trainer, model_inputs, train

__all__ = ['Trainer', 'TrainConfig', 'RECIPES', 'train', 'NonFiniteLossError', 'model_inputs', 'LOG_COLUMNS',
           'save_checkpoint', 'load_checkpoint', 'read_state', 'resolve_checkpoint', 'export_checkpoint',
           'model_from_checkpoint']
