"""The MultiTaskVIF trainer: one model, one stage, fusion and segmentation losses together (Sec. 3.4).

>>> from mtvif_zoo.train import Trainer, TrainConfig
>>> summary = Trainer(TrainConfig(model='mtvif_iii', data='../shared/data/mfnet220', splits='clean', out='runs/iii',
...                               crop=128, epochs=1)).fit()

What a step does: the batch's visible RGB and infrared (replicated to 3 channels; in the 1-channel
mode the visible Y and the infrared) go through the model in training mode, which returns the
fused image and the segmentation logits (``None`` for the ``cnn`` baselines);
:class:`mtvif_zoo.losses.MultiTaskVIFLoss` compares the fused image with those same inputs and the
logits with the labels; Adam steps on the total. Every term is checked for NaN / inf before the
backward pass; a non-finite term stops the run with :class:`NonFiniteLossError` naming the step
and the term, and no checkpoint is written from that state (``last/`` keeps the last good one).

Per epoch: validation (loss terms, mIoU and pixel accuracy of the segmentation branch on the
validation split, BN in eval mode), one row in ``log.csv`` / ``log.jsonl``, ``last/`` written,
``best/`` written when the validation total loss improved by more than ``min_delta``, early stop
after ``patience`` epochs without improvement.

Determinism and resume: the model is initialised after ``torch.manual_seed(seed)``; the epoch
order and each sample's crop / flips are functions of ``(seed, epoch, index)`` only
(:mod:`mtvif_zoo.data.samplers`); ``last/`` stores the model, Adam, scheduler, scaler, RNG states,
the position inside the epoch and the running sums of the epoch's log, so a run killed anywhere
and resumed with ``resume=True`` replays the remaining batches and ends with the same weights as
an uninterrupted run (bit for bit on CPU with the same thread count).

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DDP (NCCL on CUDA,
gloo on CPU), each rank takes its slice of every global batch (``batch_size`` per rank), loss
terms are averaged over ranks for logging and for the NaN check, validation is sharded and
reduced, and only rank 0 writes logs and checkpoints. BatchNorm statistics are per rank unless
``sync_bn=True`` (CUDA).

Gradient projection (Sec. 4.7, ``grad_projection=N``): every N steps the gradients of the
weighted fusion loss ``g_f = d(b1 L_fusion)`` and of the weighted segmentation loss
``g_s = d(b2 L_seg)`` on the **shared parameters** (the backbone's, which both branches of the
head read from) are taken separately and the scalar projections ``g_f . g_s / |g_s|`` (fusion onto
segmentation) and ``g_f . g_s / |g_f|`` (segmentation onto fusion), plus their cosine, are logged
as epoch means (``gp_fusion_on_seg``, ``gp_seg_on_fusion``, ``gp_cosine``); under DDP they are
computed from each rank's local gradients and averaged. The step itself is unchanged (costs two
extra backward passes on those steps).
"""
import csv
import io
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from .. import __version__
from .._factory import create_model
from ..color import rgb_to_ycbcr
from ..data import (
    LAYOUTS,
    DatasetError,
    EvalSampler,
    MixedBatchSampler,
    MixedDataset,
    ResumableBatchSampler,
    VisIRSegDataset,
    build_train_val,
    find_pairs,
    validate_records,
)
from ..losses import TERMS, LossWeights, MultiTaskVIFLoss
from ..models.multitaskvif import VARIANTS
from ..weights import load_weights, model_config
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .config import RESUME_OVERRIDABLE, TrainConfig, normalize_amp
from .selection import PAPER_METRICS, Selector, best_index, check_no_msrs_test_names, rank_candidates

__all__ = ['Trainer', 'NonFiniteLossError', 'train', 'model_inputs', 'LOG_COLUMNS', 'resolve_amp']

