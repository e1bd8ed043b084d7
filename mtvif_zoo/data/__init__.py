"""Datasets for training MultiTaskVIF: MSRS, FMB and generic folder layouts (see :mod:`.layouts`)."""
from .dataset import MixedDataset, VisIRSegDataset, load_label, validate_records
from .layouts import LAYOUTS, DatasetError, PairRecord, detect_layout, find_pairs, split_train_val
from .samplers import EvalSampler, MixedBatchSampler, ResumableBatchSampler

__all__ = ['VisIRSegDataset', 'MixedDataset', 'MixedBatchSampler', 'load_label', 'validate_records', 'LAYOUTS',
           'DatasetError', 'PairRecord',
           'detect_layout', 'find_pairs', 'split_train_val', 'ResumableBatchSampler', 'EvalSampler',
           'build_train_val']


def build_train_val(root, layout: str = 'auto', val_fraction: float = 0.1, seed: int = 0,
                    require_labels: bool = True, splits=None):
    """``(layout, train_records, val_records)``: a layout's own val list, else a fixed-seed 9:1 split."""
    from pathlib import Path
    layout = detect_layout(root) if layout == 'auto' else layout
    train = find_pairs(root, 'train', layout, require_labels, splits)
    if layout == 'folder' and (Path(root) / 'splits' / (splits or '') / 'val.txt').is_file():
        val = find_pairs(root, 'val', layout, require_labels, splits)
    else:
        train, val = split_train_val(train, val_fraction, seed)
    return layout, train, val
