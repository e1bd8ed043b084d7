"""Training throughput and peak memory of each variant at the paper's crop size.

    python benchmarks/bench_train.py                       # CPU (or CUDA when available), all 4 variants
    python benchmarks/bench_train.py --models mtvif_iii --batch-size 16 --steps 10 --device cuda

One training step = what :class:`mtvif_zoo.train.Trainer` does: forward in training mode (fused
image + segmentation logits), the full Sec. 3.4 loss, backward, Adam step (AMP on CUDA as in the
trainer). Throughput = samples / wall time over ``--steps`` steps after ``--warmup`` steps, on
random inputs at the recipe crop (I: 160, II-IV: 256) and ``--batch-size`` (default: the recipe's
on CUDA, 2 on CPU where the recipe batch would take minutes per step).

Peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` over the measured steps (weights, Adam state,
  activations, gradients), and the same for one 256x256 sample (``per 256^2 sample``), which is
  what Table 7 reports (III 245.68 MB, IV 214.52 MB);
* CPU: the allocator gives no peak, so ``per 256^2 sample`` is :func:`mtvif_zoo.profile`'s
  estimate (the tensors autograd saves for backward + parameters + gradients, one 256x256 sample),
  and ``peak RSS`` is the process's resident-set high-water mark (``resource.getrusage``), which
  includes the Python / torch runtime and is an upper bound.

fp32 vs bf16 (``--amp-compare``): for each model, one fp32 and one bf16 copy (same initial weights)
take turns, ``--rounds`` rounds of ``--steps`` steps each (interleaved, so a change in the machine's
load hits both), after ``--warmup`` steps of each; prints each mode's samples/s (median over
rounds) and the bf16 / fp32 ratio. bf16 = ``torch.autocast(device, torch.bfloat16)`` around the
forward pass, as ``mtvif train --amp bf16`` (loss, gradients, Adam state and weights fp32).

Loss curves (``--loss-curve N --data DIR``): two runs of the real trainer
(:class:`mtvif_zoo.train.Trainer`, same seed, so the same initial weights, batches, crops and
flips), fp32 and bf16, N steps each; prints the per-step total, fusion and segmentation losses
side by side with the relative difference of the totals.

    python benchmarks/bench_train.py --amp-compare --crop 128 --batch-size 8 --rounds 3 --steps 2
    python benchmarks/bench_train.py --loss-curve 50 --data ../shared/data/mfnet220 --splits clean \
        --models mtvif_iii --crop 128 --batch-size 8
"""
import argparse
import resource
import statistics
import sys
import tempfile
import time

import torch

import mtvif_zoo
from mtvif_zoo.losses import MultiTaskVIFLoss
from mtvif_zoo.profile import TABLE7
from mtvif_zoo.train import RECIPES, model_inputs
from mtvif_zoo.train.trainer import cpu_has_fast_bf16


def _step(model, opt, loss_fn, vis, ir, labels, amp_dtype, scaler):
    v, i = model_inputs(vis, ir, model.in_chans)
    ctx = torch.autocast(vis.device.type, dtype=amp_dtype) if amp_dtype is not None else torch.autocast(
        vis.device.type, enabled=False)
    with ctx:
        fused, logits = model(v, i)
    out = loss_fn(fused, v, i, logits, labels if logits is not None else None)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(out.total).backward()
        scaler.step(opt)
        scaler.update()
    else:
        out.total.backward()
        opt.step()
    return out.total.detach()


