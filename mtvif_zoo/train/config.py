"""Training configuration and the paper's per-variant recipes (Sec. 4.1 / DESIGN.md "Losses").

Recipes (Adam, one stage, 100 epochs, early stopping on the validation loss with patience 10):

=============  =======  =====  ==========
model          lr       crop   batch size
=============  =======  =====  ==========
mtvif_i        1e-4     160    10
mtvif_ii..iv   5e-5     256    16
swinfusion     like I (the same SwinFusion backbone)
emma_ufuser,   like II-IV (their MTH variants)
seafusion,
segmif
=============  =======  =====  ==========

Where the paper is silent: no learning-rate schedule (``scheduler='constant'``; ``'cosine'`` is
available), no weight decay, Adam's default betas / eps, no gradient clipping, horizontal flips
with p = 0.5, validation on a centre crop of the training crop size, seed 0.
"""
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional, Tuple, Union

__all__ = ['RECIPES', 'TrainConfig', 'RESUME_OVERRIDABLE', 'AMP_MODES', 'normalize_amp']

_I = dict(lr=1e-4, crop=160, batch_size=10)
_II_IV = dict(lr=5e-5, crop=256, batch_size=16)

#: per-variant defaults of the paper's recipe (every entry can be overridden)
RECIPES: Dict[str, Dict[str, Any]] = {
    'mtvif_i': dict(_I), 'mtvif_ii': dict(_II_IV), 'mtvif_iii': dict(_II_IV), 'mtvif_iv': dict(_II_IV),
    'swinfusion': dict(_I), 'emma_ufuser': dict(_II_IV), 'seafusion': dict(_II_IV), 'segmif': dict(_II_IV),
}
#: shared by every recipe
COMMON = dict(epochs=100, patience=10, seed=0, scheduler='constant', weight_decay=0.0, val_fraction=0.1,
              hflip=0.5, vflip=0.0, in_chans=3, min_delta=0.0, ckpt_every=0, grad_projection=0)

#: keys a resumed run may change (everything else must match the saved config)
RESUME_OVERRIDABLE = ('epochs', 'max_steps', 'device', 'workers', 'threads', 'progress', 'ckpt_every', 'patience',
                      'out', 'resume', 'data', 'unlabelled', 'select_on')

#: values of ``TrainConfig.amp`` (``--amp``)
AMP_MODES = ('auto', 'off', 'bf16', 'fp16')


def normalize_amp(amp: Optional[Union[bool, str]]) -> str:
    """``None`` / ``'auto'`` -> ``'auto'``; ``True`` -> ``'on'`` (bf16, or fp16 on a CUDA GPU without bf16);
    ``False`` -> ``'off'``; ``'bf16'`` / ``'bfloat16'``, ``'fp16'`` / ``'float16'``, ``'fp32'`` / ``'off'``."""
    if amp is None:
        return 'auto'
    if isinstance(amp, bool):
        return 'on' if amp else 'off'
    a = str(amp).lower()
    a = {'bfloat16': 'bf16', 'float16': 'fp16', 'half': 'fp16', 'fp32': 'off', 'float32': 'off', 'none': 'off',
         'false': 'off', 'true': 'on'}.get(a, a)
    if a not in AMP_MODES + ('on',):
        raise ValueError(f'amp must be one of {", ".join(AMP_MODES)} (or True / False), got {amp!r}')
    return a


