"""The training dataset: paired visible / infrared / label images with identical crops and flips.

A sample is a dict ``{'vis': 3xHxW float [0, 1], 'ir': 1xHxW float [0, 1], 'label': HxW int64
(when labels exist), 'index': int}``. The visible image is RGB (a grey visible image is
replicated to 3 channels); the infrared is one channel (3-channel infrared files are reduced to
grey: channel 0 when the channels are copies, BT.601 luma otherwise). 8-bit images are divided
by 255; 16-bit infrared is min-max scaled per image and 16-bit visible divided by 65535 (the same
conventions as :func:`mtvif_zoo.fuse`).

Augmentation (training): one random ``crop x crop`` window, a horizontal flip with probability
``hflip`` and a vertical flip with probability ``vflip`` (default 0: road scenes are not
upside-down), applied identically to the visible, infrared and label images. The randomness of
a sample is drawn from ``numpy.random.default_rng([seed, epoch, index])``: it does not depend on
the worker process, the number of workers, the batch it lands in, or whether the run was resumed.
The samplers pass ``(epoch, index)`` keys (plain integer keys use epoch 0). Evaluation samples
(``train=False``) are centre-cropped to ``crop`` (``None``: the whole image).

:func:`validate_records` decodes every file once, before training (``PIL`` ``verify`` for the
file structure, then the pixels: a file with valid checksums but garbage data is caught here, not
in epoch 1, and so is a PNG whose data ends before its last row, which PIL reads as black rows),
and raises :class:`~mtvif_zoo.data.layouts.DatasetError` naming each unreadable file, each
truncated or corrupt file, each pair whose sizes differ (the file that differs), each image
smaller than the crop, and each label with a value
outside ``0 .. num_classes - 1`` (``ignore_index`` allowed).
"""
import os
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .._png import check_png_data
from ..color import rgb_to_gray
from ..fusion import load_image, to_tensor_image
from .layouts import DatasetError, PairRecord

__all__ = ['VisIRSegDataset', 'MixedDataset', 'validate_records', 'load_label']


def load_label(path: Union[str, os.PathLike]) -> np.ndarray:
    """A label image as an ``HxW`` integer array of class ids (palette PNGs give their indices)."""
    with Image.open(path) as im:
        if im.mode in ('L', 'P', 'I', 'I;16', 'I;16B', 'I;16L', '1'):
            a = np.asarray(im)
        else:
            a = np.asarray(im.convert('RGB'))
            if not ((a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()):
                raise ValueError(f'label {str(path)!r} is a colour image (mode {im.mode}); labels must be '
                                 'single-channel class ids')
            a = a[..., 0]
    return a.astype(np.int64)


def _header(path: Path, decode: bool = True) -> Tuple[int, int]:
    """``(H, W)`` of a checked image: ``verify()`` checks the file's structure (PNG chunk CRCs,
    truncation), then (``decode``) every pixel is decoded, because a file can pass ``verify()`` with
    garbage compressed data (valid CRCs) and would then stop training in epoch 1; a PNG whose data
    ends before its last row (which PIL reads as black rows) is refused too
    (:func:`mtvif_zoo._png.check_png_data`, the check the image readers share)."""
    with Image.open(path) as im:
        size = im.size[1], im.size[0]
        im.verify()
    if decode:
        with Image.open(path) as im:
            im.load()
    check_png_data(path)
    return size


def validate_records(records: Sequence[PairRecord], num_classes: Optional[int] = None,
                     crop: Optional[int] = None, ignore_index: Optional[int] = None,
                     root: Optional[os.PathLike] = None) -> None:
    """Check every pair before training; raise :class:`DatasetError` listing all problems by file name."""
    if not records:
        raise DatasetError(['no image pairs'], root)
    problems = [p for r in records for p in _check_record(r, num_classes, crop, ignore_index)]
    if problems:
        raise DatasetError(problems, root)


def _check_record(r: PairRecord, num_classes: Optional[int], crop: Optional[int],
                  ignore_index: Optional[int]) -> List[str]:
    problems = []
    sizes = {}
    check_label_values = r.label is not None and bool(num_classes)
    for role, p in (('visible', r.vis), ('infrared', r.ir), ('label', r.label)):
        if p is None:
            continue
        try:  # a label whose values are checked below is decoded there
            sizes[role] = _header(p, decode=not (role == 'label' and check_label_values))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                Image.DecompressionBombError) as e:
            problems.append(f'{p}: unreadable {role} image ({type(e).__name__}: {e})')
    if len(set(sizes.values())) > 1:
        # name the file that differs (the label of the wrong size, not the visible image of its pair)
        common, n = Counter(sizes.values()).most_common(1)[0]
        paths = {'visible': r.vis, 'infrared': r.ir, 'label': r.label}
        odd = next((role for role, s in sizes.items() if s != common), 'visible') if n > 1 else 'visible'
        problems.append(f'{paths[odd]}: size mismatch within pair {r.stem!r}: ' +
                        ', '.join(f'{role} {h}x{w}' for role, (h, w) in sizes.items()) + ' (HxW)')
        return problems
    if sizes and crop:
        h, w = next(iter(sizes.values()))
        if h < crop or w < crop:
            problems.append(f'{r.vis}: {h}x{w} image is smaller than the {crop}x{crop} crop')
    if check_label_values and 'label' in sizes:
        try:
            lab = load_label(r.label)
        except (OSError, ValueError, EOFError, struct.error, zlib.error) as e:
            problems.append(f'{r.label}: unreadable label ({e})')
            return problems
        vals = np.unique(lab)
        bad = [int(v) for v in vals if (v < 0 or v >= num_classes) and v != ignore_index]
        if bad:
            problems.append(f'{r.label}: label value(s) {bad[:8]} outside the class range 0..{num_classes - 1}'
                            + (f' (ignore_index {ignore_index})' if ignore_index is not None else ''))
    return problems