def bench(name: str, device: torch.device, batch_size: int, steps: int, warmup: int, crop=None):
    recipe = RECIPES[name]
    crop = crop or recipe['crop']
    torch.manual_seed(0)
    model = mtvif_zoo.create_model(name).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=recipe['lr'])
    loss_fn = MultiTaskVIFLoss()
    cuda = device.type == 'cuda'
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    scaler = torch.amp.GradScaler('cuda') if amp_dtype == torch.float16 else None
    g = torch.Generator().manual_seed(0)

    def batch(b, size):
        vis = torch.rand(b, 3, size, size, generator=g).to(device)
        ir = torch.rand(b, 1, size, size, generator=g).to(device)
        lab = torch.randint(0, 9, (b, size, size), generator=g).to(device)
        return vis, ir, lab

    data = batch(batch_size, crop)
    for _ in range(warmup):
        _step(model, opt, loss_fn, *data, amp_dtype, scaler)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = _step(model, opt, loss_fn, *data, amp_dtype, scaler)
    loss.item()
    if cuda:
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    res = {'model': name, 'crop': crop, 'batch': batch_size, 'samples_per_s': steps * batch_size / dt,
           's_per_step': dt / steps}
    if cuda:
        res['peak_mb'] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        # one 256x256 sample, as Table 7 (weights + grads + Adam state + activations of that step)
        one = batch(1, 256)
        _step(model, opt, loss_fn, *one, amp_dtype, scaler)
        torch.cuda.synchronize(device)
        opt.zero_grad(set_to_none=True)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _step(model, opt, loss_fn, *one, amp_dtype, scaler)
        torch.cuda.synchronize(device)
        res['per_sample_256_mb'] = (torch.cuda.max_memory_allocated(device) - base +
                                    sum(p.numel() * p.element_size() for p in model.parameters())) / 2 ** 20
        res['memory_method'] = 'cuda max_memory_allocated'
    else:
        res['peak_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        res['per_sample_256_mb'] = mtvif_zoo.profile(model.cpu(), size=(256, 256)).train_memory_mb
        res['memory_method'] = 'profile(): saved activations + params + grads; peak = process max RSS'
    res['table7_mb'] = TABLE7.get(name, (None, None, None))[2]
    return res


def amp_compare(name: str, device: torch.device, batch_size: int, steps: int, warmup: int, rounds: int,
                crop=None):
    """fp32 vs bf16 samples/s of one model, interleaved rounds (see the module docstring)."""
    recipe = RECIPES[name]
    crop = crop or recipe['crop']
    runs = {}
    for mode in ('fp32', 'bf16'):
        torch.manual_seed(0)
        model = mtvif_zoo.create_model(name).to(device).train()
        runs[mode] = (model, torch.optim.Adam(model.parameters(), lr=recipe['lr']),
                      None if mode == 'fp32' else torch.bfloat16)
    loss_fn = MultiTaskVIFLoss()
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(batch_size, 3, crop, crop, generator=g).to(device),
            torch.rand(batch_size, 1, crop, crop, generator=g).to(device),
            torch.randint(0, 9, (batch_size, crop, crop), generator=g).to(device))

    def run(mode, n):
        model, opt, dt = runs[mode]
        loss = None
        for _ in range(n):
            loss = _step(model, opt, loss_fn, *data, dt, None)
        return loss

    for mode in runs:
        run(mode, warmup)
    rates = {m: [] for m in runs}
    for _ in range(rounds):
        for mode in runs:
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            run(mode, steps).item()
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            rates[mode].append(steps * batch_size / (time.perf_counter() - t0))
    med = {m: statistics.median(v) for m, v in rates.items()}
    return {'model': name, 'crop': crop, 'batch': batch_size, 'fp32': med['fp32'], 'bf16': med['bf16'],
            'ratio': med['bf16'] / med['fp32'], 'rounds': rates}


