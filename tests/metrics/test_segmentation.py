"""mIoU: one confusion matrix accumulated over the dataset; absent classes excluded and reported."""
import math

import numpy as np
import pytest
import torch

from mtvif_zoo.metrics import ConfusionMatrix, miou


def test_hand_computed_miou_over_two_images():
    # image 1: labels / predictions over classes 0..3 (class 3 never appears anywhere)
    lab1 = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
    pre1 = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0]])
    # image 2: class 2 only in the prediction
    lab2 = torch.tensor([[1, 1, 0, 0]])
    pre2 = torch.tensor([[1, 2, 0, 0]])
    cm = ConfusionMatrix(4, class_names=['bg', 'car', 'person', 'bike'])
    cm.update(pre1, lab1)
    cm.update(pre2, lab2)
    r = cm.compute()
    # summed matrix (rows = label, cols = prediction): bg: 5 -> bg, 1 -> car; car: 1 -> bg, 4 -> car, 1 -> person
    assert r.matrix == [[5, 1, 0, 0], [1, 4, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert r.iou['bg'] == pytest.approx(5 / 7)     # TP 5, FP 1, FN 1
    assert r.iou['car'] == pytest.approx(4 / 7)    # TP 4, FP 1, FN 2
    assert r.iou['person'] == 0.0                  # predicted once, never labelled: IoU 0, counted
    assert r.absent == ['bike']                    # in neither prediction nor label: excluded, reported
    assert r.miou == pytest.approx((5 / 7 + 4 / 7 + 0) / 3)
    assert r.pixel_accuracy == pytest.approx(9 / 12) and r.num_pixels == 12
    # dataset-level accumulation is not the mean of per-image mIoUs
    per_image = np.mean([miou([(pre1, lab1)], 4).miou, miou([(pre2, lab2)], 4).miou])
    assert per_image != pytest.approx(r.miou)
    assert r.to_dict()['absent_classes'] == ['bike']


def test_logits_ignore_index_and_errors():
    lab = torch.tensor([[[0, 1, 255], [2, 2, 1]]])
    logits = torch.zeros(1, 3, 2, 3)
    pred = torch.tensor([[[0, 1, 2], [2, 0, 1]]])
    logits.scatter_(1, pred[:, None], 1.0)
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(logits, lab)
    r = cm.compute()
    assert r.num_pixels == 5 and r.matrix == [[1, 0, 0], [0, 2, 0], [1, 0, 1]]
    assert r.iou == {'0': pytest.approx(1 / 2), '1': 1.0, '2': pytest.approx(1 / 2)}
    with pytest.raises(ValueError, match='outside 0..2'):
        ConfusionMatrix(3).update(pred, lab)  # 255 without ignore_index
    with pytest.raises(ValueError, match='does not match'):
        ConfusionMatrix(3).update(pred[:, :1], lab)
    empty = ConfusionMatrix(2).compute()
    assert math.isnan(empty.miou) and empty.absent == ['0', '1']  # nothing seen: every class reported absent
