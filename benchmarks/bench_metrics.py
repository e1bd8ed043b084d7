"""Benchmark: the whole metric suite in torch vs a straightforward numpy / scikit-image evaluation.

    python benchmarks/bench_metrics.py                          # 20 MSRS test pairs, paper convention, CPU
    python benchmarks/bench_metrics.py --workers 1              # serial only
    python benchmarks/bench_metrics.py --pool thread            # workers as threads (evaluate(pool='thread'))
    python benchmarks/bench_metrics.py --device cuda            # images/s on the GPU
    python benchmarks/bench_metrics.py --fused runs/fused/      # a folder of fused images (matched by stem)

Both sides compute all 12 metrics (EN, MI, VIF, Qabf, SSIM, MS-SSIM, dE, SD, SF, AG, SCD, PSNR) of
the 'paper' convention (CDDFuse Evaluator definitions) on the same images in the same run; the
fused image defaults to the pixel average of the visible and infrared images. The baseline below is
written the way the reference scripts are (CDDFuse's ``Evaluator``: numpy, ``scipy.signal.convolve2d``
with the 2-D windows, ``sklearn.metrics.mutual_info_score``, scikit-image SSIM / CIEDE2000; MS-SSIM
as pytorch_msssim's algorithm in numpy). It is checked against the torch numbers before timing.
This is not a test; it prints per-image times and the speed ratio: serial (one thread) and with
``--workers`` processes (default: one per core; forked and started before the clock, their start-up
time printed separately).
The baseline runs serially, as the reference scripts do.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mtvif_zoo.metrics import METRICS, compute_batch, to_metric_tensor

DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'msrs_test20'


# ------------------------------------------------------------------------------------------
# the straightforward numpy / scikit-image baseline (paper convention definitions)
# ------------------------------------------------------------------------------------------

def np_gray_cv2(rgb: np.ndarray) -> np.ndarray:
    """cv2 BGR2GRAY on float32 (fused multiply-adds) + np.round, as CDDFuse reads images."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    r, g, b = (rgb[..., k].astype(np.float32) for k in range(3))
    f32 = np.float32
    t = (g * f32(0.587)).astype(np.float64)
    t = (b.astype(np.float64) * float(f32(0.114)) + t).astype(np.float32).astype(np.float64)
    t = (r.astype(np.float64) * float(f32(0.299)) + t).astype(np.float32)
    return np.round(t)


def np_en(img):
    a = np.uint8(np.round(img)).flatten()
    h = np.bincount(a) / a.shape[0]
    return -sum(h * np.log2(h + (h == 0)))


def np_sf(img):
    return np.sqrt(np.mean((img[:, 1:] - img[:, :-1]) ** 2) + np.mean((img[1:, :] - img[:-1, :]) ** 2))


def np_ag(img):
    gx, gy = np.zeros_like(img), np.zeros_like(img)
    gx[:, 0] = img[:, 1] - img[:, 0]
    gx[:, -1] = img[:, -1] - img[:, -2]
    gx[:, 1:-1] = (img[:, 2:] - img[:, :-2]) / 2
    gy[0, :] = img[1, :] - img[0, :]
    gy[-1, :] = img[-1, :] - img[-2, :]
    gy[1:-1, :] = (img[2:, :] - img[:-2, :]) / 2
    return np.mean(np.sqrt((gx ** 2 + gy ** 2) / 2))


def np_corr(u, v):
    u, v = u - u.mean(), v - v.mean()
    return np.sum(u * v) / np.sqrt(np.sum(u ** 2) * np.sum(v ** 2))


def np_scd(f, a, b):
    return np_corr(a, f - b) + np_corr(b, f - a)


