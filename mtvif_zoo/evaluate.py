"""``evaluate()``: a Table-4-style comparison of fusion methods from folders of images.

>>> from mtvif_zoo.evaluate import evaluate
>>> res = evaluate('runs/fused', 'data/vi', 'data/ir', convention='paper', out='runs/eval')
>>> print(res.table())                # rows = methods, columns = metrics, convention in the header

Folders of fused images (``fused_dirs``):

* one folder whose **sub-folders** are methods (``fused/SeAFusion/00004N.png`` ...), or
* one folder of images (one method, named after the folder), or
* several folders (one method each), or
* a **flat** folder whose file names carry the method, parsed with ``pattern`` (VIFB ships
  ``fused/<image>_<method>.jpg``: ``pattern='{image}_{method}'``). Images are matched to the pairs
  by file stem; ``{image}`` only matches stems of the visible folder, so underscores are safe.

Visible and infrared images are matched by file stem. Anything that does not match, cannot be
decoded, or has the wrong size is **named** in ``result.problems`` (and warned about), never fatal;
the problems that left a pair or an image out (unreadable, wrong size, could not be fused or
segmented) are also in ``result.skipped`` (``mtvif eval`` then exits with code 1).
Metrics that cannot be computed for an image (MS-SSIM on images with a side <= 160 px) are NaN
with the reason in ``result.notes``; method means skip them and say so.

With ``model=`` the pairs are first fused by that model (:func:`mtvif_zoo.fuse`) and evaluated as
one more method; with ``labels_dir=`` too, the model's segmentation head is scored with one
confusion matrix over the dataset (mIoU, absent classes excluded and listed).
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .metrics import METRIC_INFO, compute_batch, get_convention, resolve_metrics
from .metrics.conventions import Convention
from .metrics.io import IMAGE_EXTENSIONS, UnreadableImageError, to_metric_tensor
from .metrics.segmentation import ConfusionMatrix

__all__ = ['evaluate', 'EvaluationResult', 'discover_methods']

PathLike = Union[str, Path]


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------

@dataclass
class EvaluationResult:
    """What :func:`evaluate` found: per-image rows, per-method means, and every problem by name."""

    convention: Convention
    metrics: List[str]
    rows: List[Dict[str, Any]] = field(default_factory=list)          # method, image, metric...
    summary: Dict[str, Dict[str, float]] = field(default_factory=dict)  # method -> metric -> mean
    counts: Dict[str, int] = field(default_factory=dict)              # method -> images evaluated
    num_pairs: int = 0
    problems: List[str] = field(default_factory=list)                 # unmatched / unreadable / size
    skipped: List[str] = field(default_factory=list)  # the problems that left a pair / image out (also in problems)
    notes: List[str] = field(default_factory=list)                    # NaN explanations
    segmentation: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # method -> mIoU report
    files: Dict[str, str] = field(default_factory=dict)               # what was written

    def table(self, digits: int = 3) -> str:
        """A plain-text table like the paper's Table 4 (best value per column marked with ``*``)."""
        cols = list(self.metrics) + (['mIoU'] if self.segmentation else [])
        methods = list(self.summary)
        best = {}
        for c in cols:
            vals = [(self._value(m, c), m) for m in methods]
            vals = [(v, m) for v, m in vals if v is not None and math.isfinite(v)]
            if len(vals) > 1:
                hib = METRIC_INFO.get(c, (True, ''))[0]
                best[c] = (max if hib else min)(vals)[1]
        w0 = max([len('Method')] + [len(m) for m in methods])
        cells = {}
        for m in methods:
            for c in cols:
                v = self._value(m, c)
                s = '-' if v is None else ('nan' if math.isnan(v) else ('inf' if math.isinf(v) else f'{v:.{digits}f}'))
                cells[m, c] = s + ('*' if best.get(c) == m else ' ')
        widths = {c: max(len(c) + 1, *(len(cells[m, c]) for m in methods)) if methods else len(c) + 1 for c in cols}
        arrows = {c: ('' if METRIC_INFO.get(c, (True,))[0] else '(lower better)') for c in cols}
        lower = [c for c in cols if arrows[c]]
        head = (f"Fusion metrics, convention '{self.convention.name}': {self.convention.description}\n"
                f'{self.num_pairs} image pairs; mean per method over n images; * = best per column; '
                + (f'higher is better except {", ".join(lower)}.' if lower else 'higher is better.'))
        lines = [head, '', f"{'Method':<{w0}}  {'n':>4}  " + '  '.join(f'{c:>{widths[c]}}' for c in cols)]
        lines.append('-' * len(lines[-1]))
        for m in methods:
            lines.append(f'{m:<{w0}}  {self.counts.get(m, 0):>4}  '
                         + '  '.join(f'{cells[m, c]:>{widths[c]}}' for c in cols))
        if self.notes:
            lines += [''] + [f'note: {n}' for n in self.notes]
        if self.problems:
            lines += ['', f'{len(self.problems)} problem(s):'] + [f'  {p}' for p in self.problems[:50]]
            if len(self.problems) > 50:
                lines.append(f'  ... and {len(self.problems) - 50} more (all in the JSON output)')
        return '\n'.join(lines)

    def _value(self, method: str, col: str) -> Optional[float]:
        if col == 'mIoU':
            seg = self.segmentation.get(method)
            return None if seg is None else seg['mIoU']
        return self.summary.get(method, {}).get(col)

    def to_dict(self) -> Dict[str, Any]:
        return {'convention': self.convention.as_dict(), 'metrics': list(self.metrics), 'num_pairs': self.num_pairs,
                'summary': self.summary, 'counts': self.counts, 'rows': self.rows, 'problems': self.problems,
                'skipped': self.skipped,
                'notes': self.notes, 'segmentation': self.segmentation, 'table': self.table()}

    def write(self, out: PathLike) -> Dict[str, str]:
        """Write ``per_image.csv``, ``summary.csv`` and ``results.json`` into the folder ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        cols = list(self.metrics)
        with open(out / 'per_image.csv', 'w', newline='') as fh:
            w = csv.writer(fh)
            w.writerow(['method', 'image'] + cols)
            for r in self.rows:
                w.writerow([r['method'], r['image']] + [_fmt(r.get(c)) for c in cols])
        with open(out / 'summary.csv', 'w', newline='') as fh:
            w = csv.writer(fh)
            extra = ['mIoU'] if self.segmentation else []
            w.writerow(['method', 'n'] + cols + extra + ['convention'])
            for m, vals in self.summary.items():
                w.writerow([m, self.counts.get(m, 0)] + [_fmt(vals.get(c)) for c in cols]
                           + [_fmt(self._value(m, 'mIoU')) for _ in extra] + [self.convention.name])
        with open(out / 'results.json', 'w') as fh:
            json.dump(_jsonable(self.to_dict()), fh, indent=1, allow_nan=False)
        self.files = {k: str(out / k) for k in ('per_image.csv', 'summary.csv', 'results.json')}
        return self.files


def _fmt(v) -> str:
    if v is None:
        return ''
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return 'nan' if math.isnan(v) else ('inf' if v > 0 else '-inf')
    return repr(float(v))


def _jsonable(x):
    """Strict JSON: NaN -> null, +-inf -> the strings 'inf' / '-inf' (the table and CSV say the same)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if math.isinf(x):
            return 'inf' if x > 0 else '-inf'
    return x


