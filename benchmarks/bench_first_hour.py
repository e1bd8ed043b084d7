"""What a new user meets first (README "Performance" / "Command line"): CLI start-up and plain ``fuse()`` calls.

    python benchmarks/bench_first_hour.py startup --runs 5
    python benchmarks/bench_first_hour.py fuse --model mtvif_iv.mfnet220 --size 480x640 --calls 3 --rounds 2

* ``startup``: wall time of ``python -m mtvif_zoo --help`` (no torch import) next to
  ``python -c "import mtvif_zoo"`` (what every start-up cost before, the library import), fresh
  processes, alternated; medians and their ratio.
* ``fuse``: seconds per ``mtvif_zoo.fuse(vis_path, ir_path, model=model)`` call on the shipped
  pair resized to ``--size``, repeated ``--calls`` times in one process, in a process that leaves
  glibc's allocator alone (what a plain script gets) and in one that calls ``tune_cpu_allocator()``
  first (what ``mtvif fuse`` and ``mtvif bench`` do); the two kinds of process alternate for
  ``--rounds`` rounds (the setting is process-wide, so it cannot alternate inside one process).
  Prints the median of the calls after the first of each process (the first pays one-off costs)
  and the ratio.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_FUSE_CHILD = r'''
import json, sys, time, tempfile
import numpy as np
from PIL import Image
import torch, mtvif_zoo
from mtvif_zoo.fusion import tune_cpu_allocator
model_name, h, w, calls, tuned, threads = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                           sys.argv[5] == '1', int(sys.argv[6]))
torch.set_num_threads(threads)
if tuned:
    tune_cpu_allocator()
from pathlib import Path
d = Path(tempfile.mkdtemp())
ex = Path(sys.argv[7])
Image.open(ex / 'vi' / '00036N.png').convert('RGB').resize((w, h), Image.BILINEAR).save(d / 'v.png')
Image.open(ex / 'ir' / '00036N.png').convert('L').resize((w, h), Image.BILINEAR).save(d / 'i.png')
model = mtvif_zoo.create_model(model_name, pretrained=True)
times = []
for _ in range(calls):
    t = time.perf_counter()
    mtvif_zoo.fuse(str(d / 'v.png'), str(d / 'i.png'), model=model)
    times.append(time.perf_counter() - t)
print(json.dumps(times))
'''


def startup(args):
    cmds = {'mtvif --help': [sys.executable, '-m', 'mtvif_zoo', '--help'],
            'import mtvif_zoo': [sys.executable, '-c', 'import mtvif_zoo']}
    times = {k: [] for k in cmds}
    for _ in range(args.runs):
        for k, cmd in cmds.items():
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f'{k:18s} median {med[k]:.2f} s   runs: ' + ' '.join(f'{t:.2f}' for t in v))
    print(f'ratio import / --help: {med["import mtvif_zoo"] / med["mtvif --help"]:.1f}x')


def fuse(args):
    h, w = (int(v) for v in args.size.lower().split('x'))
    per = {'plain': [], 'tuned': []}
    for _ in range(args.rounds):
        for kind in ('plain', 'tuned'):
            out = subprocess.run([sys.executable, '-c', _FUSE_CHILD, args.model, str(h), str(w), str(args.calls),
                                  '1' if kind == 'tuned' else '0', str(args.threads), str(REPO / 'examples')],
                                 check=True, capture_output=True, text=True, cwd=REPO)
            times = json.loads(out.stdout.strip().splitlines()[-1])
            print(f'{kind:6s} process: ' + ' '.join(f'{t:.2f}' for t in times) + ' s per call')
            per[kind] += times[1:]
    med = {k: statistics.median(v) for k, v in per.items()}
    print(f'{args.model} {h}x{w}, {args.threads} threads, median of calls 2..{args.calls} over {args.rounds} '
          f'rounds: plain fuse() {med["plain"]:.2f} s, after tune_cpu_allocator() {med["tuned"]:.2f} s, '
          f'ratio plain / tuned {med["plain"] / med["tuned"]:.2f}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='what', required=True)
    s = sub.add_parser('startup')
    s.add_argument('--runs', type=int, default=5)
    f = sub.add_parser('fuse')
    f.add_argument('--model', default='mtvif_iv.mfnet220')
    f.add_argument('--size', default='480x640')
    f.add_argument('--calls', type=int, default=3)
    f.add_argument('--rounds', type=int, default=2)
    f.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    {'startup': startup, 'fuse': fuse}[args.what](args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
