"""The MultiTaskVIF training losses, Sec. 3.4 (Eq. 2-3) of Zhao, Howes, Zhang (arXiv 2505.06665).

``L_total = b1 * L_fusion + b2 * L_seg`` with

* ``L_fusion = l1 * L_int + l2 * L_grad + l3 * L_ssim + l4 * L_color``
* ``L_int   = mean |F - max(IR, VIS)|`` (elementwise max, every channel);
* ``L_grad  = mean | grad(F) - max(grad(IR), grad(VIS)) |`` with ``grad = |Sobel_x| + |Sobel_y|``
  per channel (as SeAFusion's ``Sobelxy``: 3x3 kernels, zero padding of 1, so the output keeps the
  input size);
* ``L_ssim  = sum_{j in {IR, VIS}} 0.5 * (1 - mean_c SSIM(F_c, j_c))``, SSIM with an 11x11
  Gaussian window (sigma 1.5), ``C1 = 0.01^2``, ``C2 = 0.03^2`` (data range 1), valid
  convolution (no padding; the window shrinks to the image for images smaller than 11 px), mean
  over the SSIM map, per channel, then over channels and the batch (as ``pytorch_msssim.ssim``);
* ``L_color = mean_{Cb, Cr} |F - VIS|`` in full-range BT.601 YCbCr (:mod:`mtvif_zoo.color`);
* ``L_seg   = L_ce + L_dice``; ``L_dice = 1 - mean_c (2 sum p y) / (sum p + sum y)`` with
  ``p = softmax(logits)``, ``y`` the one-hot label.

Defaults ``(b1, b2, l1, l2, l3, l4) = (1, 1, 20, 20, 10, 20)`` (:class:`LossWeights`).

Choices where the paper is silent (kept consistent everywhere):

* Dice sums run over the pixels of **each image** and the per-image Dice losses are averaged over
  the batch (so the loss of a batch is the mean of its samples' losses, which makes a
  distributed run with the same global batch give the same gradient as one process);
  ``eps = 1e-6`` is added to the denominator (a class absent from both the label and, to
  float precision, the prediction scores 0/eps = 0 overlap).
* ``ignore_index`` pixels (e.g. 255, optional) count in neither CE nor Dice.
* **1-channel mode** (``in_chans=1``, Table 6 v): the model fuses the visible Y channel with the
  infrared; every fusion term is computed on Y, and ``L_color`` is **skipped** (not part of the
  total, logged as absent), because the fused chroma is the visible image's Cb/Cr by construction.
* A model without a segmentation branch (the ``cnn`` baselines, e.g. ``seafusion``): ``L_seg``
  is not computed (absent), ``L_total = b1 * L_fusion``.

Each term is returned separately (:class:`LossOutput`), unweighted, so it can be logged.

**Semi-supervised batches** (``labelled=`` a ``B`` bool mask): a batch may mix labelled pairs and
unlabelled pairs (no label). ``L_fusion`` is computed over every sample, ``L_seg`` only over the
labelled ones: the logits and labels of the labelled samples are selected before CE and Dice, so
the batch's ``L_seg`` *is* the labelled subset's ``L_seg`` (the unlabelled samples contribute
nothing to it, and no gradient reaches the segmentation classifier from them); a batch with no
labelled sample has no ``L_seg`` at all (``L_total = b1 L_fusion``). The fusion terms are computed
on the labelled and the unlabelled samples separately and combined as the sample-weighted mean
``(n_l T_l + n_u T_u) / B`` -- every fusion term is a per-sample mean over images of one size, so
this equals the term over the whole batch -- and the per-kind values are returned in
``LossOutput.by_kind`` for logging.
"""
from dataclasses import asdict, dataclass, fields
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .color import rgb_to_ycbcr

__all__ = ['LossWeights', 'LossOutput', 'MultiTaskVIFLoss', 'sobel_gradient', 'ssim', 'intensity_loss',
           'gradient_loss', 'ssim_loss', 'color_loss', 'dice_loss', 'segmentation_loss', 'TERMS']

#: names of every logged term, in log order (``fusion``/``seg`` are the weighted sums of their parts)
TERMS = ('total', 'fusion', 'int', 'grad', 'ssim', 'color', 'seg', 'ce', 'dice')

_SOBEL_X = torch.tensor([[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]])


