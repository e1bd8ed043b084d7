#!/usr/bin/env python
"""One-shot CUDA check of the fast fuse() path: parity against the CPU result and throughput.

    python tools/cuda_check.py                     # writes into $OUT (or ./cuda_check_out)
    python tools/cuda_check.py --budget-s 400 --out results/

Prepared on a machine without a GPU; nothing here has been run on one yet. It is written to fit
one short device session (default budget 420 s of work after start-up) and to leave partial
results behind if it is cut off: ``cuda_check.json`` and ``cuda_check.md`` are rewritten after
every step.

1. **Parity** (every model of the zoo, random init ``torch.manual_seed(0)``, the example pair
   ``examples/{vi,ir}/00081D.png`` at 480x640): ``fuse()`` on CUDA vs ``fuse()`` on CPU in fp32
   (the CPU fast path, itself within 1e-5 of the plain path), max / mean abs difference of the
   fused image in [0, 1], against these tolerances (TOLERANCES below):

   ===================  =========  ==========  ==================================================
   CUDA run             max abs    mean abs    why
   ===================  =========  ==========  ==================================================
   fp32, TF32 off       1e-4       1e-5        same arithmetic, other summation order
   fp32, TF32 default   1e-2       1e-3        cuDNN convs use TF32 (10-bit mantissa) by default
   fp16 autocast        1e-2       2e-3        CPU fp16 autocast vs fp32: max 4e-4, mean 1e-4
   bf16 autocast        2e-2       4e-3        CPU bf16 autocast vs fp32: max 2.7e-3, mean 9e-4
   ===================  =========  ==========  ==================================================

   (the autocast bounds are ~7x / ~4x the errors measured for CPU autocast on the same pair at
   240x320, where the Ufuser / SeAFusion / MTH variants gave bf16 max 2.4e-3 - 2.7e-3, mean
   5e-5 - 9.3e-4.) Also: a list of 8 pairs fused with ``batch_size=8`` equals the single-pair
   result (same tolerance as its dtype).
2. **Roofline**: the bench's dense conv (``1 x 256 x 128 x 128`` channels_last -> 256, 3x3) in
   fp32 and bf16, timed interleaved with every model run (:mod:`mtvif_zoo.bench`).
3. **Metrics** (``mtvif_zoo.metrics.compute_batch``, all 12, ``paper`` convention, uint8 example
   pair with its pixel-average fusion): CUDA vs CPU per metric (relative difference, tolerance
   METRICS_RTOL: both run in float64 / exact float32 sums), then images/s at batch 1 and at batch 8
   (8 fused images sharing their sources, as ``evaluate()`` batches methods).
4. **Throughput** at 480x640, batch 1 and 8: ``mode='model'`` (the model's inference forward on
   device tensors: what the GPU sustains), fp32 and bf16 eager for every model, then bf16 +
   ``torch.compile`` for the four MultiTaskVIF variants while the budget lasts, then one
   end-to-end ``fuse()`` row (host tensors in, pinned copies) per variant at batch 8 bf16.
   Reported: median images/s, GFLOP/s (plain-path MACs), % of the measured conv roofline in the
   same dtype, and % of the device's nominal dense bf16 peak (BF16_PEAK_TFLOPS, by device name).
"""
import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

#: (max abs, mean abs) tolerances of the fused image vs the CPU fp32 result
TOLERANCES = {'fp32_strict': (1e-4, 1e-5), 'fp32': (1e-2, 1e-3), 'fp16': (1e-2, 2e-3), 'bf16': (2e-2, 4e-3)}
#: nominal dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a substring of the device name
BF16_PEAK_TFLOPS = [('H200', 989.4), ('H100 NVL', 835.0), ('H100 PCIe', 756.0), ('H100', 989.4), ('GH200', 989.4),
                    ('A100', 312.0), ('L40S', 362.1), ('L4', 121.0), ('A10', 125.0), ('RTX 4090', 165.2)]
MTVIF = ['mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv']
#: relative tolerance of a metric on the device vs the CPU (float64 arithmetic, other summation order)
METRICS_RTOL = 1e-9


def bf16_peak(name: str):
    for key, tflops in BF16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops * 1e12
    return None


