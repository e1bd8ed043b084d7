"""Training memory with and without gradient checkpointing (``model.set_grad_checkpointing()``).

    python benchmarks/bench_grad_checkpointing.py                      # 4 variants, 1x3x256x256, CPU
    python benchmarks/bench_grad_checkpointing.py --models mtvif_i --size 128 --batch-size 2 --device cuda

One training step (forward in training mode: fused image + segmentation logits, ``mean`` of both as
the loss, backward). Peak memory of the step:

* CUDA: ``torch.cuda.max_memory_allocated`` minus what was allocated before the step;
* CPU: the process's peak resident set size during the step minus the RSS before it (Linux: the
  kernel's high-water mark, reset before each step; see :class:`mtvif_zoo.bench._PeakRSS`), after
  a warm-up step so that the allocator and the weights' gradients are already in place.

Prints one row per model: peak without, peak with, their ratio, and the step time ratio (the
recomputation's cost), both measured in this run.
"""
import argparse
import time

import torch

import mtvif_zoo
from mtvif_zoo.bench import _malloc_trim, _PeakRSS


def _step(model, vis, ir):
    fused, seg = model(vis, ir)
    loss = fused.float().mean() + (seg.float().mean() if seg is not None else 0)
    loss.backward()


def measure(model, vis, ir, device):
    _step(model, vis, ir)  # warm-up: gradients allocated, kernels chosen
    model.zero_grad(set_to_none=False)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        t = time.perf_counter()
        _step(model, vis, ir)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20, time.perf_counter() - t, 'cuda'
    _malloc_trim()
    with _PeakRSS() as peak:
        t = time.perf_counter()
        _step(model, vis, ir)
        dt = time.perf_counter() - t
    return (peak.peak - peak.base) / 2 ** 20, dt, f'rss-{peak.method}'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv'])
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f'device {device}, {args.batch_size}x3x{args.size}x{args.size}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads')
    print(f'{"model":<10} {"peak off MiB":>13} {"peak on MiB":>12} {"on/off":>7} {"time on/off":>12}  method')
    for name in args.models:
        model = mtvif_zoo.create_model(name).to(device).train()
        vis = torch.rand(args.batch_size, 3, args.size, args.size, device=device)
        ir = torch.rand_like(vis)
        rows = []
        for enable in (False, True):
            model.set_grad_checkpointing(enable)
            rows.append(measure(model, vis, ir, device))
        (m0, t0, method), (m1, t1, _) = rows
        print(f'{name:<10} {m0:>13.1f} {m1:>12.1f} {m1 / m0:>7.2f} {t1 / t0:>12.2f}  {method}')
        del model
        _malloc_trim()


if __name__ == '__main__':
    main()