# --------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------

def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _by_stem(files: Iterable[Path], problems: List[str], what: str) -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            problems.append(f'{what}: two files with stem {p.stem!r}: {out[p.stem]} and {p} (using the first)')
            continue
        out[p.stem] = p
    return out


def _pattern_regex(pattern: str, stems: Sequence[str]) -> 're.Pattern':
    if '{image}' not in pattern or '{method}' not in pattern:
        raise ValueError(f"pattern must contain '{{image}}' and '{{method}}', got {pattern!r}")
    alts = '|'.join(re.escape(s) for s in sorted(stems, key=len, reverse=True)) or r'(?!x)x'
    rx = ''
    for part in re.split(r'(\{image\}|\{method\})', pattern):
        if part == '{image}':
            rx += f'(?P<image>{alts})'
        elif part == '{method}':
            rx += '(?P<method>.+?)'
        else:
            rx += re.escape(part)
    return re.compile(rx + r'\Z')


def discover_methods(fused_dirs: Union[PathLike, Sequence[PathLike]], pair_stems: Sequence[str],
                     pattern: Optional[str] = None) -> Tuple[Dict[str, Dict[str, Path]], List[str]]:
    """-> ({method: {image stem: fused path}}, [problems naming files that fit nowhere])."""
    dirs = [Path(fused_dirs)] if isinstance(fused_dirs, (str, Path)) else [Path(d) for d in fused_dirs]
    problems: List[str] = []
    methods: Dict[str, Dict[str, Path]] = {}
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f'fused folder not found: {str(d)!r}')
    if pattern:
        rx = _pattern_regex(pattern, pair_stems)
        for d in dirs:
            for p in _images(d):
                m = rx.match(p.stem)
                if not m:
                    problems.append(f'unmatched fused file {p} (no visible/infrared pair fits pattern {pattern!r})')
                    continue
                files = methods.setdefault(m.group('method'), {})
                if m.group('image') in files:
                    problems.append(f'duplicate fused image for {m.group("image")!r}, '
                                    f'method {m.group("method")!r}: {p}')
                    continue
                files[m.group('image')] = p
        return dict(sorted(methods.items())), problems
    if len(dirs) == 1 and not _images(dirs[0]):
        subs = [s for s in sorted(dirs[0].iterdir()) if s.is_dir() and _images(s)]
        if not subs:
            raise FileNotFoundError(f'no images in {str(dirs[0])!r} nor in its sub-folders')
        dirs = subs
    names: Dict[str, int] = {}
    for d in dirs:
        name = d.name or str(d)
        if name in names:  # two folders of one name: disambiguate with the parent
            name = f'{d.parent.name}/{d.name}'
        names[name] = 1
        methods[name] = _by_stem(_images(d), problems, f'method {name}')
    return methods, problems