def example_pair(h=480, w=640):
    from PIL import Image
    vis = Image.open(REPO / 'examples' / 'vi' / '00081D.png').convert('RGB')
    ir = Image.open(REPO / 'examples' / 'ir' / '00081D.png').convert('L')
    if vis.size != (w, h):
        vis, ir = vis.resize((w, h), Image.BILINEAR), ir.resize((w, h), Image.BILINEAR)
    tv = torch.from_numpy(np.array(vis)).permute(2, 0, 1).float() / 255
    ti = torch.from_numpy(np.array(ir)).float()[None] / 255
    return tv, ti


class Report:
    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data = {'env': {}, 'parity': [], 'metrics': {}, 'roofline': {}, 'throughput': [], 'errors': [],
                     'skipped': []}

    def save(self):
        (self.out / 'cuda_check.json').write_text(json.dumps(self.data, indent=2) + '\n')
        (self.out / 'cuda_check.md').write_text(self.markdown())

    def markdown(self) -> str:
        env = self.data['env']
        lines = [f"# cuda_check: {env.get('gpu', '?')}, torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}", '',
                 f"## Parity vs CPU fp32 ({env.get('size', '480x640')}, random init)", '',
                 '| model | run | max abs | mean abs | tolerance (max / mean) | ok |', '|---|---|---|---|---|---|']
        for p in self.data['parity']:
            lines.append(f"| {p['model']} | {p['run']} | {p['max_abs']:.2e} | {p['mean_abs']:.2e} | "
                         f"{p['tol'][0]:.0e} / {p['tol'][1]:.0e} | {'yes' if p['ok'] else '**NO**'} |")
        lines += ['', f"## Throughput at {env.get('size', '480x640')}", '',
                  '| model | dtype | compiled | mode | batch | images/s | GFLOP/s | % conv roofline | % bf16 peak |',
                  '|---|---|---|---|---|---|---|---|---|']
        for r in self.data['throughput']:
            peak = f"{100 * r['bf16_peak_fraction']:.1f} %" if r.get('bf16_peak_fraction') is not None else 'n/a'
            lines.append(f"| {r['model']} | {r['dtype']} | {'yes' if r['compile'] else 'no'} | {r['mode']} | "
                         f"{r['batch']} | {r['images_per_s']:.1f} | {r['gflops']:.0f} | "
                         f"{100 * r['roofline_fraction']:.1f} % | {peak} |")
        met = self.data['metrics']
        if met:
            lines += ['', f"## Metrics (compute_batch, 12 metrics, paper convention, {met['size']})", '',
                      f"max relative difference vs CPU: {met['max_rel_diff']:.1e} ({met['worst_metric']}; "
                      f"tolerance {METRICS_RTOL:.0e}, {'ok' if met['ok'] else '**NO**'}); images/s: batch 1 "
                      f"{met['images_per_s_b1']:.1f}, batch 8 (shared sources) {met['images_per_s_b8']:.1f}"]
        roof = self.data['roofline']
        if roof:
            lines += ['', 'Conv roofline (median GFLOP/s): ' + ', '.join(f'{k} {v:.0f}' for k, v in roof.items())]
        if self.data['errors']:
            lines += ['', '## Errors', ''] + [f"- {e['step']}: {e['error']}" for e in self.data['errors']]
        if self.data['skipped']:
            lines += ['', 'Skipped (budget): ' + ', '.join(self.data['skipped'])]
        return '\n'.join(lines) + '\n'


