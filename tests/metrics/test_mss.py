"""MSS: MS-SSIM on the MultiTaskVIF tables' scale (the paper convention's ``mss_data_range = 2``).

The anchor (see :mod:`mtvif_zoo.metrics.conventions`): SeAFusion's public outputs for the 361 MSRS
test pairs score MSS 1.05 in the paper convention, Table 5's SeAFusion value; here three of those
images (read from a local copy of ycc568/my-seafusion when one is beside the repository) are pinned
to their per-image values, and the definition is checked on synthetic images.
"""
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mtvif_zoo.metrics import CONVENTIONS, compute, functional as Fm
from mtvif_zoo.metrics._colour import gray_cv2

REPO = Path(__file__).resolve().parents[2]
MIRROR = REPO.parent / '.mirror' / 'ycc568+my-seafusion' / 'repo'
COMMIT = 'cff58e5c005f5b189010b5de5f5869277852dfa8'


def _triple(seed=0, size=(176, 200)):
    r = np.random.default_rng(seed)
    base = r.integers(0, 256, (*size, 3)).astype(np.uint8)
    ir = np.clip(base[..., 0].astype(int) + r.integers(-40, 40, size), 0, 255).astype(np.uint8)
    fused = ((base.astype(int) + ir[..., None]) // 2).astype(np.uint8)
    return fused, base, ir


def test_mss_is_ms_ssim_with_the_conventions_data_range():
    assert CONVENTIONS['paper'].mss_data_range == 2.0 and CONVENTIONS['vifb'].mss_data_range == 255.0
    f, v, i = _triple()
    paper = compute(f, v, i, metrics=['MS_SSIM', 'MSS'], convention='paper')
    g = [gray_cv2(torch.from_numpy(x).permute(2, 0, 1)[None].double() if x.ndim == 3 else
                  torch.from_numpy(x)[None, None].double().expand(1, 3, -1, -1).contiguous()) for x in (f, v, i)]
    assert paper['MSS'] == pytest.approx(float(Fm.ms_ssim(*g, data_range=2.0)), rel=1e-12)
    assert paper['MS_SSIM'] == pytest.approx(float(Fm.ms_ssim(*g, data_range=255.0)), rel=1e-12)
    assert paper['MSS'] < paper['MS_SSIM']  # the tiny constants leave the structure term only
    vifb = compute(f, v, i, metrics=['MS_SSIM', 'MSS'], convention='vifb')
    assert vifb['MSS'] == vifb['MS_SSIM']
    same = compute(v, v, v, metrics=['MSS'], convention='paper')['MSS']
    assert same == pytest.approx(2.0, abs=1e-12)  # identical images: 1 per source


@pytest.mark.skipif(not MIRROR.is_dir(), reason=f'no local copy of ycc568/my-seafusion at {MIRROR}')
@pytest.mark.parametrize('stem,mss,ms_ssim', [('00004N', 0.964364, 1.614649), ('00537D', 0.99126, 1.341331),
                                              ('01012N', 1.174047, 1.678715)])
def test_seafusion_msrs_outputs_on_the_paper_scale(tmp_path, stem, mss, ms_ssim):
    paths = {}
    for key, sub in (('fused', 'commit/Results/SeAFusion'), ('vi', 'datasets/test_imgs/vi'),
                     ('ir', 'datasets/test_imgs/ir')):
        data = subprocess.run(['git', '--git-dir', str(MIRROR), 'cat-file', 'blob', f'{COMMIT}:{sub}/{stem}.png'],
                              capture_output=True, check=True).stdout
        paths[key] = tmp_path / f'{key}.png'
        paths[key].write_bytes(data)
    r = compute(paths['fused'], paths['vi'], paths['ir'], metrics=['MS_SSIM', 'MSS'], convention='paper')
    assert r['MSS'] == pytest.approx(mss, abs=2e-6) and r['MS_SSIM'] == pytest.approx(ms_ssim, abs=2e-6)