def loss_curves(name: str, data: str, steps: int, crop=None, batch_size=None, seed: int = 0, device=None,
                model_args=None, threads=None, splits=None):
    """Per-step loss terms of a fp32 and a bf16 run of the trainer (same seed): ``{mode: [terms per step]}``."""
    from mtvif_zoo.losses import TERMS
    from mtvif_zoo.train import TrainConfig, Trainer
    curves = {}
    for mode in ('off', 'bf16'):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(model=name, data=data, out=tmp, crop=crop, batch_size=batch_size, seed=seed,
                              max_steps=steps, workers=0, progress=False, amp=mode, device=device,
                              threads=threads, model_args=dict(model_args or {}), splits=splits)
            t = Trainer(cfg)
            t.model.train()
            rows = []
            step = 0
            while step < steps:
                t.sampler.set_epoch(step // t.sampler.batches_per_epoch, 0)
                for batch in t.train_loader:
                    step += 1
                    vec, _, _ = t.train_step(batch, step, 0, step - 1)
                    rows.append(dict(zip(TERMS, vec.tolist())))
                    if step >= steps:
                        break
            curves['fp32' if mode == 'off' else 'bf16'] = rows
    return curves


def _print_loss_curves(name, curves):
    print(f'# {name}: per-step training loss, fp32 vs bf16 autocast (same seed, same batches)')
    print(f'{"step":>5}{"fp32 total":>12}{"bf16 total":>12}{"rel diff":>10}{"fp32 fusion":>13}'
          f'{"bf16 fusion":>13}{"fp32 seg":>10}{"bf16 seg":>10}')
    diffs = []
    for k, (a, b) in enumerate(zip(curves['fp32'], curves['bf16'])):
        rel = (b['total'] - a['total']) / a['total']
        diffs.append(abs(rel))
        print(f'{k + 1:>5}{a["total"]:>12.4f}{b["total"]:>12.4f}{rel:>+10.2%}{a["fusion"]:>13.4f}'
              f'{b["fusion"]:>13.4f}{a["seg"]:>10.4f}{b["seg"]:>10.4f}', flush=True)
    print(f'# mean |rel diff| {statistics.mean(diffs):.3%}, max {max(diffs):.3%} over {len(diffs)} steps')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', default=['mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv'])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch-size', type=int, help='default: the recipe batch on CUDA, 2 on CPU')
    p.add_argument('--steps', type=int, default=None, help='measured steps (default: 10 CUDA, 2 CPU)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--crop', type=int, help='override the recipe crop')
    p.add_argument('--no-header', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--amp-compare', action='store_true', help='fp32 vs bf16 samples/s, interleaved rounds')
    p.add_argument('--rounds', type=int, default=3, help='--amp-compare: interleaved rounds per mode')
    p.add_argument('--loss-curve', type=int, metavar='N', help='print N per-step losses of fp32 vs bf16 runs of '
                   'the trainer on --data (same seed)')
    p.add_argument('--data', help='--loss-curve: training data folder')
    p.add_argument('--splits', help='--loss-curve: split lists from DATA/splits/NAME (e.g. clean for mfnet220)')
    p.add_argument('--model-args', type=__import__('json').loads, help='--loss-curve: JSON create_model kwargs')
    p.add_argument('--threads', type=int, help='torch intra-op threads')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    steps = args.steps or (10 if cuda else 2)
    dev_name = torch.cuda.get_device_name(device) if cuda else f'CPU, {torch.get_num_threads()} threads'
    if args.loss_curve:
        if not args.data:
            p.error('--loss-curve needs --data DIR')
        for name in args.models:
            _print_loss_curves(name, loss_curves(name, args.data, args.loss_curve, args.crop, args.batch_size,
                                                 device=args.device, model_args=args.model_args,
                                                 threads=args.threads, splits=args.splits))
        return 0
    if args.amp_compare:
        print(f'# training samples/s, fp32 vs bf16 autocast, interleaved ({args.rounds} rounds x {steps} steps '
              f'per mode after {args.warmup} warm-up) on {dev_name} (torch {torch.__version__}, '
              f'CPU capability {torch.backends.cpu.get_cpu_capability()}, AMX / AVX512-BF16: '
              f'{"yes" if cpu_has_fast_bf16() else "no"})')
        print(f'{"model":<11}{"crop":>5}{"batch":>6}{"fp32":>9}{"bf16":>9}{"bf16/fp32":>11}')
        for name in args.models:
            b = args.batch_size or (RECIPES[name]['batch_size'] if cuda else 2)
            r = amp_compare(name, device, b, steps, args.warmup, args.rounds, args.crop)
            print(f'{name:<11}{r["crop"]:>5}{b:>6}{r["fp32"]:>9.3f}{r["bf16"]:>9.3f}{r["ratio"]:>10.2f}x',
                  flush=True)
        return 0
    if not args.no_header:
        print(f'# training throughput and memory on {dev_name} (torch {torch.__version__})')
        print(f'{"model":<11}{"crop":>5}{"batch":>6}{"samples/s":>11}{"s/step":>9}{"peak MB":>10}'
              f'{"per 256^2 sample MB":>21}{"Table 7 MB":>12}')
    if not cuda and len(args.models) > 1:  # one process per model so each peak RSS is its own
        import subprocess
        fwd = [a for a in (argv if argv is not None else sys.argv[1:])]
        rest, skip = [], False
        for a in fwd:  # drop the --models list, keep every other option
            if a == '--models':
                skip = True
                continue
            if skip and not a.startswith('--'):
                continue
            skip = False
            rest.append(a)
        for name in args.models:
            out = subprocess.run([sys.executable, __file__, '--models', name, '--no-header', *rest],
                                 capture_output=True, text=True, check=True).stdout
            print(out.strip().splitlines()[0], flush=True)
        print('# memory: per 256^2 sample = mtvif_zoo.profile() (saved activations + params + grads); '
              'peak = max RSS of the process running that row (includes the runtime)')
        return 0
    for name in args.models:
        b = args.batch_size or (RECIPES[name]['batch_size'] if cuda else 2)
        r = bench(name, device, b, steps, args.warmup, args.crop)
        t7 = f'{r["table7_mb"]:.2f}' if r['table7_mb'] else '-'
        print(f'{name:<11}{r["crop"]:>5}{b:>6}{r["samples_per_s"]:>11.3f}{r["s_per_step"]:>9.2f}'
              f'{r["peak_mb"]:>10.1f}{r["per_sample_256_mb"]:>21.2f}{t7:>12}', flush=True)
    if not args.no_header:
        print(f'# memory: {r["memory_method"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