GP_KEYS = ('gp_fusion_on_seg', 'gp_seg_on_fusion', 'gp_cosine')
#: semi-supervised runs: the fusion terms of the labelled and of the unlabelled samples, logged separately
KINDS = ('labelled', 'unlabelled')
KIND_TERMS = ('fusion', 'int', 'grad', 'ssim', 'color')
KIND_COLUMNS = [f'train_{t}_{k}' for k in KINDS for t in KIND_TERMS] + [f'train_samples_{k}' for k in KINDS]
#: checkpoint selection (--select-on): metric means on the selection set, mean rank and wins vs the references
SELECT_COLUMNS = [f'select_{m}' for m in PAPER_METRICS] + ['select_mean_rank', 'select_wins']
#: the columns of log.csv (a term a model does not have is left empty; the per-kind columns are empty
#: without --unlabelled)
LOG_COLUMNS = (['epoch', 'step', 'batches', 'lr'] + [f'train_{t}' for t in TERMS] + [f'val_{t}' for t in TERMS] +
               ['val_miou', 'val_pixel_acc'] + list(GP_KEYS) + ['samples_per_s', 'epoch_time_s', 'best'] +
               KIND_COLUMNS + SELECT_COLUMNS)


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the message names the step and the term."""


def model_inputs(vis: torch.Tensor, ir: torch.Tensor, in_chans: int):
    """Dataset tensors (visible RGB ``Bx3xHxW``, infrared ``Bx1xHxW``) -> the model's two inputs.

    3 channels: RGB and the infrared replicated to 3 channels; 1 channel: visible Y and infrared.
    The losses compare the fused image with these same tensors.
    """
    if in_chans == 1:
        return rgb_to_ycbcr(vis)[:, :1], ir
    return vis, ir.expand(-1, 3, -1, -1)


def resolve_amp(amp, device: torch.device):
    """``(enabled, dtype)`` of a run's autocast for ``TrainConfig.amp`` on ``device`` (see its docstring).

    ``'auto'``: CUDA bf16 where supported else fp16, CPU off; ``'on'``: the same on CUDA, bf16 on the CPU;
    ``'bf16'``: bf16 on either (a CUDA GPU without bf16 support is an error); ``'fp16'``: CUDA only.
    """
    mode = normalize_amp(amp)
    cuda = device.type == 'cuda'
    bf16_ok = (not cuda) or torch.cuda.is_bf16_supported()
    if mode == 'off' or (mode == 'auto' and not cuda):
        return False, None
    if mode in ('auto', 'on'):
        return True, torch.bfloat16 if bf16_ok else torch.float16
    if mode == 'bf16':
        if not bf16_ok:
            raise ValueError(f'--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; '
                             'use --amp fp16 (with loss scaling) or --amp off')
        return True, torch.bfloat16
    if not cuda:  # fp16
        raise ValueError(f'--amp fp16 needs a CUDA device (got {device}); on the CPU use --amp bf16 '
                         '(autocast with bfloat16) or --amp off')
    return True, torch.float16


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls / convolutions natively (AMX tiles or AVX512-BF16)."""
    cpu = getattr(torch, 'cpu', None)
    try:
        return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())
    except AttributeError:  # older torch: unknown, do not warn
        return True


def _dist_info():
    world = int(os.environ.get('WORLD_SIZE', '1'))
    return world, int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0'))


def _fmt(v: Optional[float]) -> str:
    return '' if v is None else (f'{v:.6g}' if isinstance(v, float) else str(v))


def _csv_line(values) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator='\n').writerow(values)
    return buf.getvalue()


