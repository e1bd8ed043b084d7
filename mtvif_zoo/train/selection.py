"""Checkpoint selection by fusion quality on a selection set, and the guard against MSRS test images.

Why: the validation loss of the paper's recipe says little about fusion quality, and choosing a
checkpoint by its scores on the test pairs leaks the test set into the published numbers. With
``select_on=DIR`` (``mtvif train --select-on DIR --select-rule mean_rank``) the trainer fuses the
pairs of ``DIR`` (``vi/`` + ``ir/``, e.g. the 30 MSRS *train* pairs) with the current weights every
``select_every`` epochs, scores them with :func:`mtvif_zoo.evaluate` in the paper convention on the
paper's seven metrics (Tables 4-5: EN, MI, VIF, Qabf, SSIM, MSS, dE; MSS is MS-SSIM on the paper's scale,
see :mod:`mtvif_zoo.metrics.conventions`; dE lower is better),
and writes ``best/`` when the newest checkpoint is the best one under the rule so far. The pixel
average and the per-pixel maximum of the sources are scored once, in the same convention, as
fixed references. Rules (``select_rule``):

``mean_rank`` (default)
    Every evaluated checkpoint and the two references are ranked on each metric (1 = best, ties
    share the mean rank); a checkpoint's score is its mean rank over the metrics. The newest
    checkpoint becomes ``best/`` when its mean rank is strictly lower than that of every earlier
    checkpoint, all ranked together now (so earlier checkpoints are re-ranked against it).
``wins``
    The number of metrics on which a checkpoint beats *both* references (the issue's target
    measure); ties are broken by the mean rank, then by the earlier checkpoint.

The metric means, ranks and wins of every evaluation are logged (``log.csv``: ``select_*``) and
kept in the checkpoint state, so a resumed run ranks against the same history. Early stopping
then counts evaluations without a new best (``patience``) instead of validation-loss epochs.

Guard: MSRS was built from MFNet and keeps its image names, so an MSRS test scene can hide in
training data under its MSRS name. :func:`check_no_msrs_test_names` refuses any training,
validation, unlabelled or selection image whose file stem is one of the 361 names of the MSRS test
split (``mtvif_zoo/data/msrs_test_names.txt``, from ``Linfeng-Tang/SuperFusion``
``dataset/test/MSRS``), with an error naming the files and the fix. ``allow_msrs_test_names=True``
(``--allow-msrs-test-names``) lifts it, to reproduce the old ``*.mfnet220`` weights (whose
training split holds 43 such scenes); the run's config records it.
"""
import math
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

__all__ = ['PAPER_METRICS', 'LOWER_IS_BETTER', 'SELECT_RULES', 'MSRSTestLeakError', 'msrs_test_names',
           'check_no_msrs_test_names', 'rank_candidates', 'Selector']