def parity(rep: Report, models, deadline: float, device='cuda', size=(480, 640)):
    import mtvif_zoo
    tv, ti = example_pair(*size)
    for name in models:
        if time.time() > deadline:
            rep.data['skipped'].append(f'parity {name}')
            continue
        try:
            torch.manual_seed(0)
            m = mtvif_zoo.create_model(name).eval()
            ref = mtvif_zoo.fuse(tv, ti, model=m, amp=False)  # CPU fp32, fast path (bf16 is the default on AMX CPUs)
            m = m.to(device)
            runs = {}
            tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            runs['fp32_strict'] = mtvif_zoo.fuse(tv, ti, model=m, amp=False)
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
            runs['fp32'] = mtvif_zoo.fuse(tv, ti, model=m, amp=False)
            runs['fp16'] = mtvif_zoo.fuse(tv, ti, model=m, amp=True, amp_dtype=torch.float16)
            runs['bf16'] = mtvif_zoo.fuse(tv, ti, model=m, amp=True, amp_dtype=torch.bfloat16)
            batch = mtvif_zoo.fuse([tv] * 8, [ti] * 8, model=m, batch_size=8, amp=True, amp_dtype=torch.bfloat16)
            runs['bf16_batch8_vs_single'] = torch.stack([(b - runs['bf16']).abs().max() for b in batch])
            for run, out in runs.items():
                if run == 'bf16_batch8_vs_single':
                    d_max = float(out.max())
                    d_mean = d_max
                    tol = TOLERANCES['bf16']
                    ok = d_max <= tol[0]
                else:
                    d = (out - ref).abs()
                    d_max, d_mean = float(d.max()), float(d.mean())
                    tol = TOLERANCES[run]
                    ok = d_max <= tol[0] and d_mean <= tol[1]
                rep.data['parity'].append({'model': name, 'run': run, 'max_abs': d_max, 'mean_abs': d_mean,
                                           'tol': list(tol), 'ok': bool(ok)})
            del m
            if device == 'cuda':
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001 - record and go on
            rep.data['errors'].append({'step': f'parity {name}', 'error': repr(e), 'trace': traceback.format_exc()})
        rep.save()
        print(f'parity {name}: ' + ', '.join(f"{p['run']} {p['max_abs']:.1e}{'' if p['ok'] else ' FAIL'}"
                                            for p in rep.data['parity'] if p['model'] == name), flush=True)


