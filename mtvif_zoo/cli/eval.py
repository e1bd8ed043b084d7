"""``mtvif eval``: fusion metrics of method folders (a Table-4-style comparison), CSV + JSON.

    mtvif eval --fused runs/fused --vis data/vi --ir data/ir                     # sub-folder per method
    mtvif eval --fused ../shared/data/vifb/fused --vis ../shared/data/vifb/vi \\
               --ir ../shared/data/vifb/ir --pattern '{image}_{method}' --convention vifb
    mtvif eval --model mtvif_iii --vis data/vi --ir data/ir --labels data/label -o runs/eval

Rows = methods, columns = metrics (``--metrics EN,MI,SSIM`` for a subset), the convention named in
the header (``paper``: CDDFuse Evaluator definitions, the paper's scale; ``vifb``: VIFB's MATLAB
code). Files that do not match, cannot be read or have the wrong size are named (one warning line
each), not fatal; the other pairs are evaluated. As in ``mtvif fuse`` folder mode, the exit code is 1
when a pair or an image was skipped (unreadable, wrong size, could not be fused or segmented).
"""
import sys
from pathlib import Path

__all__ = ['add_parser', 'run']


def add_parser(sub) -> None:
    p = sub.add_parser('eval', help='fusion metrics (EN, MI, VIF, Qabf, SSIM, MS-SSIM, dE, ...) of fused folders',
                       description=__doc__.split('\n\n')[0],
                       epilog='conventions: paper (CDDFuse utils/Evaluator.py, the MultiTaskVIF tables), '
                              'vifb (VIFB MATLAB metrics)')
    p.add_argument('--fused', nargs='+', metavar='DIR',
                   help='folder of method sub-folders, one folder per method, or a flat folder with --pattern')
    p.add_argument('--vis', required=True, help='visible images folder')
    p.add_argument('--ir', required=True, help='infrared images folder (matched by file stem)')
    p.add_argument('--pattern', help="file-name pattern of a flat fused folder, e.g. '{image}_{method}' (VIFB)")
    p.add_argument('--convention', default='paper', choices=('paper', 'vifb'), help='metric conventions [paper]')
    p.add_argument('--metrics', help='comma-separated subset (default: all): EN,MI,VIF,Qabf,SSIM,MS_SSIM,dE,SD,SF,AG,'
                                     'SCD,PSNR,MSS')
    p.add_argument('-o', '--output', help='folder for per_image.csv, summary.csv, results.json [eval_<convention>]')
    p.add_argument('--model', help='also fuse the pairs with this model and evaluate it as a row')
    p.add_argument('--references', default='', help="rule-based rows computed in the same run: 'average,max'")
    p.add_argument('--weights', help='a .safetensors file for --model instead of the published weights')
    p.add_argument('--random-init', action='store_true', help='--model without any weights (pipeline tests)')
    p.add_argument('--labels', help='segmentation labels folder (class-id PNGs by stem): adds the model\'s mIoU')
    p.add_argument('--ignore-index', type=int, help='label value excluded from mIoU (e.g. 255)')
    p.add_argument('--device', help='cpu, cuda, ... [cuda if available]')
    p.add_argument('--batch-size', type=int, default=8, help='fused images per metric batch [8]')
    p.add_argument('--workers', type=int, help='CPU: image pairs evaluated in parallel [min(cores, 8)]')
    p.add_argument('--pool', choices=('process', 'thread'),
                   help='CPU workers as processes started by a forkserver [default on Linux/macOS] or threads')
    p.add_argument('--amp', choices=('auto', 'on', 'off'), default='auto',
                   help='--model precision: autocast [auto: on for CUDA and for CPUs with native bf16 units '
                        '(AMX / AVX512-BF16: bf16), fp32 on other CPUs]; on: autocast (bf16 on CPU); off: fp32')
    p.add_argument('--digits', type=int, default=3, help='decimals in the printed table [3]')
    p.add_argument('--no-tune-allocator', action='store_true',
                   help="CPU: keep glibc's malloc defaults (default: mtvif_zoo.fusion.tune_cpu_allocator(), "
                        'which lets large metric / model buffers be reused instead of page-faulted in)')
    p.add_argument('-q', '--quiet', action='store_true', help='no progress bars')
    p.set_defaults(func=run)


def _model(args, device):
    from .. import create_model
    model = create_model(args.model, pretrained=not (args.weights or args.random_init))
    if args.weights:  # the same rule as mtvif fuse --weights: every key, or a fusion-only file
        from ..weights import load_weights
        from .fuse import _load_user_weights
        model = _load_user_weights(model, args.weights, load_weights)
    return model.to(device).eval()


def run(args) -> int:
    from ..evaluate import evaluate
    from ._device import cli_device

    if not args.fused and not args.model and not args.references:
        raise ValueError('give --fused folders, --model, --references, or a combination')
    if args.labels and not args.model:
        raise ValueError('--labels scores a model\'s segmentation: give --model too')
    device = cli_device(args.device)
    if device.type == 'cpu' and not args.no_tune_allocator:
        from ..fusion import tune_cpu_allocator
        tune_cpu_allocator()
    model = _model(args, device) if args.model else None
    out = Path(args.output) if args.output else Path(f'eval_{args.convention}')
    fused = None
    if args.fused:
        fused = args.fused[0] if len(args.fused) == 1 else args.fused
    res = evaluate(fused, args.vis, args.ir, metrics=args.metrics, convention=args.convention, out=out,
                   labels_dir=args.labels, model=model, model_name=args.model, device=device,
                   batch_size=args.batch_size, pattern=args.pattern, progress=not args.quiet,
                   ignore_index=args.ignore_index, workers=args.workers, pool=args.pool,
                   references=[r.strip() for r in args.references.split(',') if r.strip()],
                   amp={'auto': None, 'on': True, 'off': False}[args.amp], warn=False)
    for p in res.problems:
        print(f'warning: {p}', file=sys.stderr)
    print(res.table(digits=args.digits))
    if res.segmentation:
        for name, seg in res.segmentation.items():
            print(f'\nmIoU ({name}, {seg["images"]} images, one confusion matrix): {seg["mIoU"]:.4f}')
            print('  ' + ', '.join(f'{k} {v:.4f}' for k, v in seg['IoU'].items()))
            if seg['absent_classes']:
                print(f'  absent from predictions and labels (excluded): {", ".join(seg["absent_classes"])}')
    print(f'\nwrote {", ".join(res.files.values())}', file=sys.stderr)
    if res.skipped:
        print(f'{len(res.skipped)} pair(s) / image(s) skipped (listed above and in results.json); '
              'the others were evaluated', file=sys.stderr)
        return 1
    return 0