def np_psnr(f, a, b):
    mse = (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2
    return 10 * np.log10(np.max(f) ** 2 / mse)


def gauss2d(n, sd):
    m = (n - 1) / 2
    y, x = np.ogrid[-m:m + 1, -m:m + 1]
    h = np.exp(-(x * x + y * y) / (2 * sd * sd))
    return h / h.sum()


def np_vifp(ref, dist, sigma_nsq=2.0, eps=1e-10):
    from scipy.signal import convolve2d
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = gauss2d(n, n / 5.0)
        if scale > 1:
            ref = convolve2d(ref, win, mode='valid')[::2, ::2]
            dist = convolve2d(dist, win, mode='valid')[::2, ::2]
        mu1, mu2 = convolve2d(ref, win, mode='valid'), convolve2d(dist, win, mode='valid')
        s1 = convolve2d(ref * ref, win, mode='valid') - mu1 * mu1
        s2 = convolve2d(dist * dist, win, mode='valid') - mu2 * mu2
        s12 = convolve2d(ref * dist, win, mode='valid') - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        g[s1 < eps] = 0
        sv[s1 < eps] = s2[s1 < eps]
        s1[s1 < eps] = 0
        g[s2 < eps] = 0
        sv[s2 < eps] = 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= eps] = eps
        num += np.sum(np.log10(1 + g * g * s1 / (sv + sigma_nsq)))
        den += np.sum(np.log10(1 + s1 / sigma_nsq))
    return 1.0 if den == 0 else num / den


def np_qabf(f, a, b):
    from scipy.signal import convolve2d
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)

    def grad(x):
        sx, sy = convolve2d(x, h3, mode='same'), convolve2d(x, h1, mode='same')
        g = np.sqrt(sx * sx + sy * sy)
        ang = np.full_like(x, math.pi / 2)
        nz = sx != 0
        ang[nz] = np.arctan(sy[nz] / sx[nz])
        return g, ang

    def q(gs, as_, gf, af):
        G = np.zeros_like(gs)
        m = gs > gf
        G[m] = gf[m] / gs[m]
        m = gs == gf
        G[m] = gf[m]
        m = gs < gf
        G[m] = gs[m] / gf[m]
        A = 1 - np.abs(as_ - af) / (math.pi / 2)
        return 0.9994 / (1 + np.exp(-15 * (G - 0.5))) * 0.9879 / (1 + np.exp(-22 * (A - 0.8)))

    (ga, aa), (gb, ab), (gf, af) = grad(a), grad(b), grad(f)
    den = np.sum(ga + gb)
    return np.sum(q(ga, aa, gf, af) * ga + q(gb, ab, gf, af) * gb) / den if den > 0 else 0.0


