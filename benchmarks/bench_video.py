"""``fuse_video`` vs ``fuse()`` on the same frames (README "Video"): the cost of decoding / encoding.

    python benchmarks/bench_video.py --model seafusion.mfnet220 --frames 6 --size 480x640

Builds a visible and an infrared H.264 clip of ``--frames`` frames from the shipped pair 00036N
(shifted crops of the image, resized to ``--size``), then times ``fuse_video(vis.mp4, ir.mp4,
out.mp4)`` and ``fuse()`` on the already decoded frames as one list (same batch size), alternated
``--rounds`` times; prints frames/s of each and their ratio.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _clip(path, role, n, h, w, fps=10):
    import av
    from PIL import Image
    sub, mode = ('vi', 'RGB') if role == 'vis' else ('ir', 'L')
    img = Image.open(REPO / 'examples' / sub / '00036N.png').convert(mode)
    with av.open(str(path), 'w') as c:
        s = c.add_stream('libx264', rate=fps)
        s.height, s.width, s.pix_fmt = h, w, 'yuv420p'
        for k in range(n):
            f = np.asarray(img.crop((4 * k, 0, 4 * k + 600, 450)).resize((w, h), Image.BILINEAR).convert('RGB'))
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format='rgb24')):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='seafusion.mfnet220')
    p.add_argument('--frames', type=int, default=6)
    p.add_argument('--size', default='480x640')
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    import torch

    import mtvif_zoo
    from mtvif_zoo.fusion import tune_cpu_allocator
    from mtvif_zoo.video import FrameStream, fuse_video
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    h, w = (int(v) for v in args.size.lower().split('x'))
    d = Path(tempfile.mkdtemp())
    _clip(d / 'vis.mp4', 'vis', args.frames, h, w)
    _clip(d / 'ir.mp4', 'ir', args.frames, h, w)
    model = mtvif_zoo.create_model(args.model, pretrained=True)
    vis, ir = list(FrameStream(d / 'vis.mp4', 'visible')), list(FrameStream(d / 'ir.mp4', 'infrared'))
    mtvif_zoo.fuse(vis[:1], ir[:1], model=model)  # warm-up
    times = {'fuse_video': [], 'fuse': []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        fuse_video(d / 'vis.mp4', d / 'ir.mp4', d / 'out.mp4', model=model, batch_size=args.batch_size,
                   progress=False)
        times['fuse_video'].append(time.perf_counter() - t)
        t = time.perf_counter()
        mtvif_zoo.fuse(vis, ir, model=model, batch_size=args.batch_size)
        times['fuse'].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f'{args.model}, {args.frames} frames {h}x{w}, batch {args.batch_size}, {args.threads} threads, '
          f'median of {args.rounds}:')
    for k, v in med.items():
        print(f'  {k:10s} {v:.2f} s  ({args.frames / v:.2f} frames/s)')
    print(f'  fuse_video / fuse() time ratio: {med["fuse_video"] / med["fuse"]:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
