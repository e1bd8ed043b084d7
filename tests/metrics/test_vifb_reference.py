"""The 'vifb' convention equals VIFB's own MATLAB values (``../shared/data/vifb/metrics.csv``).

Every image x method row whose fused JPEG is shipped is recomputed (JPEGs decoded with Pillow) and
compared to the CSV's printed precision: 5 significant digits (``'%.5g'``). Rows that cannot match
are listed below with the reason; any other mismatch fails the test.
"""
import csv
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from mtvif_zoo.metrics import compute_batch, to_metric_tensor

DATA = Path(__file__).resolve().parents[2].parent / 'shared' / 'data'
VIFB = DATA / 'vifb'

#: VIFB metric name -> our key. EN, MI, Qabf and SSIM are the issue's check; SD ("Variance"), SF,
#: AG and PSNR are VIFB's too and cost little, so they are checked as well.
CHECKED = {'Entropy': 'EN', 'Mutinf': 'MI', 'Qabf': 'Qabf', 'Ssim': 'SSIM',
           'Variance': 'SD', 'Spatial_frequency': 'SF', 'Avg_gradient': 'AG', 'Psnr': 'PSNR'}

#: rows that cannot match, and why
NOT_SHIPPED_REASON = ('fused image not shipped: VIFB renamed MST_SR to LP_SR (commit 7a89c52) and only LP_SR images '
                      'exist; the CSV keeps stale MST_SR rows whose values equal the LP_SR rows (asserted), which '
                      'are checked')
KNOWN_MISMATCH = {
    'SwinFusion': 'the shipped JPEG is not the image VIFB measured: these 2023 additions (with YDTR) disagree by '
                  '1e-4..5e-3 in every metric, including EN, which depends only on the decoded pixels, while the '
                  'same decoding reproduces all 23 other methods to the last digit (same JPEG tables, 4:2:0, q75)',
    'YDTR': 'as SwinFusion: the shipped JPEG is not the image VIFB measured',
}


def _g5(x: float) -> float:
    return float('%.5g' % x)


@pytest.fixture(scope='module')
def reference():
    if not (VIFB / 'metrics.csv').is_file():
        pytest.skip(f'VIFB reference data not available: {VIFB / "metrics.csv"} is missing')
    ref = defaultdict(dict)
    with open(VIFB / 'metrics.csv', newline='') as fh:
        for r in csv.DictReader(fh):
            ref[(r['image'], r['method'])][r['metric']] = float(r['value'])
    return ref


@pytest.mark.slow
def test_vifb_convention_matches_vifb_matlab_values(reference, capsys):
    images = sorted({i for i, _ in reference})
    methods = sorted({m for _, m in reference})
    t0 = time.time()

    def one_image(img):
        """All shipped methods of one image, in batches sharing the sources' statistics."""
        vis = to_metric_tensor(VIFB / 'vi' / f'{img}.jpg')[None]
        ir = to_metric_tensor(VIFB / 'ir' / f'{img}.jpg')[None]
        present = [(m, VIFB / 'fused' / f'{img}_{m}.jpg') for m in methods]
        missing = [(img, m) for m, p in present if not p.is_file()]
        present = [(m, to_metric_tensor(p)) for m, p in present if p.is_file()]
        found, mism = 0, []
        for s in range(0, len(present), 5):
            chunk = present[s:s + 5]
            res = compute_batch(torch.stack([t for _, t in chunk]), vis, ir, list(CHECKED.values()), 'vifb')
            for j, (m, _) in enumerate(chunk):
                found += 1
                for name, key in CHECKED.items():
                    ours, theirs = float(res[key][j]), reference[(img, m)][name]
                    if _g5(ours) != theirs:
                        mism.append((img, m, key, ours, theirs))
        return missing, found, mism

    # two images at a time (both cores of a CI runner); torch is single-threaded per op here
    with ThreadPoolExecutor(2, initializer=torch.set_num_threads, initargs=(1,)) as ex:
        results = list(ex.map(one_image, images))
    missing = [x for r in results for x in r[0]]
    checked = sum(r[1] for r in results)
    mismatches = [x for r in results for x in r[2]]

    unexpected = [x for x in mismatches if x[1] not in KNOWN_MISMATCH]
    known_rows = sorted({(i, m) for i, m, *_ in mismatches if m in KNOWN_MISMATCH})
    with capsys.disabled():
        print(f'\nVIFB check: {checked} shipped rows x {len(CHECKED)} metrics in {time.time() - t0:.0f} s; '
              f'{checked - len(known_rows)} rows match every metric to 5 significant digits.')
        print(f'  {len(missing)} rows not checked: {NOT_SHIPPED_REASON}: '
              + ', '.join(sorted({m for _, m in missing})))
        for m, why in KNOWN_MISMATCH.items():
            rows = [i for i, mm in known_rows if mm == m]
            print(f'  {len(rows)} {m} rows differ ({why}): {", ".join(rows)}')
    assert checked == len(images) * len(methods) - len(missing)
    assert all(m == 'MST_SR' for _, m in missing), missing
    for img, _ in missing:  # the stale MST_SR rows duplicate LP_SR, so they are covered by the LP_SR check
        assert reference[(img, 'MST_SR')] == reference[(img, 'LP_SR')]
    assert not unexpected, f'{len(unexpected)} unexpected mismatches (image, method, metric, ours, VIFB): ' \
                           f'{unexpected[:20]}'
    # every method not listed above matched on every image
    assert checked - len(known_rows) >= (len(methods) - 1 - len(KNOWN_MISMATCH)) * len(images)