@dataclass
class LossWeights:
    """Loss weights of Eq. 2-3: ``beta1`` fusion, ``beta2`` segmentation; ``lambda1..4`` int, grad, ssim, color."""
    beta1: float = 1.0
    beta2: float = 1.0
    lambda1: float = 20.0
    lambda2: float = 20.0
    lambda3: float = 10.0
    lambda4: float = 20.0

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, float]]) -> 'LossWeights':
        d = dict(d or {})
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f'unknown loss weight(s) {unknown}; valid: {", ".join(f.name for f in fields(cls))}')
        return cls(**{k: float(v) for k, v in d.items()})


@dataclass
class LossOutput:
    """``total`` (the tensor to backpropagate) and every unweighted term (absent terms are missing)."""
    total: torch.Tensor
    terms: Dict[str, torch.Tensor]
    fusion: torch.Tensor
    seg: Optional[torch.Tensor] = None
    #: with ``labelled=``: ``{'labelled': {term: value}, 'unlabelled': {...}}`` (fusion terms of each kind; a kind
    #: absent from the batch is missing) and ``counts``: ``{'labelled': n_l, 'unlabelled': n_u}``
    by_kind: Optional[Dict[str, Dict[str, torch.Tensor]]] = None
    counts: Optional[Dict[str, int]] = None