#: the paper's seven fusion metrics (Tables 4-5; MSS = MS-SSIM on the tables' scale)
PAPER_METRICS = ('EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'MSS', 'dE')
LOWER_IS_BETTER = frozenset({'dE'})
SELECT_RULES = ('mean_rank', 'wins')
_NAMES_FILE = Path(__file__).resolve().parents[1] / 'data' / 'msrs_test_names.txt'


class MSRSTestLeakError(ValueError):
    """A training or selection image carries the name of an MSRS test image."""


@lru_cache(maxsize=1)
def msrs_test_names() -> frozenset:
    """The 361 image names (file stems) of the MSRS test split."""
    return frozenset(s.strip() for s in _NAMES_FILE.read_text().splitlines() if s.strip())


def check_no_msrs_test_names(paths: Iterable, what: str, root=None) -> None:
    """Raise :class:`MSRSTestLeakError` naming every path whose stem is an MSRS test name."""
    names = msrs_test_names()
    bad = sorted({str(p) for p in paths if Path(str(p)).stem in names})
    stems = sorted({Path(p).stem for p in bad})
    if bad:
        shown = ', '.join(bad[:6]) + (f' ... and {len(bad) - 6} more' if len(bad) > 6 else '')
        raise MSRSTestLeakError(
            f'{len(stems)} {what} image name(s){f" in {str(root)!r}" if root else ""} are MSRS test names '
            f'({", ".join(stems[:12])}{" ..." if len(stems) > 12 else ""}; files: {shown}). MSRS keeps MFNet\'s '
            'names, so these are MSRS test scenes, and training or selecting on them leaks the MSRS test set into '
            'its scores: drop them (for ../shared/data/mfnet220 use --splits clean, its splits without those '
            'scenes), or pass --allow-msrs-test-names to reproduce an old run that used them.')


def _ranks(values: Sequence[float], lower_better: bool) -> List[float]:
    """1 = best; ties share their mean rank; NaN ranks last."""
    key = [(math.inf if (v is None or not math.isfinite(v)) else (v if lower_better else -v)) for v in values]
    order = sorted(range(len(key)), key=lambda k: key[k])
    ranks = [0.0] * len(key)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and key[order[j + 1]] == key[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _better(a: float, b: float, metric: str) -> bool:
    return (a < b) if metric in LOWER_IS_BETTER else (a > b)


def rank_candidates(history: Sequence[Dict[str, float]], references: Dict[str, Dict[str, float]],
                    metrics: Sequence[str] = PAPER_METRICS) -> List[Dict[str, float]]:
    """``[{'mean_rank': r, 'wins': w}, ...]`` for each checkpoint of ``history`` (metric means per checkpoint),
    ranked together with the ``references`` (``{'average': {...}, 'max': {...}}``)."""
    rows = list(history) + list(references.values())
    n = len(history)
    sums = [0.0] * n
    for m in metrics:
        r = _ranks([row.get(m) for row in rows], m in LOWER_IS_BETTER)
        for k in range(n):
            sums[k] += r[k]
    out = []
    for k, h in enumerate(history):
        wins = sum(1 for m in metrics if h.get(m) is not None and math.isfinite(h[m])
                   and all(_better(h[m], ref[m], m) for ref in references.values()))
        out.append({'mean_rank': sums[k] / len(metrics), 'wins': wins})
    return out


def best_index(scores: Sequence[Dict[str, float]], rule: str) -> int:
    """Index of the best checkpoint under ``rule`` (ties: the earlier one)."""
    if rule == 'mean_rank':
        key = [(s['mean_rank'],) for s in scores]
    elif rule == 'wins':
        key = [(-s['wins'], s['mean_rank']) for s in scores]
    else:
        raise ValueError(f'unknown selection rule {rule!r}; valid: {", ".join(SELECT_RULES)}')
    return min(range(len(key)), key=lambda k: (key[k], k))


class Selector:
    """Scores a model on a selection folder (``vi/`` + ``ir/``); see the module docstring."""

    def __init__(self, root, rule: str = 'mean_rank', metrics: Sequence[str] = PAPER_METRICS,
                 allow_msrs_test_names: bool = False):
        from ..evaluate import _by_stem, _images
        if rule not in SELECT_RULES:
            raise ValueError(f'unknown selection rule {rule!r}; valid: {", ".join(SELECT_RULES)}')
        self.root, self.rule, self.metrics = Path(root), rule, tuple(metrics)
        self.vis_dir, self.ir_dir = self.root / 'vi', self.root / 'ir'
        for d in (self.vis_dir, self.ir_dir):
            if not d.is_dir():
                raise FileNotFoundError(f'selection set {str(self.root)!r}: folder {d.name}/ not found '
                                        '(expected vi/ and ir/ with pairs matched by file stem)')
        problems: List[str] = []
        vis, ir = _by_stem(_images(self.vis_dir), problems, 'visible'), _by_stem(_images(self.ir_dir), problems,
                                                                                   'infrared')
        self.stems = sorted(set(vis) & set(ir))
        if not self.stems:
            raise FileNotFoundError(f'selection set {str(self.root)!r}: no visible/infrared pairs with matching stems')
        if not allow_msrs_test_names:
            check_no_msrs_test_names(list(vis.values()) + list(ir.values()), 'selection', self.root)

    def _evaluate(self, model=None, references=()) -> Dict[str, Dict[str, float]]:
        from ..evaluate import evaluate
        res = evaluate(None, self.vis_dir, self.ir_dir, metrics=list(self.metrics), convention='paper', model=model,
                       model_name='checkpoint', references=references, progress=False, workers=1, pool='thread')
        return res.summary

    def references(self) -> Dict[str, Dict[str, float]]:
        """Metric means of the pixel average and the per-pixel maximum on the selection set."""
        s = self._evaluate(references=('average', 'max'))
        return {'average': dict(s['average (reference)']), 'max': dict(s['max (reference)'])}

    def score(self, model) -> Dict[str, float]:
        """Metric means of ``model``'s fused images on the selection set (the model's train/eval mode is kept)."""
        was = model.training
        try:
            return dict(self._evaluate(model=model)['checkpoint'])
        finally:
            model.train(was)
