"""``mtvif bench``: images/s, GFLOP/s and the fraction of this machine's conv roofline.

    mtvif bench --model mtvif_iii --size 480x640
    mtvif bench --model all --size 480x640 --json bench_cpu.json
    mtvif bench --model all --quick                       # CI: 64x96, 1 warm-up + 3 runs
    mtvif bench --model mtvif_i --device cuda --dtype fp32,bf16 --batch 8
    mtvif bench --model mtvif_ii,mtvif_iii,mtvif_iv,mtvif_i --pretrained --threads 2 \
        --pair examples/vi/00036N.png examples/ir/00036N.png --dtype both     # fp32 vs bf16, same run
    mtvif bench --model mtvif_iv --pretrained --pair examples/vi/00036N.png examples/ir/00036N.png

Every figure is a median over the timed runs or a ratio of medians; the roofline conv runs in the
same process, interleaved with the model runs (see :mod:`mtvif_zoo.bench`).
"""
import sys

__all__ = ['add_parser']


def _models(spec: str):
    from .._defaults import ARCHITECTURES as VARIANTS
    names = list(VARIANTS) if spec == 'all' else [s.strip() for s in spec.split(',') if s.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise ValueError(f'unknown model(s) {", ".join(bad)}; valid: all, {", ".join(VARIANTS)}')
    return names


def _run(args) -> int:
    import torch

    from ..bench import DTYPE_ALIASES, DTYPES, QUICK_SIZE, bench_many, format_table, roofline_description, write_json
    models = _models(args.model)
    if args.pretrained:
        from .. import list_models
        published = {n.split('.')[0] for n in list_models(pretrained=True)}
        missing = [n for n in models if n not in published]
        if missing:
            raise ValueError(f'--pretrained: no published weights for {", ".join(missing)}; '
                             f'published: {", ".join(sorted(published))}')
    from ._device import cli_device
    cli_device(args.device)  # before the roofline is measured or a model built
    dtypes = [d.strip() for d in args.dtype.split(',')]
    bad = [d for d in dtypes if d not in DTYPES and d not in DTYPE_ALIASES]
    if bad:
        raise ValueError(f'unknown dtype(s) {", ".join(bad)}; valid: {", ".join([*DTYPES, *DTYPE_ALIASES])}')
    dtypes = list(dict.fromkeys(d for spec in dtypes for d in DTYPE_ALIASES.get(spec, (spec,))))
    size = args.size or ('x'.join(map(str, QUICK_SIZE)) if args.quick else (None if args.pair else '480x640'))
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    runs = args.runs if args.runs is not None else (3 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_tune_allocator:
        from ..fusion import tune_cpu_allocator
        tune_cpu_allocator()
    from .. import fusion
    print(f'roofline: {roofline_description()}, interleaved with the model runs; threads {torch.get_num_threads()}; '
          f'allocator {"tuned" if fusion._ALLOCATOR_TUNED else "glibc defaults"}', file=sys.stderr)

    def log(r):
        print(f'  {r.model} {r.dtype}{" compiled" if r.compile else ""}: {r.images_per_s:.3f} img/s, '
              f'{100 * r.roofline_fraction:.1f} % of roofline', file=sys.stderr, flush=True)

    report = bench_many(models, size=size, batch=args.batch, device=args.device, dtypes=dtypes,
                        compile=args.compile, warmup=warmup, runs=runs, mode=args.mode, log=log,
                        pretrained=args.pretrained, pair=tuple(args.pair) if args.pair else None)
    report['command'] = 'mtvif bench ' + ' '.join(sys.argv[2:]) if sys.argv[1:2] == ['bench'] else None
    env = report['env']
    if args.device == 'cpu':
        print(f'CPU bf16 units (amx_bf16 / avx512_bf16): {"yes" if env["cpu_bf16_units"] else "no"}; oneDNN bf16 '
              f'kernels: {"yes" if env["onednn_bf16_kernels"] else "no"}; fuse() default on this CPU: '
              f'{env["fuse_default_dtype_cpu"]}', file=sys.stderr)
    for dtype in dtypes:
        rows = [r for r in report['results'] if r['dtype'] == dtype]
        roof = report['roofline'][dtype]
        print(f'\n{args.device} {dtype}{" compiled" if args.compile else ""}, batch {args.batch}, mode {args.mode}, '
              f'median of {runs} runs after {warmup} warm-up, {torch.get_num_threads()} threads, allocator '
              f'{"tuned" if fusion._ALLOCATOR_TUNED else "default"}; '
              f'roofline {roof["gflops_median"]:.1f} GFLOP/s (median); weights: {report["config"]["weights"]}; '
              f'inputs: {" + ".join(report["config"]["inputs"]) if args.pair else "random uniform"}')
        print(format_table(rows))
        for r in rows:
            for note in r.get('notes', []):
                print(f'  note ({r["model"]}): {note}')
    if args.json:
        write_json(report, args.json)
        print(f'\nwrote {args.json}')
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser('bench', help='benchmark fuse(): images/s, GFLOP/s, %% of the conv roofline, memory',
                       description=__doc__, formatter_class=__import__('argparse').RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, help="model name, comma-separated names, or 'all'")
    p.add_argument('--size', help='HxW (default 480x640; 64x96 with --quick)')
    p.add_argument('--batch', type=int, default=1, help='images per call (default 1)')
    p.add_argument('--device', default='cpu', help='cpu (default) or cuda[:N]')
    p.add_argument('--dtype', default='fp32',
                   help="fp32 | bf16 | fp16 | both (= fp32,bf16), or a comma-separated list; bf16 / fp16 run "
                        "fuse(amp=True): autocast, on the CPU with oneDNN's bf16 kernels where it has them. Several "
                        "dtypes run model by model, and the non-fp32 rows give the speed-up over fp32 and the max abs "
                        "difference of the image")
    p.add_argument('--compile', action='store_true', help='torch.compile the model (first call compiles)')
    p.add_argument('--mode', choices=('fuse', 'model'), default='fuse',
                   help="'fuse': time mtvif_zoo.fuse() on host tensors (default); 'model': the forward only")
    p.add_argument('--warmup', type=int, help='warm-up calls (default 2; 1 with --quick)')
    p.add_argument('--runs', type=int, help='timed runs, the median is reported (default 5; 3 with --quick)')
    p.add_argument('--pretrained', action='store_true',
                   help='the published weights (shipped, offline) instead of random init')
    p.add_argument('--pair', nargs=2, metavar=('VIS', 'IR'),
                   help='time this visible / infrared image pair instead of random images '
                        '(its size; repeated --batch times)')
    p.add_argument('--threads', type=int, help='torch.set_num_threads (default: leave as is)')
    p.add_argument('--quick', action='store_true', help='CI mode: small size, 1 warm-up + 3 runs')
    p.add_argument('--no-tune-allocator', action='store_true',
                   help="keep glibc's malloc defaults (by default large CPU buffers are reused, see "
                        'mtvif_zoo.fusion.tune_cpu_allocator)')
    p.add_argument('--json', help='write the full report (every run, environment) to this file')
    p.set_defaults(func=_run)