@dataclass
class TrainConfig:
    """Everything a run needs; ``None`` fields take the model's recipe (:data:`RECIPES`) or a default.

    Attributes (non-obvious ones):
        model: a zoo model name (``mtvif_zoo.list_models()``).
        data: dataset folder (MSRS, FMB or generic layout, see :mod:`mtvif_zoo.data`).
        out: run folder (``config.json``, ``log.csv``, ``log.jsonl``, ``last/``, ``best/``).
        splits: folder layout: read ``train.txt`` / ``val.txt`` from ``data/splits/<splits>/`` (e.g. ``'clean'``
            for ``../shared/data/mfnet220``: its splits without MSRS test scenes); ``None``: ``data/splits/``.
        batch_size: per process (the global batch is ``batch_size * world_size`` under torchrun).
        max_steps: stop after this many optimizer steps in total (validates and checkpoints then).
        ckpt_every: also write ``last/`` every N steps inside an epoch (0: at epoch ends only).
        grad_projection: every N steps record the Sec. 4.7 gradient projections (0: off).
        amp: mixed precision of the forward pass (:data:`AMP_MODES`): ``'bf16'`` (``torch.autocast``
            with bfloat16, CPU or CUDA; no loss scaling needed), ``'fp16'`` (CUDA only, with a
            ``GradScaler``), ``'off'`` (fp32), ``'auto'`` / ``None`` (CUDA: bf16 where supported,
            else fp16; CPU: off). ``True`` / ``False`` are read as ``'auto-on'`` (bf16 on the CPU) /
            ``'off'``. In every mode the loss terms are computed in fp32 (``MultiTaskVIFLoss`` casts
            its inputs), the parameters (master weights), their gradients and Adam's state stay
            fp32: autocast only lowers the precision of the matmuls / convolutions inside the
            forward pass (and their backward). Recorded in ``config.json`` (``train.amp`` as given,
            ``amp_dtype`` as resolved on the run's device); a resumed run keeps the saved mode.
        val_crop: centre-crop size of validation images (``None``: ``crop``; 0: whole images).
        threads: torch intra-op CPU threads (``torch.set_num_threads``; ``None``: torch's default). On a
            CPU shared with other jobs, fewer threads than cores avoids threads stalling on each other.
        unlabelled: a folder of unlabelled ``vi/`` + ``ir/`` pairs (generic layout; ``splits/train.txt``
            if present, else every pair) mixed into every training batch (semi-supervised: they get
            ``L_fusion`` only, see :mod:`mtvif_zoo.losses`); ``None``: labelled pairs only.
        unlabelled_ratio: share of each batch taken from ``unlabelled`` (default 0.5 when given):
            ``round(ratio * batch_size)`` unlabelled + the rest labelled per process, at least one of
            each (a model with a segmentation branch needs a labelled sample in every batch). An
            epoch is one pass over the labelled pairs (:class:`mtvif_zoo.data.MixedBatchSampler`).
        select_on: a folder of ``vi/`` + ``ir/`` pairs (e.g. the 30 MSRS train pairs) on which each
            checkpoint's fusion is scored (the paper's 7 metrics, paper convention) to choose ``best/``
            instead of the validation loss (:mod:`mtvif_zoo.train.selection`); ``None``: validation loss.
        select_rule: ``'mean_rank'`` (default) or ``'wins'`` (:data:`~mtvif_zoo.train.selection.SELECT_RULES`).
        select_every: score every N epochs (default 1; the last epoch is always scored).
        allow_msrs_test_names: accept training / selection images named like MSRS test images (off:
            refused with :class:`~mtvif_zoo.train.selection.MSRSTestLeakError`; on only to reproduce old runs).
        model_args: extra ``create_model`` keyword arguments (``head``, ``backbone_args`` ...).
        loss_weights: overrides of :class:`mtvif_zoo.losses.LossWeights` (``beta1`` ... ``lambda4``).
    """
    model: str = 'mtvif_iii'
    data: Optional[str] = None
    out: Optional[str] = None
    layout: str = 'auto'
    splits: Optional[str] = None
    crop: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    epochs: Optional[int] = None
    max_steps: Optional[int] = None
    patience: Optional[int] = None
    min_delta: Optional[float] = None
    weight_decay: Optional[float] = None
    scheduler: Optional[str] = None
    grad_clip: Optional[float] = None
    amp: Optional[Union[bool, str]] = None
    seed: Optional[int] = None
    workers: Optional[int] = None
    device: Optional[str] = None
    val_fraction: Optional[float] = None
    val_crop: Optional[int] = None
    hflip: Optional[float] = None
    vflip: Optional[float] = None
    ir_gain: Optional[Tuple[float, float]] = None
    vis_gain: Optional[Tuple[float, float]] = None
    init_from: Optional[str] = None
    in_chans: Optional[int] = None
    num_classes: Optional[int] = None
    ignore_index: Optional[int] = None
    ckpt_every: Optional[int] = None
    grad_projection: Optional[int] = None
    threads: Optional[int] = None
    unlabelled: Optional[str] = None
    unlabelled_ratio: Optional[float] = None
    select_on: Optional[str] = None
    select_rule: Optional[str] = None
    select_every: Optional[int] = None
    allow_msrs_test_names: bool = False
    sync_bn: bool = False
    progress: bool = True
    resume: bool = False
    model_args: Dict[str, Any] = field(default_factory=dict)
    loss_weights: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.amp is not None:
            self.amp = normalize_amp(self.amp)

    def resolved(self) -> 'TrainConfig':
        """A copy with every ``None`` filled from the recipe and :data:`COMMON`."""
        if self.model not in RECIPES:
            raise ValueError(f'no training recipe for {self.model!r}; valid models: {", ".join(sorted(RECIPES))}')
        d = asdict(self)
        for k, v in {**COMMON, **RECIPES[self.model]}.items():
            if d.get(k) is None:
                d[k] = v
        if d['val_crop'] is None:
            d['val_crop'] = d['crop']
        d['amp'] = normalize_amp(d['amp'])
        if d['unlabelled'] and d['unlabelled_ratio'] is None:
            d['unlabelled_ratio'] = 0.5
        if d['select_on']:
            d['select_rule'] = d['select_rule'] or 'mean_rank'
            d['select_every'] = d['select_every'] or 1
        cfg = TrainConfig(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.data:
            raise ValueError('no dataset: pass data (--data DIR)')
        if not self.out:
            raise ValueError('no output folder: pass out (--out DIR)')
        for k in ('crop', 'batch_size', 'epochs'):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ValueError(f'{k} must be >= 1, got {v}')
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f'max_steps must be >= 1, got {self.max_steps}')
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f'lr must be > 0, got {self.lr}')
        if self.in_chans not in (None, 1, 3):
            raise ValueError(f'in_chans must be 1 or 3, got {self.in_chans}')
        normalize_amp(self.amp)
        if (self.select_rule is not None or self.select_every is not None) and not self.select_on:
            raise ValueError('select_rule / select_every given without a selection set (--select-on DIR)')
        if self.select_rule not in (None, 'mean_rank', 'wins'):
            raise ValueError(f"select_rule must be 'mean_rank' or 'wins', got {self.select_rule!r}")
        if self.select_every is not None and self.select_every < 1:
            raise ValueError(f'select_every must be >= 1, got {self.select_every}')
        if self.unlabelled_ratio is not None:
            if not self.unlabelled:
                raise ValueError('unlabelled_ratio given without unlabelled data (--unlabelled DIR)')
            if not 0 < self.unlabelled_ratio < 1:
                raise ValueError(f'unlabelled_ratio must be in (0, 1) (share of each batch from --unlabelled), '
                                 f'got {self.unlabelled_ratio}')
        if self.scheduler not in (None, 'constant', 'cosine'):
            raise ValueError(f"scheduler must be 'constant' or 'cosine', got {self.scheduler!r}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> 'TrainConfig':
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f'unknown training option(s) {unknown}')
        return cls(**d)
