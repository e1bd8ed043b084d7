"""Speed figures of the README that ``mtvif bench`` does not produce itself.

    python benchmarks/bench_fuse.py train --models mtvif_iii,mtvif_ii       # training samples/s, plain vs fast
    python benchmarks/bench_fuse.py tiling --models seafusion,mtvif_iii     # tiled vs untiled at 1024^2
    python benchmarks/bench_fuse.py memory --models mtvif_iii               # peak RSS, 4096^2 pair, tile=512

* ``train``: one training step as :class:`mtvif_zoo.train.Trainer` takes it (``benchmarks/bench_train.py``'s
  ``_step``: training-mode forward, the Sec. 3.4 loss, backward, Adam) on random inputs, *before*
  (``plain_path()`` + ``set_fused_attn(model, False)``: NCHW, the original formulations, Swin's
  original roll / partition / softmax window attention with its mask rebuilt per call) and
  *after* (the fast path: channels_last, HIA-F's Gram formulation, Ufuser's folded channel
  attention, Swin's cached window permutation, folded BN in eval only), alternated step by step
  in one process; median samples/s of each.
* ``tiling`` / ``memory``: see README "Tiling".
"""
import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _example(size):
    from PIL import Image
    h, w = size
    vis = Image.open(REPO / 'examples' / 'vi' / '00081D.png').convert('RGB').resize((w, h), Image.BILINEAR)
    ir = Image.open(REPO / 'examples' / 'ir' / '00081D.png').convert('L').resize((w, h), Image.BILINEAR)
    return (torch.from_numpy(np.array(vis)).permute(2, 0, 1).float() / 255,
            torch.from_numpy(np.array(ir)).float()[None] / 255)


def train(args):
    import mtvif_zoo
    from mtvif_zoo.losses import MultiTaskVIFLoss
    from mtvif_zoo.models.backbones.swinfusion import set_fused_attn
    from mtvif_zoo.models.layers._fast import plain_path
    spec = importlib.util.spec_from_file_location('bench_train', REPO / 'benchmarks' / 'bench_train.py')
    bt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bt)
    out = {}
    for name in args.models.split(','):
        torch.manual_seed(0)
        model = mtvif_zoo.create_model(name).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)
        loss_fn = MultiTaskVIFLoss()
        g = torch.Generator().manual_seed(0)
        vis = torch.rand(args.batch_size, 3, args.crop, args.crop, generator=g)
        ir = torch.rand(args.batch_size, 1, args.crop, args.crop, generator=g)
        labels = torch.randint(0, 9, (args.batch_size, args.crop, args.crop), generator=g)
        times = {'before': [], 'after': []}
        for step in range(args.warmup + args.steps):
            for which in ('before', 'after'):
                t0 = time.perf_counter()
                if which == 'before':
                    set_fused_attn(model, False)  # no-op without Swin blocks
                    try:
                        with plain_path():
                            bt._step(model, opt, loss_fn, vis, ir, labels, None, None)
                    finally:
                        set_fused_attn(model, True)
                else:
                    bt._step(model, opt, loss_fn, vis, ir, labels, None, None)
                if step >= args.warmup:
                    times[which].append(time.perf_counter() - t0)
        sps = {k: args.batch_size / statistics.median(v) for k, v in times.items()}
        out[name] = {'crop': args.crop, 'batch_size': args.batch_size, 'steps': args.steps,
                     'samples_per_s_before': sps['before'], 'samples_per_s_after': sps['after'],
                     'speedup': sps['after'] / sps['before'], 'threads': torch.get_num_threads()}
        print(f"{name}: {sps['before']:.2f} -> {sps['after']:.2f} samples/s ({sps['after'] / sps['before']:.2f}x), "
              f'crop {args.crop}, batch {args.batch_size}, median of {args.steps} steps', flush=True)
    return out


def tiling(args):
    import mtvif_zoo
    tv, ti = _example((1024, 1024))
    out = {}
    for name in args.models.split(','):
        torch.manual_seed(0)
        m = mtvif_zoo.create_model(name).eval()
        whole = mtvif_zoo.fuse(tv, ti, model=m)
        tiled = mtvif_zoo.fuse(tv, ti, model=m, tile=512, overlap=32)
        d = (whole - tiled).abs()
        out[name] = {'max_abs': float(d.max()), 'mean_abs': float(d.mean()),
                     'frac_8bit_levels_differ': float(((whole * 255).round() != (tiled * 255).round()).float().mean())}
        print(f"{name}: max {out[name]['max_abs']:.2e}, mean {out[name]['mean_abs']:.2e}, "
              f"8-bit values differing {100 * out[name]['frac_8bit_levels_differ']:.3f} %", flush=True)
    return out


_MEM = r'''
import sys, time, numpy as np, torch, mtvif_zoo
def hwm_kb():  # this process's peak RSS (VmHWM is per address space: not inherited over exec, unlike ru_maxrss)
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])
torch.set_num_threads({threads})
m = mtvif_zoo.create_model('{name}').eval()
rng = np.random.default_rng(0)
vis = rng.integers(0, 256, ({n}, {n}, 3), dtype=np.uint8); ir = rng.integers(0, 256, ({n}, {n}), dtype=np.uint8)
before = hwm_kb()
t = time.perf_counter()
out = mtvif_zoo.fuse(vis, ir, model=m, tile={tile}, overlap=32)
print(before, hwm_kb(), time.perf_counter() - t)
'''


def memory(args):
    out = {}
    for name in args.models.split(','):
        code = _MEM.format(name=name, n=args.n, tile=args.tile, threads=torch.get_num_threads())
        res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-2000:], file=sys.stderr)
            continue
        before, peak, secs = res.stdout.split()[-3:]
        out[name] = {'n': args.n, 'tile': args.tile, 'peak_rss_gib': int(peak) / 2 ** 20,
                     'rss_before_fuse_gib': int(before) / 2 ** 20, 'seconds': float(secs)}
        print(f"{name} {args.n}x{args.n} tile {args.tile}: peak RSS {out[name]['peak_rss_gib']:.2f} GiB "
              f"(process before fuse {out[name]['rss_before_fuse_gib']:.2f} GiB), {float(secs):.0f} s", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--threads', type=int)
    ap.add_argument('--json')
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('train')
    p.add_argument('--models', default='mtvif_iii,mtvif_ii')
    p.add_argument('--crop', type=int, default=256)
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p = sub.add_parser('tiling')
    p.add_argument('--models', default='seafusion,segmif,emma_ufuser,mtvif_iii')
    p = sub.add_parser('memory')
    p.add_argument('--models', default='mtvif_iii')
    p.add_argument('--n', type=int, default=4096)
    p.add_argument('--tile', type=int, default=512)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = {'train': train, 'tiling': tiling, 'memory': memory}[args.cmd](args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