# --------------------------------------------------------------------------------------------
# the model path
# --------------------------------------------------------------------------------------------

def _load_model(model, device, pretrained: bool):
    from ._factory import create_model
    if isinstance(model, str):
        name = model
        model = create_model(model, pretrained=pretrained)
    else:
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        name = (cfg.get('architecture') if isinstance(cfg, dict) else None) or type(model).__name__
    if device is not None:
        model = model.to(device)
    return name, model.eval()


def _fuse_with_model(model, pairs: Dict[str, Tuple[Path, Path]], batch_size: int, save_dir: Optional[Path],
                     progress: bool, problems: List[str], amp: Optional[bool] = None) -> Dict[str, Any]:
    from tqdm.auto import tqdm

    from .fusion import fuse
    out = {}
    for stem, (vp, ip) in tqdm(list(pairs.items()), desc='fusing', disable=not progress, unit='pair'):
        try:
            img = fuse(str(vp), str(ip), model=model, batch_size=batch_size, amp=amp)
        except (ValueError, OSError) as e:
            problems.append(f'could not fuse {vp} + {ip}: {e}')
            continue
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            img.save(save_dir / f'{stem}.png')
        out[stem] = img
    return out


#: rule-based reference fusions (``evaluate(references=...)``)
REFERENCES = ('average', 'max')


class _Reference:
    """A reference fusion of one pair, computed when the metrics read it (uint8 ``H x W [x 3]``)."""

    def __init__(self, rule: str, vp: Path, ip: Path):
        self.rule, self.vp, self.ip = rule, vp, ip

    def __str__(self) -> str:
        return f'{self.rule}({self.vp.name}, {self.ip.name})'

    def array(self) -> np.ndarray:
        from .fusion import load_image
        v = load_image(self.vp, 'visible').astype(np.float64)
        i = load_image(self.ip, 'infrared').astype(np.float64)
        if i.ndim == 3 and v.ndim == 2:
            i = i.mean(axis=2)
        if v.ndim == 3 and i.ndim == 2:
            i = i[..., None]
        out = np.maximum(v, i) if self.rule == 'max' else np.floor((v + i) / 2 + 0.5)  # round half up
        if v.ndim == 3:
            out = np.broadcast_to(out, v.shape)
        return np.ascontiguousarray(out.clip(0, 255).astype(np.uint8))