def _grey(ir: torch.Tensor) -> torch.Tensor:
    if ir.shape[0] == 1:
        return ir
    return ir[:1] if bool((ir[:1] == ir[1:]).all()) else rgb_to_gray(ir)


def _gain_range(g, name: str):
    if g is None:
        return None
    lo, hi = (float(v) for v in g)
    if not 0 < lo <= hi:
        raise ValueError(f'{name} must be (low, high) with 0 < low <= high, got {tuple(g)!r}')
    return lo, hi


class VisIRSegDataset(Dataset):
    """Visible / infrared (/ label) pairs with paired random crops and flips (see module docstring).

    Args:
        records: the pairs (:func:`mtvif_zoo.data.find_pairs`).
        crop: crop size (square); ``None`` = whole images (they must then share one size to batch).
        train: random crop + flips (``True``) or centre crop (``False``).
        seed: augmentation seed.
        hflip, vflip: flip probabilities (training only).
        ir_gain, vis_gain: ``(low, high)``: multiply the infrared / visible crop by a gain drawn
            uniformly from that range, clipped to [0, 1] (training only; ``None`` = off). The
            fusion targets are computed from the augmented sources, so this teaches the network
            the max-of-sources behaviour over a wider range of relative brightness than one
            sensor's data shows (MFNet's raw thermal is brighter than MSRS's, for instance).
    """

    def __init__(self, records: Sequence[PairRecord], crop: Optional[int] = None, train: bool = True,
                 seed: int = 0, hflip: float = 0.5, vflip: float = 0.0,
                 ir_gain: Optional[Sequence[float]] = None, vis_gain: Optional[Sequence[float]] = None):
        self.records = list(records)
        self.crop = crop
        self.train = train
        self.seed = int(seed)
        self.hflip = float(hflip)
        self.vflip = float(vflip)
        self.ir_gain = _gain_range(ir_gain, 'ir_gain')
        self.vis_gain = _gain_range(vis_gain, 'vis_gain')
        self.has_labels = bool(self.records) and all(r.label is not None for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int):
        r = self.records[index]
        vis = to_tensor_image(load_image(r.vis, 'visible'), f'visible image {r.vis}', 'full')[0][0]
        if vis.shape[0] == 1:
            vis = vis.expand(3, -1, -1)
        ir = _grey(to_tensor_image(load_image(r.ir, 'infrared'), f'infrared image {r.ir}', 'minmax')[0][0])
        label = torch.from_numpy(load_label(r.label)) if (self.has_labels and r.label is not None) else None
        if vis.shape[-2:] != ir.shape[-2:] or (label is not None and label.shape != vis.shape[-2:]):
            raise DatasetError([f'{r.vis}: size mismatch within pair {r.stem!r}'])
        return vis, ir, label

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        vis, ir, label = self.load(index)
        h, w = vis.shape[-2:]
        c = self.crop
        if self.train:
            rng = np.random.default_rng([self.seed, int(epoch), int(index)])
            top = int(rng.integers(0, h - c + 1)) if c else 0
            left = int(rng.integers(0, w - c + 1)) if c else 0
            flip_h, flip_v = rng.random() < self.hflip, rng.random() < self.vflip
            # drawn after the crop / flips so that runs without gains keep their random streams
            if self.ir_gain is not None:
                ir = (ir * float(rng.uniform(*self.ir_gain))).clamp_(0, 1)
            if self.vis_gain is not None:
                vis = (vis * float(rng.uniform(*self.vis_gain))).clamp_(0, 1)
        else:
            top, left = ((h - c) // 2, (w - c) // 2) if c else (0, 0)
            flip_h = flip_v = False
        ch, cw = (c, c) if c else (h, w)
        dims = []
        if flip_h:
            dims.append(-1)
        if flip_v:
            dims.append(-2)

        def tf(t):
            t = t[..., top:top + ch, left:left + cw]
            return (t.flip(dims) if dims else t).contiguous()

        out = {'vis': tf(vis), 'ir': tf(ir), 'index': index}
        if label is not None:
            out['label'] = tf(label)
        return out


class MixedDataset(Dataset):
    """Labelled pairs followed by unlabelled pairs, for semi-supervised batches (:class:`MixedBatchSampler`).

    Index ``i < len(labelled)`` is ``labelled[i]``, the rest are the unlabelled pairs. Every sample
    carries ``'labelled'`` (a bool) and, when the labelled set has labels, a ``'label'`` so that a
    mixed batch collates: an unlabelled sample's label is filled with ``-1`` and is never read (the
    loss selects the labelled samples by the mask before CE / Dice, see :mod:`mtvif_zoo.losses`).
    """

    def __init__(self, labelled: VisIRSegDataset, unlabelled: VisIRSegDataset):
        self.labelled, self.unlabelled = labelled, unlabelled
        self.n = len(labelled)

    def __len__(self) -> int:
        return self.n + len(self.unlabelled)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if index < self.n:
            out = self.labelled[(epoch, index)]
            out['labelled'] = True
            return out
        out = self.unlabelled[(epoch, index - self.n)]
        out['index'] = index
        out['labelled'] = False
        if self.labelled.has_labels:
            out['label'] = torch.full(out['vis'].shape[-2:], -1, dtype=torch.int64)
        return out