def metrics_check(rep: Report, device='cuda', size=(480, 640), reps: int = 10):
    from mtvif_zoo.metrics import METRICS, compute_batch
    try:
        tv, ti = example_pair(*size)
        v8 = (tv * 255).round().to(torch.uint8)[None]
        i8 = (ti * 255).round().to(torch.uint8)[None]
        f8 = ((v8.int() + i8.int() + 1) // 2).to(torch.uint8)
        ref = compute_batch(f8, v8, i8, None, 'paper')
        dev = torch.device(device)
        fd, vd, idd = f8.to(dev), v8.to(dev), i8.to(dev)
        got = compute_batch(fd, vd, idd, None, 'paper')
        rel = {k: float((got[k].cpu() - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-12)) for k in METRICS}
        worst = max(rel, key=rel.get)
        fb = torch.cat([fd, fd.flip(-1), fd.flip(-2), 255 - fd] * 2)

        def timed(f, v, i):
            compute_batch(f, v, i, None, 'paper')
            if dev.type == 'cuda':
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                compute_batch(f, v, i, None, 'paper')
            if dev.type == 'cuda':
                torch.cuda.synchronize()
            return reps * f.shape[0] / (time.perf_counter() - t0)
        rep.data['metrics'] = {'size': f'{size[0]}x{size[1]}', 'rel_diff': rel, 'max_rel_diff': rel[worst],
                               'worst_metric': worst,
                               'ok': rel[worst] <= METRICS_RTOL, 'images_per_s_b1': timed(fd, vd, idd),
                               'images_per_s_b8': timed(fb, vd, idd)}
        print(f"metrics: max rel diff {rel[worst]:.1e} ({worst}), {rep.data['metrics']['images_per_s_b1']:.1f} img/s "
              f"(batch 1), {rep.data['metrics']['images_per_s_b8']:.1f} img/s (batch 8)", flush=True)
    except Exception as e:  # noqa: BLE001
        rep.data['errors'].append({'step': 'metrics', 'error': repr(e), 'trace': traceback.format_exc()})
    rep.save()


def throughput(rep: Report, deadline: float, quick: bool, device='cuda', size=(480, 640)):
    from mtvif_zoo.bench import _Roofline, bench
    from mtvif_zoo.models.multitaskvif import VARIANTS
    dev = torch.device(device)
    roofs = {dt: _Roofline(dev, dt) for dt in ('fp32', 'bf16')}
    peak = bf16_peak(torch.cuda.get_device_name(0)) if dev.type == 'cuda' else None
    rows = []
    models = MTVIF if quick else list(VARIANTS)
    for batch in (8, 1):
        for dtype in ('bf16', 'fp32'):
            rows += [(name, dtype, False, 'model', batch) for name in models]
    if dev.type == 'cuda':
        rows += [(name, 'bf16', True, 'model', batch) for batch in (8, 1) for name in MTVIF]
    rows += [(name, 'bf16', False, 'fuse', 8) for name in MTVIF]
    roof_runs = {'fp32': [], 'bf16': []}
    for name, dtype, comp, mode, batch in rows:
        tag = f'{name} {dtype}{" compiled" if comp else ""} {mode} b{batch}'
        if time.time() > deadline - (90 if comp else 10):
            rep.data['skipped'].append(tag)
            continue
        try:
            r = bench(name, size=size, batch=batch, device=device, dtype=dtype, compile=comp, mode=mode,
                      warmup=3 if dev.type == 'cuda' else 0, runs=5 if dev.type == 'cuda' else 1,
                      roof=roofs[dtype]).as_dict()
            r['bf16_peak_fraction'] = 2 * r['macs_per_image'] * r['batch'] / r['time_median_s'] / peak if peak else None
            rep.data['throughput'].append(r)
            roof_runs[dtype] += r['roofline_runs_gflops']
            rep.data['roofline'] = {k: float(np.median(v)) for k, v in roof_runs.items() if v}
            print(f"{tag}: {r['images_per_s']:.1f} img/s, {100 * r['roofline_fraction']:.1f} % roofline"
                  + (f", {100 * r['bf16_peak_fraction']:.1f} % bf16 peak" if peak else ''), flush=True)
        except Exception as e:  # noqa: BLE001
            rep.data['errors'].append({'step': tag, 'error': repr(e), 'trace': traceback.format_exc()})
            print(f'{tag}: ERROR {e!r}', flush=True)
        if dev.type == 'cuda':
            torch.cuda.empty_cache()
        rep.save()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=os.environ.get('OUT') or 'cuda_check_out')
    ap.add_argument('--budget-s', type=float, default=420, help='stop starting new work after this many seconds')
    ap.add_argument('--quick', action='store_true', help='the four MultiTaskVIF variants only')
    ap.add_argument('--dry-run-cpu', action='store_true',
                    help='exercise the script on the CPU at 64x96 (no compile rows): checks the script, not CUDA')
    args = ap.parse_args(argv)
    if args.dry_run_cpu:
        rep = Report(Path(args.out))
        rep.data['env'] = {'torch': torch.__version__, 'gpu': 'none (dry run on CPU)', 'cuda': None, 'size': '64x96'}
        t0 = time.time()
        parity(rep, MTVIF[:2], t0 + args.budget_s, device='cpu', size=(64, 96))
        metrics_check(rep, device='cpu', size=(240, 320), reps=1)
        throughput(rep, time.time() + 10 ** 6, True, device='cpu', size=(64, 96))
        print(rep.markdown())
        return 0
    t0 = time.time()
    deadline = t0 + args.budget_s
    rep = Report(Path(args.out))
    env = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(),
           'cpu_threads': torch.get_num_threads(), 'budget_s': args.budget_s}
    if not torch.cuda.is_available():
        rep.data['env'] = env
        rep.save()
        print('no CUDA device: nothing to check', file=sys.stderr)
        return 2
    env.update(gpu=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
               bf16_supported=torch.cuda.is_bf16_supported(), bf16_peak_tflops=(bf16_peak(torch.cuda.get_device_name(0))
                                                                               or 0) / 1e12 or None,
               cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
               matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    rep.data['env'] = env
    rep.save()
    print(json.dumps(env), flush=True)
    from mtvif_zoo.models.multitaskvif import VARIANTS
    models = MTVIF if args.quick else list(VARIANTS)
    # parity first (the most important), at most ~40 % of the budget
    parity(rep, models, t0 + 0.4 * args.budget_s)
    metrics_check(rep)
    throughput(rep, deadline, args.quick)
    rep.data['env']['elapsed_s'] = time.time() - t0
    rep.save()
    bad = [p for p in rep.data['parity'] if not p['ok']] + ([rep.data['metrics']] if rep.data['metrics']
                                                             and not rep.data['metrics']['ok'] else [])
    print(rep.markdown())
    print(f"done in {time.time() - t0:.0f} s; parity failures: {len(bad)}; errors: {len(rep.data['errors'])}; "
          f"skipped: {len(rep.data['skipped'])}; wrote {rep.out / 'cuda_check.json'}")
    return 1 if bad or rep.data['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