def _segment(model, vp: Path, ip: Path) -> torch.Tensor:
    """Class ids ``H x W`` from the model's segmentation branch (:func:`mtvif_zoo.fusion.segment`)."""
    from .fusion import segment
    return torch.as_tensor(np.asarray(segment(str(vp), str(ip), model=model)), dtype=torch.int64)


def _read_label(p: Path) -> torch.Tensor:
    from PIL import Image

    from ._png import check_png_data
    with Image.open(p) as im:
        a = np.asarray(im if im.mode in ('L', 'P', 'I', 'I;16') else im.convert('L'))
    check_png_data(p, 'label')  # missing rows would be read as class 0
    return torch.from_numpy(a.astype(np.int64))


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------

def _pair_job(stem: str, vp: Path, ip: Path, todo: List[Tuple[str, Any]], names: List[str], conv: Convention,
              dev: torch.device, batch_size: int):
    """All methods' fused images of one pair -> (rows, problems, [(metric, reason, items)]).

    Module level and fed only picklable arguments (paths, PIL images, :class:`_Reference`), so a
    worker process started by the forkserver can run it."""
    rows, probs, nans = [], [], []
    if not todo:
        return rows, probs, nans
    try:
        v = to_metric_tensor(vp, name='visible', keep_uint8=True)
        i = to_metric_tensor(ip, name='infrared', keep_uint8=True)
        if v.shape[-2:] != i.shape[-2:]:
            raise ValueError(f'visible {vp} is {v.shape[-1]}x{v.shape[-2]} but infrared {ip} is '
                             f'{i.shape[-1]}x{i.shape[-2]}')
    except (OSError, ValueError) as e:
        return rows, [f'pair {stem!r} skipped: {e}'], nans
    loaded = []
    for m, src in todo:
        try:
            f = to_metric_tensor(src.array() if isinstance(src, _Reference) else src, name=f'fused ({m})',
                                 keep_uint8=True)
            if f.shape[-2:] != v.shape[-2:]:
                raise ValueError(f'fused image {_name(src, m, stem)} is {f.shape[-1]}x{f.shape[-2]} but its '
                                 f'sources are {v.shape[-1]}x{v.shape[-2]}')
            loaded.append((m, f))
        except (OSError, ValueError) as e:
            probs.append(f'{"unreadable" if isinstance(e, (OSError, UnreadableImageError)) else "skipped"}: {e}')
    groups: Dict[Tuple[int, torch.dtype], List[Tuple[str, torch.Tensor]]] = {}
    for m, f in loaded:  # (8-bit images stay uint8: compute_batch's fast paths)
        groups.setdefault((f.shape[0], f.dtype), []).append((m, f))
    for chunk_src in groups.values():
        for s0 in range(0, len(chunk_src), max(1, batch_size)):
            chunk = chunk_src[s0:s0 + max(1, batch_size)]
            fb = torch.stack([f for _, f in chunk]).to(dev)
            reasons: Dict[str, str] = {}
            vals = compute_batch(fb, v[None].to(dev), i[None].to(dev), names, conv, on_error='nan',
                                 _reasons=reasons)
            nans += [(k, why, [f'{m}/{stem}' for m, _ in chunk]) for k, why in reasons.items()]
            vals = {k: t.cpu().tolist() for k, t in vals.items()}
            for j, (m, _) in enumerate(chunk):
                row = {'method': m, 'image': stem}
                row.update({k: vals[k][j] for k in names})
                rows.append(row)
    return rows, probs, nans