def sobel_gradient(x: torch.Tensor) -> torch.Tensor:
    """``|Sobel_x * x| + |Sobel_y * x|`` per channel (depthwise, zero padding 1), same size as ``x``."""
    c = x.shape[1]
    kx = _SOBEL_X.to(device=x.device, dtype=x.dtype)
    weight = torch.stack((kx, kx.t()))[:, None].repeat(c, 1, 1, 1)  # (2C, 1, 3, 3): x, y per channel
    g = F.conv2d(x, weight, padding=1, groups=c)
    return g[:, 0::2].abs() + g[:, 1::2].abs()


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
         data_range: float = 1.0, reduction: str = 'channel') -> torch.Tensor:
    """SSIM of ``B x C x H x W`` images, Gaussian window, valid convolution (``pytorch_msssim`` style).

    ``reduction='channel'``: ``B x C`` (mean of each channel's SSIM map); ``'mean'``: a scalar.
    """
    if x.shape != y.shape:
        raise ValueError(f'ssim needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}')
    c = x.shape[1]
    win = min(window_size, x.shape[-2], x.shape[-1])
    win -= (win + 1) % 2  # odd
    g = _gaussian_window(win, sigma, x.device, x.dtype)
    wx = g.view(1, 1, 1, win).repeat(c, 1, 1, 1)
    wy = g.view(1, 1, win, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    per_channel = (lum * cs).flatten(2).mean(-1)
    return per_channel.mean() if reduction == 'mean' else per_channel


def intensity_loss(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """``L_int = mean |F - max(IR, VIS)|``."""
    return (fused - torch.maximum(ir, vis)).abs().mean()


def gradient_loss(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """``L_grad = mean |grad F - max(grad IR, grad VIS)|``, ``grad = |Sobel_x| + |Sobel_y|``."""
    return (sobel_gradient(fused) - torch.maximum(sobel_gradient(ir), sobel_gradient(vis))).abs().mean()


def ssim_loss(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """``L_ssim = 0.5 (1 - SSIM(F, IR)) + 0.5 (1 - SSIM(F, VIS))`` (SSIM averaged over channels)."""
    return 0.5 * (1 - ssim(fused, ir, reduction='mean')) + 0.5 * (1 - ssim(fused, vis, reduction='mean'))


def color_loss(fused: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """``L_color = mean over Cb, Cr of |F - VIS|`` in YCbCr (3-channel RGB inputs only)."""
    if fused.shape[1] != 3:
        raise ValueError('the colour loss needs 3-channel RGB images (it is skipped in the 1-channel mode)')
    return (rgb_to_ycbcr(fused)[:, 1:] - rgb_to_ycbcr(vis)[:, 1:]).abs().mean()


def _valid_mask(labels: torch.Tensor, ignore_index: Optional[int]) -> Optional[torch.Tensor]:
    return None if ignore_index is None else labels != ignore_index


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: Optional[int] = None,
              eps: float = 1e-6) -> torch.Tensor:
    """``1 - mean_c (2 sum p y) / (sum p + sum y)`` per image (sums over its pixels), averaged over the batch."""
    k = logits.shape[1]
    p = logits.float().softmax(dim=1)
    mask = _valid_mask(labels, ignore_index)
    lab = labels if mask is None else labels.masked_fill(~mask, 0)
    y = F.one_hot(lab.long(), k).permute(0, 3, 1, 2).to(p.dtype)
    if mask is not None:
        m = mask[:, None].to(p.dtype)
        p, y = p * m, y * m
    inter = (p * y).flatten(2).sum(-1)  # B x K
    denom = p.flatten(2).sum(-1) + y.flatten(2).sum(-1)
    return (1 - (2 * inter / (denom + eps)).mean(dim=1)).mean()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: Optional[int] = None):
    """``(L_ce, L_dice)``; CE is the mean over (non-ignored) pixels."""
    ce = F.cross_entropy(logits.float(), labels.long(), ignore_index=-100 if ignore_index is None else ignore_index)
    return ce, dice_loss(logits, labels, ignore_index)


class MultiTaskVIFLoss(nn.Module):
    """Eq. 2-3: ``b1 (l1 L_int + l2 L_grad + l3 L_ssim + l4 L_color) + b2 (L_ce + L_dice)``.

    ``forward(fused, vis, ir, logits=None, labels=None) -> LossOutput``. ``fused``, ``vis`` and
    ``ir`` are the model's output and inputs in [0, 1] with the same channels (3: RGB with the
    infrared replicated; 1: Y and infrared, then ``L_color`` is skipped). ``logits=None`` (a model
    without a segmentation branch) leaves ``L_seg`` out. Everything is computed in float32.
    """

    def __init__(self, weights: Optional[LossWeights] = None, ignore_index: Optional[int] = None):
        super().__init__()
        self.weights = weights if isinstance(weights, LossWeights) else LossWeights.from_dict(weights)
        self.ignore_index = ignore_index

    def _fusion_terms(self, fused, vis, ir) -> Dict[str, torch.Tensor]:
        w = self.weights
        terms = {'int': intensity_loss(fused, vis, ir), 'grad': gradient_loss(fused, vis, ir),
                 'ssim': ssim_loss(fused, vis, ir)}
        fusion = w.lambda1 * terms['int'] + w.lambda2 * terms['grad'] + w.lambda3 * terms['ssim']
        if fused.shape[1] == 3:
            terms['color'] = color_loss(fused, vis)
            fusion = fusion + w.lambda4 * terms['color']
        terms['fusion'] = fusion
        return terms

    def forward(self, fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor,
                logits: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                labelled: Optional[torch.Tensor] = None) -> LossOutput:
        """``labelled``: optional ``B`` bool mask of the samples that have a label (see the module docstring)."""
        w = self.weights
        fused, vis, ir = fused.float(), vis.float(), ir.float()
        if not (fused.shape == vis.shape == ir.shape):
            raise ValueError(f'fused, vis and ir must have the same shape, got {tuple(fused.shape)}, '
                             f'{tuple(vis.shape)} and {tuple(ir.shape)}')
        by_kind = counts = None
        if labelled is None:
            terms = self._fusion_terms(fused, vis, ir)
        else:
            labelled = labelled.to(device=fused.device, dtype=torch.bool).flatten()
            if labelled.numel() != fused.shape[0]:
                raise ValueError(f'labelled mask has {labelled.numel()} entries for a batch of {fused.shape[0]}')
            b = fused.shape[0]
            n_l = int(labelled.sum())
            counts = {'labelled': n_l, 'unlabelled': b - n_l}
            by_kind = {}
            for kind, m in (('labelled', labelled), ('unlabelled', ~labelled)):
                if counts[kind]:
                    by_kind[kind] = self._fusion_terms(fused[m], vis[m], ir[m])
            if len(by_kind) == 1:
                terms = dict(next(iter(by_kind.values())))
            else:
                terms = {t: (n_l * by_kind['labelled'][t] + (b - n_l) * by_kind['unlabelled'][t]) / b
                         for t in by_kind['labelled']}
            if logits is not None:
                if n_l == 0:
                    logits = labels = None  # no labelled sample: L_seg is absent, not zero-weighted
                elif n_l < b:
                    logits = logits[labelled]
                    labels = labels[labelled] if labels is not None else None
        fusion = terms['fusion']
        total = w.beta1 * fusion
        seg = None
        if logits is not None:
            if labels is None:
                raise ValueError('segmentation logits given without labels')
            terms['ce'], terms['dice'] = segmentation_loss(logits, labels, self.ignore_index)
            seg = terms['ce'] + terms['dice']
            terms['seg'] = seg
            total = total + w.beta2 * seg
        terms['total'] = total
        return LossOutput(total=total, terms=terms, fusion=fusion, seg=seg, by_kind=by_kind, counts=counts)
