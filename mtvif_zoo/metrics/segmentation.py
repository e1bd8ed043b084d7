"""mIoU from one confusion matrix accumulated over a whole dataset.

IoU_c = TP_c / (TP_c + FP_c + FN_c) from the dataset's summed confusion matrix (not a mean of
per-image IoUs). A class that appears in neither the predictions nor the labels of the whole
dataset has 0 / 0: it is **excluded** from the mean and listed in ``absent`` (never NaN in the
mean). Pixels whose label is ``ignore_index`` are not counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

__all__ = ['ConfusionMatrix', 'SegmentationScores', 'miou']


@dataclass
class SegmentationScores:
    """Result of :meth:`ConfusionMatrix.compute`."""

    miou: float
    iou: Dict[str, float]          # present classes only, in class order
    absent: List[str]              # classes in neither predictions nor labels (excluded from miou)
    pixel_accuracy: float
    num_pixels: int
    matrix: List[List[int]] = field(repr=False)  # rows = label, columns = prediction

    def to_dict(self) -> dict:
        return {'mIoU': self.miou, 'IoU': dict(self.iou), 'absent_classes': list(self.absent),
                'pixel_accuracy': self.pixel_accuracy, 'num_pixels': self.num_pixels,
                'confusion_matrix': self.matrix}


class ConfusionMatrix:
    """Accumulates a ``K x K`` confusion matrix (rows = label, columns = prediction) over batches.

    Args:
        num_classes: K.
        ignore_index: label value to skip (e.g. 255), or ``None``.
        class_names: names for reporting (default ``'0'..'K-1'``).
    """

    def __init__(self, num_classes: int, ignore_index: Optional[int] = None,
                 class_names: Optional[Sequence[str]] = None):
        if num_classes < 1:
            raise ValueError('num_classes must be >= 1')
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f'{len(class_names)} class names for {num_classes} classes')
        self.class_names = ([str(c) for c in class_names] if class_names is not None
                            else [str(k) for k in range(num_classes)])
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. ``pred``: class ids (``[B x] H x W``) or logits (``B x K x H x W``);
        ``target``: class ids of the same ``[B x] H x W`` shape."""
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.is_floating_point():
            if pred.dim() == target.dim() + 1 and pred.shape[-3] == self.num_classes:
                pred = pred.argmax(-3)
            else:
                raise ValueError(f'float predictions must be logits [B x] K x H x W with K={self.num_classes}; '
                                 f'got {tuple(pred.shape)} for labels {tuple(target.shape)}')
        if pred.shape != target.shape:
            raise ValueError(f'prediction shape {tuple(pred.shape)} does not match label shape {tuple(target.shape)}')
        pred = pred.reshape(-1).to(torch.int64).cpu()
        target = target.reshape(-1).to(torch.int64).cpu()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        K = self.num_classes
        for name, t in (('label', target), ('prediction', pred)):
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= K):
                raise ValueError(f'{name} contains class ids outside 0..{K - 1} '
                                 f'(min {int(t.min())}, max {int(t.max())}); set ignore_index for void labels')
        self.matrix += torch.bincount(target * K + pred, minlength=K * K).reshape(K, K)

    def compute(self) -> SegmentationScores:
        m = self.matrix.to(torch.float64)
        tp = m.diag()
        fp = m.sum(0) - tp
        fn = m.sum(1) - tp
        union = tp + fp + fn
        iou = {}
        absent = []
        for k, name in enumerate(self.class_names):
            if union[k] == 0:
                absent.append(name)
            else:
                iou[name] = float(tp[k] / union[k])
        total = int(self.matrix.sum())
        return SegmentationScores(
            miou=float(sum(iou.values()) / len(iou)) if iou else float('nan'),
            iou=iou, absent=absent,
            pixel_accuracy=float(tp.sum() / total) if total else float('nan'),
            num_pixels=total, matrix=self.matrix.tolist())


def miou(pairs: Iterable[Tuple[torch.Tensor, torch.Tensor]], num_classes: int, ignore_index: Optional[int] = None,
         class_names: Optional[Sequence[str]] = None) -> SegmentationScores:
    """mIoU over ``(prediction, label)`` pairs with one accumulated confusion matrix."""
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, class_names=class_names)
    for p, t in pairs:
        cm.update(p, t)
    return cm.compute()