def _process_context():
    """The start method of the worker processes: ``forkserver`` where it exists (Linux, macOS), else
    ``spawn``; never plain ``fork``.

    Forking the caller's process copies its locks in whatever state its other threads left them:
    a child forked while an OpenMP / MKL / HTTP thread of the parent held the MKL allocator lock
    hangs forever in its first allocation (seen in CI: a worker spinning in ``mkl_serv_allocate``
    after the hub tests). The forkserver is a fresh single-threaded process that has imported this
    module once; each worker is forked from it, so start-up stays cheap and no lock is inherited."""
    methods = mp.get_all_start_methods()
    ctx = mp.get_context('forkserver' if 'forkserver' in methods else 'spawn')
    if ctx.get_start_method() == 'forkserver':
        ctx.set_forkserver_preload([__name__])  # the server imports torch + the metrics once
    return ctx


def _pool_kind(pool: Optional[str]) -> str:
    if pool is None:
        return 'process' if 'forkserver' in mp.get_all_start_methods() else 'thread'
    if pool not in ('process', 'thread'):
        raise ValueError(f"pool must be 'process' or 'thread', got {pool!r}")
    return pool


def evaluate(fused_dirs: Optional[Union[PathLike, Sequence[PathLike]]], vis_dir: PathLike, ir_dir: PathLike,
             metrics: Optional[Union[str, Iterable[str]]] = None, convention: Union[str, Convention] = 'paper',
             out: Optional[PathLike] = None, labels_dir: Optional[PathLike] = None, model: Any = None,
             device: Optional[Union[str, torch.device]] = None, batch_size: int = 8, pattern: Optional[str] = None,
             progress: bool = True, pretrained: bool = True, ignore_index: Optional[int] = None,
             class_names: Optional[Sequence[str]] = None, model_name: Optional[str] = None,
             workers: Optional[int] = None, references: Sequence[str] = (),
             pool: Optional[str] = None, amp: Optional[bool] = None, warn: bool = True) -> EvaluationResult:
    """Evaluate folders of fused images against their visible / infrared pairs.

    Args:
        fused_dirs: a folder of method sub-folders, a folder of images, several folders (one
            method each), or a flat folder with ``pattern``; ``None`` with ``model``.
        vis_dir, ir_dir: the source images, matched to each other and to fused images by file stem.
        metrics: ``None`` = all (:data:`mtvif_zoo.metrics.METRICS`) or a subset.
        convention: ``'paper'``, ``'vifb'`` or a :class:`~mtvif_zoo.metrics.Convention`.
        out: folder for ``per_image.csv``, ``summary.csv``, ``results.json`` (and the model's fused
            images under ``fused/<model>/``); nothing is written when ``None``.
        labels_dir: segmentation labels (class-id PNGs, matched by stem) for the model's mIoU.
        model: a model name (``mtvif_zoo.create_model(name, pretrained=pretrained)``) or a model
            (its row is called ``model_name``, default: the architecture name).
        device: where the model and the metrics run (default: CPU / the model's device).
        batch_size: fused images per metric batch (one pair's statistics are shared by its batch).
        pattern: file-name pattern of a flat folder, e.g. ``'{image}_{method}'``.
        progress: show tqdm progress bars.
        ignore_index, class_names: for mIoU (class names default to the MSRS classes for 9 classes).
        workers: CPU only: pairs evaluated in parallel (default: min(cores, 8)); results are the
            same for any number and either pool.
        pool: ``'process'`` (default on Linux and macOS: worker processes started by a
            ``forkserver``, torch single-threaded in each; the per-image work is thousands of small
            tensor ops, which threads partly serialise on the GIL: ``benchmarks/bench_metrics.py``
            measures both) or ``'thread'`` (the default where there is no
            forkserver, e.g. Windows). Workers are never plain forks of the calling process, which
            can deadlock on a lock another thread held at the fork; a ``'process'`` pool on
            Windows uses ``spawn`` (run it under ``if __name__ == '__main__':``).
        references: rule-based fusions computed from the sources in the same run and added as rows:
            ``'average'`` (pixel mean of visible and infrared, rounded half up to uint8) and ``'max'``
            (per-pixel maximum); a grey infrared image is broadcast over the visible channels.
        amp: the model's precision, as in :func:`mtvif_zoo.fuse` (``None``: autocast on CUDA and on
            CPUs with native bf16 units, fp32 elsewhere; ``True``: autocast; ``False``: fp32).
        warn: issue each problem as a ``UserWarning`` too (``mtvif eval`` prints them itself).

    Returns:
        :class:`EvaluationResult` (``print(result.table())``).
    """
    from tqdm.auto import tqdm
    conv = get_convention(convention)
    names = resolve_metrics(metrics)
    problems: List[str] = []
    skipped: List[str] = []  # problems that left a pair / image out
    vis_dir, ir_dir = Path(vis_dir), Path(ir_dir)
    for what, d in (('visible', vis_dir), ('infrared', ir_dir)):
        if not d.is_dir():
            raise FileNotFoundError(f'{what} folder not found: {str(d)!r}')
    vis = _by_stem(_images(vis_dir), problems, 'visible')
    ir = _by_stem(_images(ir_dir), problems, 'infrared')
    problems += [f'unmatched visible image {p} (no infrared image with stem {s!r})'
                 for s, p in vis.items() if s not in ir]
    problems += [f'unmatched infrared image {p} (no visible image with stem {s!r})'
                 for s, p in ir.items() if s not in vis]
    pairs = {s: (vis[s], ir[s]) for s in vis if s in ir}
    if not pairs:
        raise FileNotFoundError(f'no visible/infrared pairs with matching file stems in {str(vis_dir)!r} '
                                f'and {str(ir_dir)!r}')
    if fused_dirs is None and model is None and not references:
        raise ValueError('give fused folders, a model, references, or a combination')

    methods: Dict[str, Dict[str, Any]] = {}
    if fused_dirs is not None:
        methods, found = discover_methods(fused_dirs, list(pairs), pattern)
        problems += found
    for ref in references:
        if ref not in REFERENCES:
            raise ValueError(f'unknown reference {ref!r}; valid: {", ".join(REFERENCES)}')
        methods[f'{ref} (reference)'] = {s: _Reference(ref, vp, ip) for s, (vp, ip) in pairs.items()}
    seg_model = None
    if model is not None:
        mname, mdl = _load_model(model, device, pretrained)
        mname = model_name or mname
        if mname in methods:
            mname = f'{mname} (model)'
        save = Path(out) / 'fused' / mname if out is not None else None
        failed: List[str] = []
        methods[mname] = _fuse_with_model(mdl, pairs, batch_size, save, progress, failed, amp)
        problems += failed
        skipped += failed
        seg_model = (mname, mdl)
    for m, files in methods.items():
        for s, p in files.items():
            if s not in pairs:
                problems.append(f'unmatched fused image {p} (method {m}: no visible/infrared pair with stem {s!r})')
        missing = [s for s in pairs if s not in files]
        if missing and files:
            problems.append(f'method {m}: no fused image for {len(missing)} of {len(pairs)} pairs: '
                            + ', '.join(missing[:20]) + (' ...' if len(missing) > 20 else ''))

    res = EvaluationResult(convention=conv, metrics=names, num_pairs=len(pairs))
    dev = torch.device(device) if device is not None else torch.device('cpu')
    per_method: Dict[str, List[Dict[str, Any]]] = {m: [] for m in methods}
    nan_reasons: Dict[str, Dict[str, List[str]]] = {}
    total = sum(1 for m in methods for s in methods[m] if s in pairs)

    def pair_args(stem):
        """The picklable arguments of :func:`_pair_job` for one pair."""
        vp, ip = pairs[stem]
        todo = [(m, methods[m][stem]) for m in methods if stem in methods[m]]
        return (stem, vp, ip, todo, names, conv, dev, batch_size)

    n_workers = 1 if dev.type != 'cpu' else max(1, int(workers or min(os.cpu_count() or 1, 8)))
    pool = _pool_kind(pool)
    bar = tqdm(total=total, desc=f'metrics ({conv.name})', disable=not progress, unit='img')
    done: Dict[str, Any] = {}
    stems = [s for s in pairs if any(s in methods[m] for m in methods)]
    if n_workers > 1 and len(stems) > 1:
        # pairs in parallel, torch single-threaded in each worker (the CPU kernels are tiled and
        # single-threaded per op; intra-op threads would only wait on each other)
        threads_before = torch.get_num_threads()
        try:
            if pool == 'process':
                # workers come from a forkserver (never a fork of this process: see
                # _process_context); each pair's paths / images travel pickled
                ex = ProcessPoolExecutor(min(n_workers, len(stems)), mp_context=_process_context(),
                                         initializer=torch.set_num_threads, initargs=(1,))
            else:
                ex = ThreadPoolExecutor(n_workers, initializer=torch.set_num_threads, initargs=(1,))
            with ex:
                futs = {ex.submit(_pair_job, *pair_args(s)): s for s in stems}
                for fut in as_completed(futs):
                    done[futs[fut]] = fut.result()
                    bar.update(sum(1 for m in methods if futs[fut] in methods[m]))
        finally:
            torch.set_num_threads(threads_before)
    else:
        for s in stems:
            done[s] = _pair_job(*pair_args(s))
            bar.update(sum(1 for m in methods if s in methods[m]))
    bar.close()
    for s in stems:  # merge in pair order: results do not depend on the number of workers
        rows, probs, nans = done[s]
        for r in rows:
            per_method[r['method']].append(r)
        problems += probs
        skipped += probs
        for k, why, items in nans:
            nan_reasons.setdefault(k, {}).setdefault(why, []).extend(items)

    for m, rows in per_method.items():
        res.rows += rows
        res.counts[m] = len(rows)
        means = {}
        for k in names:
            xs = [r[k] for r in rows if not math.isnan(r[k])]
            means[k] = float(np.mean(xs)) if xs else math.nan
        res.summary[m] = means
    for k, whys in nan_reasons.items():
        for why, items in whys.items():
            res.notes.append(f'{k} is NaN for {len(items)} image(s) ({", ".join(items[:5])}'
                             f'{" ..." if len(items) > 5 else ""}): {why}; means use the other images')

    if labels_dir is not None:
        if seg_model is None:
            problems.append('labels given but no model: mIoU needs --model (fused images have no segmentation)')
        else:
            mname, mdl = seg_model
            if not getattr(mdl, 'has_segmentation', True):
                raise ValueError(f'model {mname!r} has no segmentation classifier; mIoU needs multi-task weights')
            labels = _by_stem(_images(Path(labels_dir)), problems, 'labels')
            k = int(getattr(mdl, 'num_classes', 0) or 0)
            if class_names is None:
                try:
                    from .models import MSRS_CLASSES
                    class_names = list(MSRS_CLASSES) if k == len(MSRS_CLASSES) else None
                except ImportError:  # pragma: no cover
                    class_names = None
            cm = ConfusionMatrix(k, ignore_index=ignore_index, class_names=class_names)
            scored = 0
            for stem, (vp, ip) in tqdm(list(pairs.items()), desc='segmentation', disable=not progress, unit='pair'):
                if stem not in labels:
                    problems.append(f'no label for pair {stem!r} in {labels_dir} (not in mIoU)')
                    continue
                try:
                    cm.update(_segment(mdl, vp, ip), _read_label(labels[stem]))
                    scored += 1
                except (OSError, ValueError) as e:
                    problems.append(f'segmentation of {stem!r} skipped: {e}')
                    skipped.append(problems[-1])
            problems += [f'unmatched label {p} (no pair with stem {s!r})' for s, p in labels.items() if s not in pairs]
            rep = cm.compute().to_dict()
            rep['images'] = scored
            res.segmentation[mname] = rep
            if rep['absent_classes']:
                res.notes.append(f'mIoU ({mname}): classes absent from both predictions and labels, excluded from '
                                 f'the mean: {", ".join(rep["absent_classes"])}')

    res.problems, res.skipped = problems, skipped
    for p in problems if warn else ():
        warnings.warn(p, stacklevel=2)
    if out is not None:
        res.write(out)
    return res


def _name(src, method: str, stem: str) -> str:
    return str(src) if isinstance(src, (str, Path)) else f'{method}/{stem}'
