"""Dataset layouts: find the visible / infrared / label files of a split and pair them by stem.

Three layouts (``layout='auto'`` picks the first that matches the folder):

* ``msrs`` (MSRS, Tang et al. 2022): ``{train,test}/vi``, ``{train,test}/ir``,
  ``{train,test}/Segmentation_labels`` (9 classes, ids 0..8);
* ``fmb`` (FMB, Liu et al. 2023, SegMiF): ``{train,test}/Visible``, ``{train,test}/Infrared``,
  ``{train,test}/Label`` (15 classes: background + 14; the RGB ``color/`` folder is ignored);
* ``folder`` (generic, e.g. ``../shared/data/mfnet220``): ``vi/``, ``ir/``, optional ``label/``
  (single-channel class ids), optional ``splits/{train,val,test}.txt`` (one stem per line).

Pairs are matched by file stem (``00101D.png`` in ``vi/`` with ``00101D.png`` / ``.jpg`` in ``ir/``).

Train / validation: a layout's own validation list (``folder`` with ``splits/val.txt``) is used as
is; otherwise the training pairs are split 9:1 (``val_fraction=0.1``) by a permutation with a fixed
seed (:func:`split_train_val`), so the split is the same on every run and every process.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['PairRecord', 'DatasetError', 'LAYOUTS', 'detect_layout', 'find_pairs', 'split_train_val',
           'IMAGE_EXTENSIONS']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

#: layout name -> (split sub-folder template, visible dir, infrared dir, label dir, default num_classes)
LAYOUTS: Dict[str, Tuple[str, str, str, str, int]] = {
    'msrs': ('{split}', 'vi', 'ir', 'Segmentation_labels', 9),
    'fmb': ('{split}', 'Visible', 'Infrared', 'Label', 15),
    'folder': ('', 'vi', 'ir', 'label', 9),
}


class DatasetError(ValueError):
    """A dataset problem found before training: names every offending file."""

    def __init__(self, problems: Sequence[str], root: Optional[os.PathLike] = None, limit: int = 20):
        self.problems = list(problems)
        head = f'dataset {str(root)!r}: ' if root is not None else 'dataset: '
        shown = self.problems[:limit]
        more = f'\n  ... and {len(self.problems) - limit} more' if len(self.problems) > limit else ''
        super().__init__(head + f'{len(self.problems)} problem(s)\n  ' + '\n  '.join(shown) + more)


@dataclass(frozen=True)
class PairRecord:
    """One visible / infrared pair (and its label file, if any)."""
    stem: str
    vis: Path
    ir: Path
    label: Optional[Path] = None


def detect_layout(root: os.PathLike) -> str:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'dataset folder not found: {str(root)!r}')
    for name in ('msrs', 'fmb'):
        _, v, i, _, _ = LAYOUTS[name]
        if (root / 'train' / v).is_dir() and (root / 'train' / i).is_dir():
            return name
    if (root / 'vi').is_dir() and (root / 'ir').is_dir():
        return 'folder'
    raise DatasetError([f'no known layout: expected vi/ + ir/ (+ label/, splits/) [folder], '
                        f'train/vi + train/ir + train/Segmentation_labels [msrs] or '
                        f'train/Visible + train/Infrared + train/Label [fmb]; found '
                        f'{sorted(p.name for p in root.iterdir())[:12]}'], root)


def _index(folder: Path, problems: List[str]) -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
            continue
        if p.stem in out:
            problems.append(f'{p}: two files with stem {p.stem!r} ({out[p.stem].name} and {p.name})')
            continue
        out[p.stem] = p
    return out


def _read_list(path: Path) -> List[str]:
    stems = [s.strip() for s in path.read_text().splitlines()]
    return [Path(s).stem if Path(s).suffix.lower() in IMAGE_EXTENSIONS else s
            for s in stems if s and not s.startswith('#')]


def find_pairs(root: os.PathLike, split: str = 'train', layout: str = 'auto',
               require_labels: bool = True, splits: Optional[str] = None) -> List[PairRecord]:
    """Pairs of ``split`` (``train`` / ``val`` / ``test``; ``all`` for a folder without split lists).

    ``splits`` (folder layout): read the lists from ``root/splits/<splits>/`` instead of ``root/splits/``
    (e.g. ``'clean'`` for ``../shared/data/mfnet220/splits/clean``, the splits without MSRS test scenes).

    Raises :class:`DatasetError` naming every visible file without an infrared partner (and vice
    versa), every pair without a label when ``require_labels``, and every split-list entry that is
    missing; an empty split is an error too.
    """
    root = Path(root)
    layout = detect_layout(root) if layout == 'auto' else layout
    if layout not in LAYOUTS:
        raise ValueError(f'unknown dataset layout {layout!r}; valid: auto, {", ".join(LAYOUTS)}')
    sub, vdir, idir, ldir, _ = LAYOUTS[layout]
    wanted: Optional[List[str]] = None
    if layout == 'folder':
        base = root
        split_dir = root / 'splits' / splits if splits else root / 'splits'
        if splits and not split_dir.is_dir():
            raise DatasetError([f'split folder {split_dir} not found (--splits {splits} names a sub-folder of '
                                f'{root / "splits"})'], root)
        list_file = split_dir / f'{split}.txt'
        if split != 'all':
            if list_file.is_file():
                wanted = _read_list(list_file)
            elif (root / 'splits').is_dir() or split != 'train':
                raise DatasetError([f'split list {list_file} not found'], root)
    else:
        if split not in ('train', 'test'):
            raise ValueError(f'the {layout} layout has train and test splits, got {split!r}')
        base = root / sub.format(split=split)
    problems: List[str] = []
    for d in (vdir, idir):
        if not (base / d).is_dir():
            problems.append(f'folder {base / d} not found')
    if problems:
        raise DatasetError(problems, root)
    vis, ir = _index(base / vdir, problems), _index(base / idir, problems)
    labels = _index(base / ldir, problems) if (base / ldir).is_dir() else None
    if require_labels and labels is None:
        problems.append(f'label folder {base / ldir} not found (needed to train the segmentation branch)')
    stems = sorted(vis) if wanted is None else wanted
    if wanted is not None:
        for s in wanted:
            if s not in vis and s not in ir:
                problems.append(f'{list_file}: {s!r} has neither a visible nor an infrared image')
    else:
        for s in sorted(set(ir) - set(vis)):
            problems.append(f'{ir[s]}: infrared image without a visible partner ({base / vdir}/{s}.*)')
    records = []
    for s in stems:
        v, i = vis.get(s), ir.get(s)
        if v is None and i is not None:
            problems.append(f'{i}: infrared image without a visible partner ({base / vdir}/{s}.*)')
        if i is None and v is not None:
            problems.append(f'{v}: visible image without an infrared partner ({base / idir}/{s}.*)')
        lab = labels.get(s) if labels is not None else None
        if require_labels and labels is not None and lab is None and v is not None:
            problems.append(f'{v}: no label image ({base / ldir}/{s}.*)')
        if v is not None and i is not None:
            records.append(PairRecord(s, v, i, lab))
    if problems:
        raise DatasetError(problems, root)
    if not records:
        raise DatasetError([f'split {split!r} is empty: no image pairs in {base / vdir} and {base / idir}'], root)
    return records


def split_train_val(records: Sequence[PairRecord], val_fraction: float = 0.1,
                    seed: int = 0) -> Tuple[List[PairRecord], List[PairRecord]]:
    """Fixed-seed split of ``records`` into train / val (9:1 by default; at least one of each)."""
    n = len(records)
    if not 0 < val_fraction < 1:
        raise ValueError(f'val_fraction must be in (0, 1), got {val_fraction}')
    if n < 2:
        raise DatasetError([f'{n} training pair(s): need at least 2 to split off a validation set'])
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    return ([r for k, r in enumerate(records) if k not in val_idx], [r for k, r in enumerate(records) if k in val_idx])
