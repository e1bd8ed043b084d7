"""The 'paper' convention equals CDDFuse's ``utils/Evaluator.py`` on TNO and RoadScene pairs.

The expected numbers in ``data/cddfuse_evaluator_expected.json`` were produced by running that
evaluator (unmodified, outside this repository) under its pinned requirements; the JSON says how.
The fused images are rebuilt here from the inputs with the same trivial rules.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtvif_zoo.metrics import compute, compute_batch, gray_cv2, to_metric_tensor

HERE = Path(__file__).resolve().parent
DATA = Path(__file__).resolve().parents[2].parent / 'shared' / 'data'
EXPECTED = json.loads((HERE / 'data' / 'cddfuse_evaluator_expected.json').read_text())
KEYS = ['EN', 'SD', 'SF', 'AG', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM', 'PSNR']


def _rgb(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p).convert('RGB')).astype(np.uint16)


def _fused(vi: np.ndarray, ir: np.ndarray, rule: str) -> np.ndarray:
    return (((vi + ir + 1) // 2) if rule == 'mean' else np.maximum(vi, ir)).astype(np.uint8)


def _rows():
    return [pytest.param(r, id=f"{r['dataset']}-{os.path.splitext(r['image'])[0]}-{r['rule']}")
            for r in EXPECTED['rows']]


@pytest.mark.parametrize('row', _rows())
def test_paper_convention_equals_cddfuse_evaluator(row):
    d = DATA / row['dataset']
    if not d.is_dir():
        pytest.skip(f'real image data not available: {d} is missing')
    vi_p, ir_p = d / 'vi' / row['image'], d / 'ir' / row['image']
    fused = _fused(_rgb(vi_p), _rgb(ir_p), row['rule'])
    got = compute(fused, vi_p, ir_p, metrics=KEYS, convention='paper')
    for k in KEYS:
        # the evaluator keeps most arithmetic in float32; we are float64 (SSIM reproduces its float32 steps)
        assert got[k] == pytest.approx(row[k], abs=1e-4, rel=0), (k, got[k], row[k])
    assert got['SSIM'] == pytest.approx(row['SSIM'], abs=1e-12)  # scikit-image 0.19 float32 SSIM, bit for bit


def test_paper_convention_scale_matches_the_papers_tables():
    """The reason this convention exists: SSIM ~ 1 and VIF ~ 1 for a fused image of both sources."""
    rows = [r for r in EXPECTED['rows'] if r['rule'] == 'mean']
    assert 0.8 < np.mean([r['SSIM'] for r in rows]) < 1.6
    assert 0.3 < np.mean([r['VIF'] for r in rows]) < 1.2


def test_cv2_gray_emulation_matches_opencv():
    """OpenCV's float32 BGR2GRAY (+ np.round) on colours where naive formulas round differently."""
    rows = torch.tensor(EXPECTED['cv2_gray'], dtype=torch.float64)
    rgb = rows[:, :3].T.reshape(1, 3, 1, -1)
    assert torch.equal(gray_cv2(rgb)[0, 0, 0], rows[:, 3])
    naive = torch.round((rgb[0, 0] * 0.299 + rgb[0, 1] * 0.587 + rgb[0, 2] * 0.114)[0])
    assert not torch.equal(naive, rows[:, 3])  # the table does exercise the difference


def test_batched_paper_equals_single(shared):
    """A batch of fused images sharing batch-1 sources gives the per-image results."""
    d = shared('tno25')
    vi = to_metric_tensor(d / 'vi' / '19.png')
    ir = to_metric_tensor(d / 'ir' / '19.png')
    fused = torch.stack([((vi + ir) / 2).round(), torch.maximum(vi, ir), vi.mean(0, keepdim=True).expand(3, -1, -1)])
    batch = compute_batch(fused, vi[None], ir[None], None, 'paper')
    for j in range(3):
        single = compute(fused[j], vi, ir, convention='paper')
        for k, v in single.items():
            assert float(batch[k][j]) == pytest.approx(v, rel=1e-12, abs=1e-12), k
