"""Fusion metrics (EN, MI, VIF, Qabf, SSIM, MS-SSIM, dE, SD, SF, AG, SCD, PSNR) and mIoU, in torch.

>>> from mtvif_zoo.metrics import compute
>>> compute('fused.png', 'vi.png', 'ir.png')                        # all metrics, paper convention
>>> compute(f, v, i, metrics=['EN', 'SSIM'], convention='vifb')       # VIFB's MATLAB definitions

* Scale: images on **0..255** (uint8 as is, uint16 rescaled by 255/65535, floats taken as 0..255
  unless ``data_range`` says otherwise); see :mod:`mtvif_zoo.metrics.io`.
* Batched functions over ``B x C x H x W`` tensors, CPU or CUDA: :mod:`mtvif_zoo.metrics.functional`;
  :func:`compute_batch` applies a convention to a batch.
* Conventions: ``'paper'`` (CDDFuse ``utils/Evaluator.py``, the scale of the MultiTaskVIF tables)
  and ``'vifb'`` (VIFB's MATLAB code); every difference is a field of :class:`Convention`.
* Segmentation: :class:`ConfusionMatrix` / :func:`miou` (one matrix over the dataset; classes absent
  from both predictions and labels are excluded and reported).
"""
from ._colour import gray_cv2, gray_matlab, rgb_to_lab
from ._compute import METRIC_INFO, METRICS, compute, compute_batch, resolve_metrics
from .conventions import CONVENTIONS, PAPER, VIFB, Convention, get_convention
from .functional import (
    average_gradient,
    ciede2000,
    delta_e,
    entropy,
    ms_ssim,
    ms_ssim_pair,
    mutual_information,
    mutual_information_pair,
    psnr,
    qabf,
    scd,
    spatial_frequency,
    ssim,
    ssim_pair,
    standard_deviation,
    vif,
    vif_pair,
)
from .io import UnreadableImageError, to_metric_tensor
from .segmentation import ConfusionMatrix, SegmentationScores, miou

__all__ = [
    'compute', 'compute_batch', 'METRICS', 'METRIC_INFO', 'resolve_metrics',
    'Convention', 'CONVENTIONS', 'VIFB', 'PAPER', 'get_convention',
    'entropy', 'standard_deviation', 'spatial_frequency', 'average_gradient', 'mutual_information',
    'mutual_information_pair', 'qabf', 'ssim', 'ssim_pair', 'ms_ssim', 'ms_ssim_pair', 'vif', 'vif_pair',
    'scd', 'psnr', 'delta_e', 'ciede2000', 'rgb_to_lab', 'gray_cv2', 'gray_matlab',
    'to_metric_tensor', 'UnreadableImageError',
    'ConfusionMatrix', 'SegmentationScores', 'miou',
]
