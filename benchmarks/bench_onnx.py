"""onnxruntime (CPU) vs ``mtvif_zoo.fuse()`` on one 480x640 pair (README "Deployment: ONNX").

    python benchmarks/bench_onnx.py --model mtvif_iv.mfnet220 --size 480x640 --threads 2 --runs 5

Exports the model with :func:`mtvif_zoo.deploy.export_onnx` (or takes ``--onnx FILE``), then times
``fuse()`` on float tensors (the eager fast path, after ``tune_cpu_allocator()`` as ``mtvif bench``
does) and ``InferenceSession.run`` on the same shipped pair (examples/, resized), alternating the
two run by run after ``--warmup`` warm-up runs of each; prints the median seconds of each, their
ratio and the max abs difference between the two outputs. Both use ``--threads`` intra-op threads.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _pair(h, w):
    from PIL import Image
    vis = Image.open(REPO / 'examples' / 'vi' / '00036N.png').convert('RGB').resize((w, h), Image.BILINEAR)
    ir = Image.open(REPO / 'examples' / 'ir' / '00036N.png').convert('L').resize((w, h), Image.BILINEAR)
    return (torch.from_numpy(np.array(vis)).permute(2, 0, 1).float()[None] / 255,
            torch.from_numpy(np.array(ir)).float()[None, None] / 255)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='mtvif_iv.mfnet220')
    p.add_argument('--onnx', help='an exported file (default: export to a temporary file first)')
    p.add_argument('--size', default='480x640', help='HxW')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import mtvif_zoo
    from mtvif_zoo.deploy import FusionGraph, export_onnx, onnx_session
    from mtvif_zoo.fusion import tune_cpu_allocator

    tune_cpu_allocator()
    h, w = (int(v) for v in args.size.lower().split('x'))
    model = mtvif_zoo.create_model(args.model, pretrained=True)
    path = args.onnx
    if path is None:
        path = Path(tempfile.mkdtemp()) / 'model.onnx'
        t = time.perf_counter()
        export_onnx(FusionGraph(model), path)
        print(f'exported {args.model} to {path} in {time.perf_counter() - t:.1f} s')
    session = onnx_session(path, threads=args.threads)
    vis, ir = _pair(h, w)
    feed = {'vis': vis.numpy(), 'ir': ir.numpy()}
    times = {'fuse': [], 'onnxruntime': []}
    outs = {}
    for k in range(args.warmup + args.runs):
        for which in ('fuse', 'onnxruntime'):
            t = time.perf_counter()
            if which == 'fuse':
                outs[which] = mtvif_zoo.fuse(vis, ir, model=model).numpy()
            else:
                outs[which] = session.run(['fused'], feed)[0]
            if k >= args.warmup:
                times[which].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = float(np.abs(outs['fuse'] - outs['onnxruntime']).max())
    print(f'{args.model} 1x3x{h}x{w}, {args.threads} threads, median of {args.runs} (after {args.warmup} warm-up):')
    for k in times:
        print(f'  {k:12s} {med[k]:.3f} s   runs: ' + ' '.join(f'{t:.3f}' for t in times[k]))
    print(f'  onnxruntime / fuse() time ratio: {med["onnxruntime"] / med["fuse"]:.2f}   '
          f'max |onnx - fuse| = {diff:.2e}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
