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
"""
import argparse
import resource
import sys
import time

import torch

import mtvif_zoo
from mtvif_zoo.losses import MultiTaskVIFLoss
from mtvif_zoo.profile import TABLE7
from mtvif_zoo.train import RECIPES, model_inputs


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', default=['mtvif_i', 'mtvif_ii', 'mtvif_iii', 'mtvif_iv'])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch-size', type=int, help='default: the recipe batch on CUDA, 2 on CPU')
    p.add_argument('--steps', type=int, default=None, help='measured steps (default: 10 CUDA, 2 CPU)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--crop', type=int, help='override the recipe crop')
    p.add_argument('--no-header', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    steps = args.steps or (10 if cuda else 2)
    dev_name = torch.cuda.get_device_name(device) if cuda else f'CPU, {torch.get_num_threads()} threads'
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