def np_ms_ssim(x, y, data_range=255.0):
    """pytorch_msssim.ms_ssim's algorithm in numpy (11x11 Gaussian 1.5, 'valid', 5 scales)."""
    from scipy.signal import convolve2d
    win = gauss2d(11, 1.5)
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    C1, C2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(5):
        mu1, mu2 = convolve2d(x, win, mode='valid'), convolve2d(y, win, mode='valid')
        s1 = convolve2d(x * x, win, mode='valid') - mu1 ** 2
        s2 = convolve2d(y * y, win, mode='valid') - mu2 ** 2
        s12 = convolve2d(x * y, win, mode='valid') - mu1 * mu2
        cs = (2 * s12 + C2) / (s1 + s2 + C2)
        ssim_map = (2 * mu1 * mu2 + C1) / (mu1 ** 2 + mu2 ** 2 + C1) * cs
        if i < 4:
            vals.append(max(cs.mean(), 0.0))
            x, y = (np.pad(z, ((0, z.shape[0] % 2), (0, z.shape[1] % 2))) for z in (x, y))
            x = (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4
            y = (y[0::2, 0::2] + y[1::2, 0::2] + y[0::2, 1::2] + y[1::2, 1::2]) / 4
    vals.append(max(ssim_map.mean(), 0.0))
    return float(np.prod(np.array(vals) ** np.array(weights)))


def numpy_suite(fused_rgb: np.ndarray, vis_rgb: np.ndarray, ir: np.ndarray) -> dict:
    from skimage.color import deltaE_ciede2000, rgb2lab
    from skimage.metrics import structural_similarity
    from sklearn.metrics import mutual_info_score
    f, a, b = np_gray_cv2(fused_rgb), np_gray_cv2(vis_rgb), np_gray_cv2(ir)
    f64, a64, b64 = (z.astype(np.float64) for z in (f, a, b))
    v3 = vis_rgb if vis_rgb.ndim == 3 else np.repeat(vis_rgb[..., None], 3, 2)
    f3 = fused_rgb if fused_rgb.ndim == 3 else np.repeat(fused_rgb[..., None], 3, 2)
    return {
        'EN': np_en(f),
        'MI': mutual_info_score(f.ravel(), a.ravel()) + mutual_info_score(f.ravel(), b.ravel()),
        'VIF': np_vifp(a64, f64) + np_vifp(b64, f64),
        'Qabf': np_qabf(f64, a64, b64),
        'SSIM': structural_similarity(f, a, data_range=2) + structural_similarity(f, b, data_range=2),
        'MS_SSIM': np_ms_ssim(a64, f64) + np_ms_ssim(b64, f64),
        'dE': float(deltaE_ciede2000(rgb2lab(f3), rgb2lab(v3)).mean()),
        'SD': np.std(f64),
        'SF': np_sf(f64),
        'AG': np_ag(f64),
        'SCD': np_scd(f64, a64, b64),
        'PSNR': np_psnr(f64, a64, b64),
    }


# ------------------------------------------------------------------------------------------

def _one(t):
    s, f, v, i = t
    return s, {k: float(x[0]) for k, x in compute_batch(f, v, i, None, 'paper').items()}


_FORKED = []  # the loaded triples, set before the worker processes fork (they inherit them)


def _one_forked(j):
    return _one(_FORKED[j])


def load_triples(data: Path, fused_dir):
    triples = []
    for vp in sorted((data / 'vi').iterdir()):
        ip = data / 'ir' / vp.name
        vis = np.asarray(Image.open(vp).convert('RGB'))
        ir = np.asarray(Image.open(ip).convert('L'))
        if fused_dir:
            cands = [p for p in Path(fused_dir).iterdir() if p.stem == vp.stem]
            fused = np.asarray(Image.open(cands[0]).convert('RGB'))
        else:
            fused = ((vis.astype(np.uint16) + ir[..., None] + 1) // 2).astype(np.uint8)
        triples.append((vp.stem, fused, vis, ir))
    return triples


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', type=Path, default=DATA, help='folder with vi/ and ir/ (default: MSRS test 20)')
    ap.add_argument('--fused', default=None, help='folder of fused images (default: pixel average of vi and ir)')
    ap.add_argument('--device', default='cpu', help='torch device for the torch side (cpu, cuda)')
    ap.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                    help='CPU: images evaluated concurrently by the torch side (processes, each single-threaded '
                         'torch) [all cores]; the serial single-thread time is always reported too')
    ap.add_argument('--pool', choices=('process', 'thread'), default='process',
                    help="how the workers run: forked processes [default, as mtvif_zoo.evaluate() on Linux] or threads")
    ap.add_argument('--rounds', type=int, default=4,
                    help='interleaved rounds of torch (all pairs) and baseline (a share of the pairs) [4]')
    ap.add_argument('--no-tune-allocator', action='store_true',
                    help="keep glibc's malloc defaults (default: mtvif_zoo.tune_cpu_allocator(), as mtvif eval / "
                         'mtvif bench do; it applies to the whole process, so to both sides)')
    ap.add_argument('--baseline-images', type=int, default=None,
                    help='time the numpy baseline on only the first N images (default: all)')
    args = ap.parse_args()
    if not (args.data / 'vi').is_dir():
        raise SystemExit(f'no data: {args.data}/vi missing (the MSRS pairs ship in ../shared/data)')
    tuned = False
    if not args.no_tune_allocator:
        from mtvif_zoo.fusion import tune_cpu_allocator
        tuned = tune_cpu_allocator()  # before the workers fork: they inherit it
    triples = load_triples(args.data, args.fused)
    n = len(triples)
    dev = torch.device(args.device)
    torch.set_num_threads(1)  # the CPU kernels are single-threaded per op; parallelism is over images
    print(f'{n} pairs from {args.data}, {triples[0][1].shape[1]}x{triples[0][1].shape[0]}, '
          f"convention 'paper', all {len(METRICS)} metrics; torch {torch.__version__} on {dev}, "
          f'numpy {np.__version__}; {os.cpu_count()} CPU cores; allocator '
          + ('tuned (glibc mmap / trim thresholds raised, both sides)' if tuned else "glibc defaults"))

    # loaded as compute() / mtvif_zoo.evaluate() load files: 8-bit images stay uint8
    tens = [(s, *(to_metric_tensor(x, keep_uint8=True)[None].to(dev) for x in (f, v, i))) for s, f, v, i in triples]

    def run_torch(workers):
        """-> (results, seconds of the evaluation itself, seconds to start the worker pool)"""
        t_start = 0.0
        if workers > 1 and args.pool == 'thread':  # evaluate(pool='thread'), the default without fork
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as ex:
                t0 = time.perf_counter()
                out = dict(ex.map(_one, tens))
                t = time.perf_counter() - t0
        elif workers > 1:
            # one process per core (forked, torch single-threaded in each): the per-image work is
            # thousands of small tensor ops, which threads partly serialise on the GIL. The pool is
            # started (all processes forked) before the clock: steady-state throughput, the start-up
            # cost is reported on its own. The workers inherit the loaded images at the fork and get
            # indices (as evaluate()'s workers get file names), not pickled tensors: sending the
            # tensors through shared memory cost 1-4 ms per pair.
            _FORKED[:] = tens
            t0 = time.perf_counter()
            with ProcessPoolExecutor(workers, mp_context=mp.get_context('fork'),
                                     initializer=torch.set_num_threads, initargs=(1,)) as ex:
                ex.submit(int).result()
                t_start = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = dict(ex.map(_one_forked, range(len(tens)), chunksize=max(1, len(tens) // (4 * workers))))
                t = time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            out = dict(map(_one, tens))
            if dev.type == 'cuda':
                torch.cuda.synchronize()
            t = time.perf_counter() - t0
        return out, t, t_start

    _one(tens[0])  # warm-up (CUDA kernels, allocator, LUTs)
    # Rounds that interleave the two sides, so that both see the same machine (the speed of a
    # shared machine drifts by 10-20 % within a minute): each round times the torch side on all
    # pairs (serial, then the workers) and the baseline on its share of the pairs (every pair
    # once over the rounds). The ratio compares the baseline's total with the torch side's time
    # for the same number of pairs in the same rounds.
    nb = min(n, args.baseline_images or n)
    rounds = max(1, min(args.rounds, nb))
    share = [list(range(nb))[r::rounds] for r in range(rounds)]
    np_res, per_round = {}, []
    t_pool = 0.0
    for r in range(rounds):
        torch_res, t_serial, _ = run_torch(1)
        t_par = None
        if dev.type == 'cpu' and args.workers > 1:
            _, t_par, t_pool = run_torch(args.workers)
        t0 = time.perf_counter()
        for j in share[r]:
            s_, f, v, i = triples[j]
            np_res[s_] = numpy_suite(f, v, i)
        per_round.append((len(share[r]), time.perf_counter() - t0, t_serial / n,
                          None if t_par is None else t_par / n))

    worst = {k: max(abs(np_res[s][k] - torch_res[s][k]) for s in np_res) for k in METRICS}
    print('max |torch - numpy| per metric: ' + ', '.join(f'{k} {v:.1e}' for k, v in worst.items()))
    bad = {k: v for k, v in worst.items() if v > 1e-4}
    if bad:
        print(f'WARNING: implementations disagree above 1e-4: {bad}')
    t_np = sum(x[1] for x in per_round)
    per_np = t_np / nb

    # torch time for the baseline's pairs: each round's per-pair time times that round's share
    ser = sum(x[0] * x[2] for x in per_round) / nb
    print(f'{rounds} interleaved rounds (torch side: all {n} pairs per round; baseline: {nb} pairs in all)')
    print(f'numpy/scikit-image baseline (serial):      {per_np * 1000:8.1f} ms/image')
    print(f'mtvif_zoo.metrics, {dev.type}, serial:{" " * (20 - len(dev.type))}{ser * 1000:8.1f} ms/image  '
          f'({1 / ser:.1f} images/s)   speed ratio {t_np / (ser * nb):.1f}x')
    if per_round[0][3] is not None:
        par = sum(x[0] * x[3] for x in per_round) / nb
        print(f'mtvif_zoo.metrics, cpu, {args.workers} '
              f'{args.pool + "es" if args.pool == "process" else args.pool + "s"}:'
              f'{" " * (18 - len(args.pool))}{par * 1000:8.1f} ms/image  '
              f'({1 / par:.1f} images/s)   speed ratio {t_np / (par * nb):.1f}x'
              + (f'   (+{t_pool:.2f} s once to start the processes)' if args.pool == 'process' else ''))
    print('per round (baseline / serial / workers, ms per image): '
          + '; '.join(' / '.join('-' if t is None else f'{t * 1000:.0f}' for t in (x[1] / x[0], x[2], x[3]))
                      for x in per_round))

if __name__ == '__main__':
    main()
