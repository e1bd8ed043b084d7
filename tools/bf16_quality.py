"""bf16 vs fp32 fused images of the published weights on a test set (issue 16's quality bar).

    python tools/bf16_quality.py --models mtvif_iv,mtvif_iii,mtvif_ii,seafusion,mtvif_i \
        --data ../shared/data/msrs_test20 --json results/bf16/quality_msrs_test20.json

For every model and pair: ``fuse(amp=False)`` (fp32) and ``fuse(amp=True)`` (bf16 on the CPU), the
published weights, batch 1. Where the CPU has oneDNN bf16 kernels they run; elsewhere their
arithmetic is emulated on the fp32 kernels (``mtvif_zoo.models.layers._fast.emulate_bf16_kernels``:
operands and outputs of every kernel rounded to bf16, fp32 accumulation; ~1.5x the fp32 time), or
with ``--reference`` PyTorch's reference bf16 kernels run (what ``fuse(amp=True)`` itself does
there; ~10x the fp32 time). The JSON records which. Reported per model:

* the float fused images ([0, 1], before 8-bit rounding): mean and max absolute difference, in
  units of 1/255;
* the 8-bit fused images (``fuse()``'s PIL output, what a user saves): mean and max absolute
  difference in grey levels;
* the paper's 7 metrics (EN, MI, VIF, Qabf, SSIM, MS-SSIM, dE; convention ``paper``) of both sets
  of 8-bit images, their relative differences, and whether each is within 0.5 %.

The bar (issue 16): mean <= 0.5/255, max <= 4/255, every metric within 0.5 % relative. The JSON is
rewritten after each model, so a long run keeps what it has finished.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PAPER_METRICS = ('EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'MS_SSIM', 'dE')  # Tables 4-5
BAR = {'mean_255': 0.5, 'max_255': 4.0, 'metric_rel': 0.005}


def _pairs(data: Path):
    vis = {p.stem: p for p in sorted((data / 'vi').iterdir()) if p.suffix.lower() in ('.png', '.jpg', '.bmp')}
    ir = {p.stem: p for p in sorted((data / 'ir').iterdir()) if p.suffix.lower() in ('.png', '.jpg', '.bmp')}
    return [(s, vis[s], ir[s]) for s in sorted(vis) if s in ir]


def compare(name: str, pairs, log=print, reference: bool = False):
    """fp32 vs bf16 fused images and metrics of one published model on ``pairs``."""
    import mtvif_zoo
    from mtvif_zoo.evaluate import evaluate
    from mtvif_zoo.fusion import _from_tensor, _fuse_tensors, _ir_to_grey, _Meta, to_tensor_image
    from mtvif_zoo.models.layers._fast import bf16_kernels_available, emulate_bf16_kernels
    emulate = not bf16_kernels_available() and not reference

    model = mtvif_zoo.create_model(name, pretrained=True).eval()
    diffs_f, diffs_u8, t32, t16 = [], [], 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        out = {'fp32': Path(tmp) / 'fp32', 'bf16': Path(tmp) / 'bf16'}
        for d in out.values():
            d.mkdir()
        for stem, vp, ip in pairs:
            v, _ = to_tensor_image(str(vp), 'visible')
            i, _ = to_tensor_image(str(ip), 'infrared', 'minmax')
            i = _ir_to_grey(i)
            res = {}
            with torch.inference_mode():
                for key, amp in (('fp32', False), ('bf16', True)):
                    t0 = time.perf_counter()
                    with emulate_bf16_kernels() if (amp and emulate) else contextlib.nullcontext():
                        res[key] = _fuse_tensors(model, v, i, torch.device('cpu'), None, 32, amp, None)
                    dt = time.perf_counter() - t0
                    t32, t16 = (t32 + dt, t16) if key == 'fp32' else (t32, t16 + dt)
            d = (res['bf16'] - res['fp32']).abs() * 255
            diffs_f.append((float(d.mean()), float(d.max())))
            u8 = {}
            for key, img in res.items():
                # fuse()'s own conversion to an 8-bit image (PIL output)
                pil = _from_tensor(img, _Meta('pil', 'HWC'))
                pil.save(out[key] / f'{stem}.png')
                u8[key] = np.asarray(pil).astype(np.int16)
            du = np.abs(u8['bf16'] - u8['fp32'])
            diffs_u8.append((float(du.mean()), float(du.max())))
            log(f'  {name} {stem}: float mean {diffs_f[-1][0]:.3f} max {diffs_f[-1][1]:.3f} /255; '
                f'8-bit mean {diffs_u8[-1][0]:.3f} max {diffs_u8[-1][1]:.0f}')
        data = Path(pairs[0][1]).parent.parent
        ev = evaluate(tmp, data / 'vi', data / 'ir', metrics=list(PAPER_METRICS), convention='paper',
                      progress=False, workers=1, pool='thread')
    m32, m16 = ev.summary['fp32'], ev.summary['bf16']
    rel = {k: abs(m16[k] - m32[k]) / max(abs(m32[k]), 1e-12) for k in PAPER_METRICS}
    row = {
        'model': name, 'pairs': len(pairs),
        'bf16_kernels': ('oneDNN bf16' if bf16_kernels_available() else
                         'oneDNN bf16 emulated on fp32 kernels (bf16-rounded operands and outputs; no oneDNN bf16 on '
                         'this CPU)' if emulate else 'PyTorch reference bf16 (no oneDNN bf16 on this CPU)'),
        'float_mean_abs_255': float(np.mean([a for a, _ in diffs_f])),
        'float_max_abs_255': float(max(b for _, b in diffs_f)),
        'u8_mean_abs': float(np.mean([a for a, _ in diffs_u8])),
        'u8_max_abs': float(max(b for _, b in diffs_u8)),
        'metrics_fp32': {k: float(m32[k]) for k in PAPER_METRICS},
        'metrics_bf16': {k: float(m16[k]) for k in PAPER_METRICS},
        'metrics_rel_diff': rel,
        'fuse_seconds_fp32': t32, 'fuse_seconds_bf16': t16,
        'per_pair': [{'pair': s, 'float_mean_255': a, 'float_max_255': b, 'u8_mean': c, 'u8_max': e}
                     for (s, _, _), (a, b), (c, e) in zip(pairs, diffs_f, diffs_u8)],
    }
    row['within_bar'] = (row['float_mean_abs_255'] <= BAR['mean_255'] and row['float_max_abs_255'] <= BAR['max_255']
                         and all(v <= BAR['metric_rel'] for v in rel.values()))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--models', default='mtvif_iv,mtvif_iii,mtvif_ii,seafusion,mtvif_i')
    ap.add_argument('--data', default='../shared/data/msrs_test20')
    ap.add_argument('--limit', type=int, help='only the first N pairs')
    ap.add_argument('--json', help='write the report here (rewritten after each model)')
    ap.add_argument('--reference', action='store_true',
                    help="without oneDNN bf16 kernels: PyTorch's reference bf16 kernels instead of the emulation")
    args = ap.parse_args(argv)
    from mtvif_zoo.bench import environment
    data = Path(args.data)
    if not (data / 'vi').is_dir():
        print(f'no test set at {data} (needs vi/ and ir/)', file=sys.stderr)
        return 2
    pairs = _pairs(data)[:args.limit]
    report = {'command': 'python tools/bf16_quality.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
              'env': environment(), 'data': str(data), 'bar': BAR, 'rows': []}
    for name in [m.strip() for m in args.models.split(',') if m.strip()]:
        row = compare(name, pairs, log=lambda s: print(s, file=sys.stderr, flush=True), reference=args.reference)
        report['rows'].append(row)
        rel = ', '.join(f'{k} {100 * v:.3f} %' for k, v in row['metrics_rel_diff'].items())
        print(f'{name}: float |diff| mean {row["float_mean_abs_255"]:.3f} / max {row["float_max_abs_255"]:.3f} (/255), '
              f'8-bit mean {row["u8_mean_abs"]:.3f} / max {row["u8_max_abs"]:.0f}; metrics rel. diff: {rel}; '
              f'{"within" if row["within_bar"] else "OUTSIDE"} the bar', flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            report['env']['time_end'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
            Path(args.json).write_text(json.dumps(report, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