def _append_line(path: Path, line: str) -> None:
    """Append one whole line with a single ``write`` on an ``O_APPEND`` descriptor, then fsync: a
    kill leaves the line either absent or complete (a torn line can only come from a crash of the
    machine itself, and resume drops it)."""
    data = line.encode('utf-8')
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        n = os.write(fd, data)
        while n < len(data):  # short writes (signals, quotas): finish the line
            n += os.write(fd, data[n:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _log_line_step(line: str, name: str) -> Optional[int]:
    """The ``step`` of one log line, or ``None`` when the line is torn / not a log row."""
    if not line.endswith('\n'):
        return None
    try:
        if name == 'log.csv':
            cells = next(csv.reader([line]))
            if len(cells) != len(LOG_COLUMNS):
                return None
            return int(cells[1])
        return int(json.loads(line)['step'])
    except (ValueError, KeyError, TypeError, IndexError, StopIteration):
        return None


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is the ``config.json`` a training run writes (a ``train`` section), not e.g. a
    weight folder's."""
    try:
        with open(path, encoding='utf-8') as f:
            return isinstance(json.load(f).get('train'), dict)
    except (OSError, ValueError, AttributeError):
        return False


def check_new_out(out: Path) -> None:
    """A new run (no ``--resume``) writes only into a missing or empty folder: anything else (a copy of a
    shipped weight folder, another run) would be overwritten. Raises ``FileExistsError`` naming it."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f'--out {str(out)!r} is a file, not a folder; choose a new --out')
    for parent in out.absolute().parents:  # the folder cannot be created under a file
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f'--out {str(out)!r}: {str(parent)!r} is a file, not a folder; '
                                      'choose a new --out')
            break
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            shown = ', '.join(entries[:8]) + (f', ... ({len(entries)} entries)' if len(entries) > 8 else '')
            is_run = (bool({'last', 'log.csv', '.last.prev', '.last.old'} & set(entries))
                      or _is_run_config(out / 'config.json'))
            run = ' (it holds a run: pass --resume to continue it)' if is_run else ''
            raise FileExistsError(f'--out {str(out)!r} is not empty: it holds {shown}{run}; a new run needs a new or '
                                  'empty folder, nothing there is overwritten (pass --resume to continue a run, or '
                                  'choose a new --out)')


class Trainer:
    """Train a zoo model with the paper's recipe (see the module docstring); ``fit()`` runs it."""

    def __init__(self, config: TrainConfig):
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        self.world_size, self.rank, self.local_rank = _dist_info()
        self.out = Path(config.out) if config.out else None
        self._restart = False
        if config.resume:
            config = self._resume_config(config)
        elif self.out is not None and self.rank == 0:
            check_new_out(self.out)
        self.config = cfg = config.resolved()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.is_main = self.rank == 0
        self.distributed = self.world_size > 1
        self._setup_device()
        self._setup_data()
        self.selector = (Selector(cfg.select_on, cfg.select_rule, allow_msrs_test_names=cfg.allow_msrs_test_names)
                         if cfg.select_on else None)
        self._setup_model()
        self.state: Dict[str, Any] = dict(epoch=0, batch=0, global_step=0, epoch_sums={}, epoch_steps=0,
                                          gp_sums={}, gp_count=0, kind_sums={},
                                          selection=dict(references=None, history=[]),
                                          early_stopping=dict(best=None, best_epoch=None, bad_epochs=0),
                                          finished=False, elapsed_s=0.0, metrics=None)
        if cfg.resume and self._restart:
            if self.is_main:
                self._truncate_log(0)
                self._print(f'note: {self.out} holds no checkpoint yet (the run stopped before its first last/); '
                            'starting it over from step 0 with its config.json')
        elif cfg.resume:
            self._load_resume()

    # ------------------------------------------------------------------ setup
    def _resume_config(self, given: TrainConfig) -> TrainConfig:
        path = self.out / 'config.json'
        #: a run stopped (Ctrl-C, SIGKILL) before its first last/ checkpoint: --resume starts it over from step 0
        self._restart = not any((self.out / n).exists() for n in ('last', '.last.old', '.last.prev'))
        if self._restart and not _is_run_config(path):
            raise FileNotFoundError(f'nothing to resume in {str(self.out)!r}: no last/ checkpoint '
                                    '(drop --resume to start a new run)')
        try:
            with open(path, encoding='utf-8') as f:
                saved = json.load(f)['train']
        except FileNotFoundError:
            raise FileNotFoundError(f'nothing to resume in {str(self.out)!r}: no config.json') from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f'{str(path)!r} is damaged ({type(e).__name__}: {e}); it records the run\'s options: '
                             'restore it, or start a new run in a new --out') from None
        given_d = asdict(given)
        defaults = asdict(TrainConfig())
        conflicts = []
        for k, v in given_d.items():
            if k in RESUME_OVERRIDABLE or v == defaults[k] or json.loads(json.dumps(v)) == saved.get(k):
                continue
            conflicts.append(f'{k}: saved {saved.get(k)!r}, given {v!r}')
        if conflicts:
            raise ValueError('--resume continues the saved run; these options differ from its config.json: ' +
                             '; '.join(conflicts) + f' (overridable: {", ".join(RESUME_OVERRIDABLE)})')
        merged = dict(saved)
        for k in RESUME_OVERRIDABLE:
            if given_d[k] != defaults[k]:
                merged[k] = given_d[k]
        merged['resume'] = True
        return TrainConfig.from_dict(merged)

    def _setup_device(self):
        cfg = self.config
        dev = cfg.device or ('cuda' if torch.cuda.is_available() else 'cpu')
        device = torch.device(dev)
        if self.distributed:
            if device.type == 'cuda':
                device = torch.device('cuda', self.local_rank)
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
        self.device = device
        self.amp, self.amp_dtype = resolve_amp(cfg.amp, device)
        if self.amp and device.type == 'cpu' and self.rank == 0 and not cpu_has_fast_bf16():
            print('mtvif train: warning: this CPU has neither AMX nor AVX512-BF16, so bf16 autocast runs '
                  'emulated and is usually SLOWER than fp32 here (benchmarks/bench_train.py --amp-compare '
                  'measures it); --amp off trains in fp32', file=sys.stderr, flush=True)
        self.scaler = torch.amp.GradScaler('cuda') if (self.amp and self.amp_dtype == torch.float16) else None

    def _setup_data(self):
        cfg = self.config
        self.layout, train_rec, val_rec = build_train_val(cfg.data, cfg.layout, cfg.val_fraction, cfg.seed,
                                                          require_labels=self._wants_labels(), splits=cfg.splits)
        self.num_classes = cfg.num_classes or LAYOUTS[self.layout][4]
        problems = []  # every bad file of both splits in one error, not the validation split's after a fix
        for recs in (train_rec, val_rec):
            try:
                validate_records(recs, self.num_classes if self._wants_labels() else None,
                                 cfg.crop, cfg.ignore_index, cfg.data)
            except DatasetError as e:
                problems += e.problems
        if problems:
            raise DatasetError(problems, cfg.data)
        if cfg.val_crop:
            validate_records(val_rec, None, cfg.val_crop, None, cfg.data)
        if not cfg.allow_msrs_test_names:
            check_no_msrs_test_names([p for r in train_rec + val_rec for p in (r.vis, r.ir)],
                                     'training / validation', cfg.data)
        gb = cfg.batch_size * self.world_size
        if len(train_rec) < gb and not cfg.unlabelled:
            raise DatasetError([f'{len(train_rec)} training pairs, fewer than one global batch of {gb} '
                                f'(batch size {cfg.batch_size} x {self.world_size} process(es)); '
                                'lower --batch-size or add data'], cfg.data)
        self.train_set = VisIRSegDataset(train_rec, cfg.crop, True, cfg.seed, cfg.hflip, cfg.vflip,
                                         ir_gain=cfg.ir_gain, vis_gain=cfg.vis_gain)
        self.labelled_pairs = len(self.train_set)
        self.val_set = VisIRSegDataset(val_rec, cfg.val_crop or None, False, cfg.seed)
        self.unlabelled_pairs = 0
        self.n_unlabelled = 0
        if cfg.unlabelled:
            unl = find_pairs(cfg.unlabelled, 'train', 'folder', require_labels=False)
            if not cfg.allow_msrs_test_names:
                check_no_msrs_test_names([p for r in unl for p in (r.vis, r.ir)], 'unlabelled', cfg.unlabelled)
            validate_records(unl, None, cfg.crop, None, cfg.unlabelled)
            if cfg.batch_size < 2:
                raise ValueError('--unlabelled needs --batch-size >= 2 (at least one labelled and one unlabelled '
                                 'sample per batch)')
            self.n_unlabelled = min(cfg.batch_size - 1, max(1, int(round(cfg.unlabelled_ratio * cfg.batch_size))))
            n_l = cfg.batch_size - self.n_unlabelled
            if len(unl) < self.n_unlabelled * self.world_size:
                raise DatasetError([f'{len(unl)} unlabelled pairs, fewer than the {self.n_unlabelled} x '
                                    f'{self.world_size} of one global batch; lower --unlabelled-ratio'], cfg.unlabelled)
            if len(train_rec) < n_l * self.world_size:
                raise DatasetError([f'{len(train_rec)} labelled training pairs, fewer than the {n_l} x '
                                    f'{self.world_size} of one global batch; raise --unlabelled-ratio or add data'],
                                   cfg.data)
            self.unlabelled_pairs = len(unl)
            # a different augmentation seed: unlabelled sample j must not share labelled sample j's crop draws
            unl_set = VisIRSegDataset(unl, cfg.crop, True, cfg.seed + 1, cfg.hflip, cfg.vflip,
                                      ir_gain=cfg.ir_gain, vis_gain=cfg.vis_gain)
            self.train_set = MixedDataset(self.train_set, unl_set)
            self.sampler = MixedBatchSampler(len(train_rec), len(unl), n_l, self.n_unlabelled, cfg.seed, self.rank,
                                             self.world_size)
        else:
            self.sampler = ResumableBatchSampler(len(self.train_set), cfg.batch_size, cfg.seed, self.rank,
                                                 self.world_size)
        workers = cfg.workers if cfg.workers is not None else min(4, max(0, (os.cpu_count() or 1) // 2))
        pin = self.device.type == 'cuda'
        self.train_loader = DataLoader(self.train_set, batch_sampler=self.sampler, num_workers=workers,
                                       pin_memory=pin, generator=torch.Generator().manual_seed(cfg.seed))
        self.val_loader = DataLoader(self.val_set, batch_size=cfg.batch_size, num_workers=workers, pin_memory=pin,
                                     sampler=EvalSampler(len(self.val_set), self.rank, self.world_size))

    def _head(self) -> str:
        return self.config.model_args.get('head') or VARIANTS[self.config.model][1]

    def _wants_labels(self) -> bool:
        return self._head().startswith('mth')

    def _setup_model(self):
        cfg = self.config
        kwargs = dict(cfg.model_args)
        kwargs['in_chans'] = cfg.in_chans
        if self._wants_labels():
            kwargs['num_classes'] = self.num_classes
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, **kwargs)
        if cfg.init_from and not cfg.resume:  # start from given weights (fine-tuning); optimizer starts fresh
            load_weights(model, cfg.init_from)
        if self.config.crop % model.pad_multiple:
            raise ValueError(f'crop {cfg.crop} must be a multiple of {model.pad_multiple} for {cfg.model}')
        if cfg.val_crop and cfg.val_crop % model.pad_multiple:
            raise ValueError(f'val_crop {cfg.val_crop} must be a multiple of {model.pad_multiple} for {cfg.model}')
        self.model_kwargs = kwargs
        if cfg.sync_bn and self.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.has_seg = self.model.has_segmentation
        self.ddp = (nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index]
                                                        if self.device.type == 'cuda' else None)
                    if self.distributed else None)
        self.loss_fn = MultiTaskVIFLoss(LossWeights.from_dict(cfg.loss_weights), cfg.ignore_index)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = self.total_steps()
        self.scheduler = make_scheduler(self.optimizer, cfg.scheduler, total)

    def total_steps(self) -> int:
        per_epoch = self.sampler.batches_per_epoch
        total = per_epoch * self.config.epochs
        return min(total, self.config.max_steps) if self.config.max_steps else total

    def _load_resume(self):
        state = load_checkpoint(self.out / 'last', self.model, self.optimizer, quarantine=self.is_main)
        for msg in state.get('fallbacks', []):
            self._print(f'warning: damaged checkpoint {msg}')
        self.scheduler.load_state_dict(state['scheduler'])
        if self.scaler is not None and state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        set_rng_state(state['rng'])
        for k in self.state:
            if k in state:
                self.state[k] = state[k]
        self.state['finished'] = False
        if self.is_main:
            self._truncate_log(self.state['global_step'])
            self._print(f'resumed from {state.get("loaded_from", self.out / "last")}: epoch {self.state["epoch"] + 1}, '
                        f'batch {self.state["batch"]}, step {self.state["global_step"]}')

    # ------------------------------------------------------------------ logging
    def _print(self, msg: str):
        if self.is_main:
            print(msg, flush=True)

    def _write_config(self):
        cfg = self.config
        info = {'train': cfg.to_dict(), 'model_kwargs': self.model_kwargs, 'model_config': model_config(self.model),
                'loss_weights': self.loss_fn.weights.to_dict(),
                'dataset': {'root': str(cfg.data), 'layout': self.layout, 'num_classes': self.num_classes,
                            'train_pairs': self.labelled_pairs, 'val_pairs': len(self.val_set),
                            'unlabelled_root': str(cfg.unlabelled) if cfg.unlabelled else None,
                            'unlabelled_pairs': self.unlabelled_pairs,
                            'unlabelled_ratio': cfg.unlabelled_ratio,
                            'labelled_per_batch': cfg.batch_size - self.n_unlabelled,
                            'unlabelled_per_batch': self.n_unlabelled},
                'world_size': self.world_size, 'device': str(self.device), 'amp': self.amp,
                'amp_dtype': str(self.amp_dtype).replace('torch.', '') if self.amp else None,
                'versions': {'mtvif_zoo': __version__, 'torch': torch.__version__}}
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / 'config.json.tmp'
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, self.out / 'config.json')

    def _truncate_log(self, step: int):
        """Drop log rows written after the checkpoint we resume from (they will be redone), and any
        torn line (no newline at the end, or not parseable: a kill during the write)."""
        for name in ('log.csv', 'log.jsonl'):
            p = self.out / name
            if not p.is_file():
                continue
            lines = p.read_text(encoding='utf-8', errors='replace').splitlines(keepends=True)
            header = lines[:1] if name == 'log.csv' and lines and lines[0].endswith('\n') else []
            keep, torn = list(header), 0
            for ln in lines[len(header):] if name == 'log.csv' else lines:
                row_step = _log_line_step(ln, name)
                if row_step is None:
                    torn += 1
                elif row_step <= step:
                    keep.append(ln)
            if torn:
                self._print(f'note: dropped {torn} torn line(s) from {p} (a write interrupted by a kill)')
            tmp = p.with_name(p.name + '.tmp')
            tmp.write_text(''.join(keep), encoding='utf-8')
            os.replace(tmp, p)

    def _log_row(self, row: Dict[str, Any]):
        csv_path = self.out / 'log.csv'
        if not csv_path.is_file() or csv_path.stat().st_size == 0:
            _append_line(csv_path, _csv_line(LOG_COLUMNS))
        _append_line(csv_path, _csv_line([_fmt(row.get(c)) for c in LOG_COLUMNS]))
        _append_line(self.out / 'log.jsonl', json.dumps({c: row.get(c) for c in LOG_COLUMNS}) + '\n')

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else nullcontext()

    def _reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t

    def _terms_vector(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss terms as one float64 vector (absent = 0) plus a presence mask, for reduction."""
        vals = [terms[t].detach().double() if t in terms else torch.zeros((), dtype=torch.float64, device=self.device)
                for t in TERMS]
        return torch.stack(vals)

    def _kind_vector(self, out) -> torch.Tensor:
        vals = []
        for k in KINDS:
            n = out.counts[k]
            terms = out.by_kind.get(k, {})
            vals += [terms[t].detach().double() * n if t in terms else torch.zeros((), dtype=torch.float64,
                                                                                     device=self.device)
                     for t in KIND_TERMS]
        vals += [torch.tensor(float(out.counts[k]), dtype=torch.float64, device=self.device) for k in KINDS]
        return torch.stack(vals)

    def _check_finite(self, vec: torch.Tensor, terms: Dict[str, torch.Tensor], step: int, epoch: int, batch: int):
        if torch.isfinite(vec).all():
            return
        local = {t: float(terms[t].detach()) for t in terms}
        order = ['int', 'grad', 'ssim', 'color', 'ce', 'dice', 'fusion', 'seg', 'total']
        bad = [t for t in order if t in local and not math.isfinite(local[t])]
        if bad:
            which = f'term {bad[0]} = {local[bad[0]]}' + (f' (also {", ".join(bad[1:])})' if len(bad) > 1 else '')
        else:
            which = 'a term on another process'
        where = f'{self.out / "last"}' if (self.out / 'last').exists() else 'no checkpoint yet'
        raise NonFiniteLossError(f'non-finite loss at step {step} (epoch {epoch + 1}, batch {batch + 1}): {which}; '
                                 f'training stopped, last good checkpoint: {where}')

    def _grad_projection(self, out) -> Optional[torch.Tensor]:
        if out.seg is None:
            return None
        w = self.loss_fn.weights
        shared = [p for p in self.model.backbone.parameters() if p.requires_grad]
        gf = torch.autograd.grad(w.beta1 * out.fusion, shared, retain_graph=True, allow_unused=True)
        gs = torch.autograd.grad(w.beta2 * out.seg, shared, retain_graph=True, allow_unused=True)
        gf = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().double() for g, p in zip(gf, shared)])
        gs = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().double() for g, p in zip(gs, shared)])
        dot, nf, ns = (gf * gs).sum(), gf.norm(), gs.norm()
        eps = 1e-30
        return torch.stack((dot / (ns + eps), dot / (nf + eps), dot / (nf * ns + eps)))

    def train_step(self, batch, step: int, epoch: int, b: int):
        net = self.ddp or self.model
        vis = batch['vis'].to(self.device, non_blocking=True)
        ir = batch['ir'].to(self.device, non_blocking=True)
        labels = batch['label'].to(self.device, non_blocking=True) if (self.has_seg and 'label' in batch) else None
        labelled = batch['labelled'].to(self.device) if 'labelled' in batch else None
        v_in, i_in = model_inputs(vis, ir, self.config.in_chans)
        with self._autocast():
            fused, logits = net(v_in, i_in)
        out = self.loss_fn(fused, v_in, i_in, logits if labels is not None else None, labels, labelled=labelled)
        vec = self._terms_vector(out.terms)
        if labelled is not None:  # per-kind sums (term x samples) and sample counts, reduced with the terms
            vec = torch.cat([vec, self._kind_vector(out)])
        vec = self._reduce(vec)
        self._check_finite(vec, out.terms, step, epoch, b)
        gp = None
        gpe = self.config.grad_projection
        if gpe and step % gpe == 0:
            gp = self._grad_projection(out)
            if gp is not None:
                gp = self._reduce(gp) / self.world_size
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(out.total).backward()
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            out.total.backward()
            if self.config.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
        self.scheduler.step()
        return vec / self.world_size, gp, out.terms

    @torch.no_grad()
    def validate(self) -> Dict[str, Optional[float]]:
        """Mean loss terms over the validation split, and mIoU / pixel accuracy of the segmentation branch."""
        model = self.model
        was = model.training
        model.eval()
        k = self.num_classes
        sums = torch.zeros(len(TERMS), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        conf = torch.zeros(k * k, dtype=torch.float64, device=self.device)
        try:
            for batch in self.val_loader:
                vis, ir = batch['vis'].to(self.device), batch['ir'].to(self.device)
                labels = batch['label'].to(self.device) if (self.has_seg and 'label' in batch) else None
                v_in, i_in = model_inputs(vis, ir, self.config.in_chans)
                with self._autocast():
                    fused, logits = model.forward_head(model.forward_features(v_in, i_in),
                                                       with_seg=labels is not None)
                out = self.loss_fn(fused, v_in, i_in, logits, labels)
                n = vis.shape[0]
                sums += self._terms_vector(out.terms) * n
                count += n
                if labels is not None:
                    pred = logits.argmax(1).flatten()
                    lab = labels.flatten()
                    valid = (lab >= 0) & (lab < k)
                    conf += torch.bincount(lab[valid] * k + pred[valid], minlength=k * k).double()
        finally:
            model.train(was)
        self._reduce(sums), self._reduce(count), self._reduce(conf)
        means = (sums / count.clamp_min(1)).tolist()
        present = self._present_terms()
        res: Dict[str, Optional[float]] = {t: (means[i] if t in present else None) for i, t in enumerate(TERMS)}
        if self.has_seg:
            cm = conf.view(k, k)
            tp = cm.diag()
            denom = cm.sum(0) + cm.sum(1) - tp
            iou = tp[denom > 0] / denom[denom > 0]
            res['miou'] = float(iou.mean()) if iou.numel() else None
            res['pixel_acc'] = float(tp.sum() / cm.sum().clamp_min(1))
        else:
            res['miou'] = res['pixel_acc'] = None
        return res

    def _present_terms(self) -> List[str]:
        p = ['total', 'fusion', 'int', 'grad', 'ssim']
        if self.config.in_chans == 3:
            p.append('color')
        if self.has_seg:
            p += ['seg', 'ce', 'dice']
        return p

    def _select(self, row: Dict[str, Any], epoch: int) -> bool:
        """Score the current weights on the selection set (rank 0); True when they are the best so far."""
        sel = self.state['selection']
        if self.is_main:
            if sel['references'] is None:
                sel['references'] = self.selector.references()
            scores = self.selector.score(self.model)
            self.model.train()
            sel['history'].append({'epoch': epoch + 1, 'step': self.state['global_step'], 'metrics': scores})
        if self.distributed:
            box = [sel]
            dist.broadcast_object_list(box, src=0)
            sel = self.state['selection'] = box[0]
        ranked = rank_candidates([h['metrics'] for h in sel['history']], sel['references'])
        newest = len(ranked) - 1
        for m in PAPER_METRICS:
            row[f'select_{m}'] = sel['history'][-1]['metrics'].get(m)
        row['select_mean_rank'], row['select_wins'] = ranked[newest]['mean_rank'], ranked[newest]['wins']
        return best_index(ranked, self.config.select_rule) == newest

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_state(self) -> Dict[str, Any]:
        return dict(self.state, rng=get_rng_state(), scheduler=self.scheduler.state_dict(),
                    scaler=self.scaler.state_dict() if self.scaler is not None else None,
                    config=self.config.to_dict(), model_name=self.config.model, model_kwargs=self.model_kwargs,
                    model_config=model_config(self.model))

    def save_last(self):
        if self.is_main:
            save_checkpoint(self.out / 'last', self.model, self._ckpt_state(), self.optimizer)
            pause = os.environ.get('MTVIF_TRAIN_TEST_PAUSE_AT_STEP')
            if pause and int(pause) == self.state['global_step']:
                # test hook (tests/train): hold still right after this checkpoint so a test can SIGKILL here
                print(f'paused after checkpoint at step {pause}', flush=True)
                time.sleep(600)
        if self.distributed:
            dist.barrier()

    def save_best(self):
        if self.is_main:
            save_checkpoint(self.out / 'best', self.model, self._ckpt_state())

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Dict[str, Any]:
        """Train until ``epochs``, ``max_steps`` or early stopping; returns a summary dict."""
        cfg = self.config
        st = self.state
        if self.is_main:
            if not cfg.resume:
                if (self.out / 'last').exists() or (self.out / 'log.csv').exists():
                    raise FileExistsError(f'{str(self.out)!r} already holds a run; pass --resume to continue it '
                                          'or choose a new --out')
            self._write_config()
        if self.distributed:
            dist.barrier()
        per_epoch = self.sampler.batches_per_epoch
        self._print(f'training {cfg.model} ({sum(p.numel() for p in self.model.parameters()) / 1e6:.3f} M params) '
                    f'on {self.layout}:{cfg.data}: {self.labelled_pairs} train / {len(self.val_set)} val pairs'
                    + (f' + {self.unlabelled_pairs} unlabelled ({cfg.batch_size - self.n_unlabelled} labelled + '
                       f'{self.n_unlabelled} unlabelled per batch)' if cfg.unlabelled else '') + ', '
                    f'crop {cfg.crop}, batch {cfg.batch_size}x{self.world_size}, lr {cfg.lr:g}, '
                    f'{per_epoch} steps/epoch, device {self.device}' + (f' amp {self.amp_dtype}' if self.amp else ''))
        t_run = time.time() - st['elapsed_s']
        stop_reason = 'epochs'
        max_steps = cfg.max_steps
        if max_steps and st['global_step'] >= max_steps:
            stop_reason = 'max_steps'
        while stop_reason == 'epochs' and st['epoch'] < cfg.epochs:
            epoch = st['epoch']
            self.sampler.set_epoch(epoch, st['batch'])
            self.model.train()
            t0 = time.time()
            samples = 0
            bar = None
            if self.is_main and cfg.progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=per_epoch, initial=st['batch'], desc=f'epoch {epoch + 1}/{cfg.epochs}',
                           dynamic_ncols=True, leave=False, file=sys.stderr)
            hit_max = False
            for batch in self.train_loader:
                b = st['batch']
                step = st['global_step'] + 1
                vec, gp, _ = self.train_step(batch, step, epoch, b)
                vals = vec.tolist()
                for i, t in enumerate(TERMS):
                    st['epoch_sums'][t] = st['epoch_sums'].get(t, 0.0) + vals[i]
                if len(vals) > len(TERMS):  # semi-supervised: per-kind sums (already x world size / world size)
                    for i, key in enumerate(KIND_COLUMNS):
                        st['kind_sums'][key] = st['kind_sums'].get(key, 0.0) + vals[len(TERMS) + i] * self.world_size
                st['epoch_steps'] += 1
                if gp is not None:
                    for k, v in zip(GP_KEYS, gp.tolist()):
                        st['gp_sums'][k] = st['gp_sums'].get(k, 0.0) + v
                    st['gp_count'] += 1
                st['batch'] = b + 1
                st['global_step'] = step
                samples += batch['vis'].shape[0] * self.world_size
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f'{vals[0]:.4f}', step=step)
                if max_steps and step >= max_steps:
                    hit_max = True
                    break
                if cfg.ckpt_every and step % cfg.ckpt_every == 0 and st['batch'] < per_epoch:
                    st['elapsed_s'] = time.time() - t_run
                    self.save_last()
            if bar is not None:
                bar.close()
            epoch_time = time.time() - t0
            metrics = self.validate()
            present = self._present_terms()
            n = max(1, st['epoch_steps'])
            row: Dict[str, Any] = {'epoch': epoch + 1, 'step': st['global_step'], 'batches': st['batch'],
                                   'lr': self.optimizer.param_groups[0]['lr'],
                                   'samples_per_s': samples / epoch_time if epoch_time > 0 else None,
                                   'epoch_time_s': epoch_time}
            for t in TERMS:
                row[f'train_{t}'] = st['epoch_sums'].get(t, 0.0) / n if t in present else None
                row[f'val_{t}'] = metrics[t]
            row['val_miou'], row['val_pixel_acc'] = metrics['miou'], metrics['pixel_acc']
            for k in GP_KEYS:
                row[k] = st['gp_sums'][k] / st['gp_count'] if st['gp_count'] else None
            if cfg.unlabelled:
                ks = st['kind_sums']
                for kind in KINDS:
                    n_kind = ks.get(f'train_samples_{kind}', 0.0)
                    row[f'train_samples_{kind}'] = int(round(n_kind))
                    for t in KIND_TERMS:
                        if t in present and n_kind:
                            row[f'train_{t}_{kind}'] = ks.get(f'train_{t}_{kind}', 0.0) / n_kind
            es = st['early_stopping']
            val = metrics['total']
            if self.selector is None:
                improved = es['best'] is None or val < es['best'] - cfg.min_delta
                judged = True
            else:
                last = hit_max or (st['batch'] >= per_epoch and epoch + 1 >= cfg.epochs)
                judged = (epoch + 1) % cfg.select_every == 0 or last
                improved = self._select(row, epoch) if judged else False
            if improved:
                es.update(best=val, best_epoch=epoch + 1, bad_epochs=0)
            elif judged:
                es['bad_epochs'] += 1
            row['best'] = int(improved)
            st['metrics'] = {**metrics, 'epoch': epoch + 1, 'step': st['global_step']}
            epoch_done = st['batch'] >= per_epoch
            if epoch_done:
                st.update(epoch=epoch + 1, batch=0, epoch_sums={}, epoch_steps=0, gp_sums={}, gp_count=0, kind_sums={})
            if hit_max:
                stop_reason = 'max_steps'
            elif es['bad_epochs'] >= cfg.patience:
                stop_reason = 'early_stopping'
            elif st['epoch'] >= cfg.epochs:
                stop_reason = 'epochs'
            st['finished'] = stop_reason != 'epochs' or st['epoch'] >= cfg.epochs
            st['elapsed_s'] = time.time() - t_run
            if self.is_main:
                self._log_row(row)
                msg = (f'epoch {epoch + 1}/{cfg.epochs} step {st["global_step"]}: train {row["train_total"]:.4f} '
                       f'val {val:.4f}' + (f' mIoU {metrics["miou"]:.4f}' if metrics.get('miou') is not None else '')
                       + f' ({row["samples_per_s"] or 0:.2f} samples/s, {epoch_time:.1f} s)'
                       + (' *best*' if improved else f' (no improvement for {es["bad_epochs"]})'))
                self._print(msg)
            if improved:
                self.save_best()
            self.save_last()
            if stop_reason != 'epochs' or st['finished']:
                break
        if stop_reason == 'epochs' and st['epoch'] >= cfg.epochs:
            stop_reason = 'epochs'
        summary = {'stop_reason': stop_reason, 'epochs_done': st['epoch'], 'global_step': st['global_step'],
                   'best_val_loss': st['early_stopping']['best'], 'best_epoch': st['early_stopping']['best_epoch'],
                   'metrics': st['metrics'], 'out': str(self.out), 'elapsed_s': time.time() - t_run}
        self._print(f'done ({stop_reason}): {st["global_step"]} steps, best val loss '
                    f'{_fmt(summary["best_val_loss"])} at epoch {summary["best_epoch"]}; checkpoints in '
                    f'{self.out}/best and {self.out}/last')
        return summary

    def close(self):
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def make_scheduler(optimizer, kind: Optional[str], total: int):
    """torch's schedulers: ``'cosine'`` = ``CosineAnnealingLR(T_max=total)`` (to 0 at the last step),
    else a constant learning rate (``ConstantLR(factor=1)``)."""
    if kind == 'cosine':
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total)))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def train(config: Optional[TrainConfig] = None, **kwargs) -> Dict[str, Any]:
    """``train(model='mtvif_iii', data=..., out=..., crop=128, epochs=1)``: build a :class:`Trainer` and fit."""
    cfg = config if config is not None else TrainConfig(**kwargs)
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
