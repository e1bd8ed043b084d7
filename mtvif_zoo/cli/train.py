"""``mtvif train`` (the paper's one-stage multi-task recipe) and ``mtvif export`` (fusion-only weights).

    mtvif train --model mtvif_iii --data ../shared/data/mfnet220 --splits clean --out runs/iii --crop 128 --epochs 1
    mtvif train --model mtvif_iii --data ../shared/data/mfnet220 --out runs/iii --resume
    torchrun --nproc_per_node 2 -m mtvif_zoo.train --model mtvif_iii --data DIR --out DIR
    mtvif export --checkpoint runs/iii/best --out exported/mtvif_iii.mfnet220
    mtvif export --model mtvif_iv.mfnet220 --onnx mtvif_iv.onnx      # ONNX graph, dynamic batch/H/W
"""
import argparse
import json
import sys

__all__ = ['add_parser']


def _kv(text: str):
    """``beta2=0.5,lambda4=10`` or a JSON object -> dict."""
    text = text.strip()
    if text.startswith('{'):
        return json.loads(text)
    out = {}
    for part in filter(None, (p.strip() for p in text.split(','))):
        if '=' not in part:
            raise argparse.ArgumentTypeError(f'expected key=value, got {part!r}')
        k, v = part.split('=', 1)
        out[k.strip()] = float(v)
    return out


def _train(args) -> int:
    from ..train import NonFiniteLossError, TrainConfig, train
    from ._device import cli_device
    if args.device:
        cli_device(args.device)  # an unknown name / absent GPU: one line now, not a traceback after the data check
    cfg = TrainConfig(
        model=args.model, data=args.data, out=args.out, layout=args.layout, splits=args.splits, crop=args.crop,
        batch_size=args.batch_size, lr=args.lr, epochs=args.epochs, max_steps=args.max_steps,
        patience=args.patience, min_delta=args.min_delta, weight_decay=args.weight_decay, scheduler=args.scheduler,
        grad_clip=args.grad_clip, amp=args.amp, seed=args.seed, workers=args.workers, device=args.device,
        val_fraction=args.val_fraction, val_crop=args.val_crop, hflip=args.hflip, vflip=args.vflip,
        ir_gain=args.ir_gain, vis_gain=args.vis_gain, init_from=args.init_from,
        in_chans=args.in_chans, num_classes=args.num_classes, ignore_index=args.ignore_index,
        ckpt_every=args.ckpt_every, grad_projection=args.grad_projection, sync_bn=args.sync_bn,
        threads=args.threads, unlabelled=args.unlabelled, unlabelled_ratio=args.unlabelled_ratio,
        select_on=args.select_on, select_rule=args.select_rule, select_every=args.select_every,
        allow_msrs_test_names=args.allow_msrs_test_names,
        progress=not args.no_progress, resume=args.resume, model_args=args.model_args or {},
        loss_weights=args.loss_weights or {})
    try:
        summary = train(cfg)
    except NonFiniteLossError as e:
        print(f'mtvif train: {e}', file=sys.stderr)
        return 3
    except FileExistsError as e:
        print(f'mtvif train: error: {e}', file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only --out: one line; last/ keeps the newest complete checkpoint
        print(f'mtvif train: error: {e}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def _export_onnx(args) -> int:
    import time

    import numpy as np
    import torch

    from ..deploy import FusionGraph, export_onnx, onnx_session
    from ..fusion import _resolve_model
    from ..weights import load_weights
    if args.weights or args.no_pretrained:
        from .._factory import create_model
        model = create_model(args.model, pretrained=False)
        model = model.fusion_only() if model.has_segmentation else model
        if args.weights:
            load_weights(model, args.weights)
    else:
        model = _resolve_model(args.model)
    graph = FusionGraph(model)
    t0 = time.perf_counter()
    path = export_onnx(graph, args.onnx, opset=args.opset)
    print(f'wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset}, {time.perf_counter() - t0:.0f} s): '
          f'inputs vis B x {graph.in_chans} x H x W, ir B x 1 x H x W (float32 in [0, 1], H, W >= {graph.min_size}), '
          f'output fused B x {graph.in_chans} x H x W')
    if args.check:
        g = torch.Generator().manual_seed(0)
        vis, ir = torch.rand(1, graph.in_chans, 67, 93, generator=g), torch.rand(1, 1, 67, 93, generator=g)
        with torch.no_grad():
            ref = graph(vis, ir).numpy()
        out = onnx_session(path).run(['fused'], {'vis': vis.numpy(), 'ir': ir.numpy()})[0]
        diff = float(np.abs(out - ref).max())
        print(f'onnxruntime check (CPU, 1x{graph.in_chans}x67x93 random): max |onnx - eager| = {diff:.2e}')
        if not diff <= 1e-4:
            print(f'mtvif export: error: onnxruntime output differs from eager by {diff:.2e} (> 1e-4)', file=sys.stderr)
            return 1
    return 0


def _export(args) -> int:
    if args.onnx or args.model:
        if not (args.onnx and args.model) or args.checkpoint or args.out:
            print('mtvif export: error: ONNX export takes --model NAME[.tag] and --onnx FILE (and no '
                  '--checkpoint / --out)', file=sys.stderr)
            return 2
        return _export_onnx(args)
    if not (args.checkpoint and args.out):
        print('mtvif export: error: give --checkpoint DIR --out DIR (weights) or --model NAME --onnx FILE (ONNX)',
              file=sys.stderr)
        return 2
    from ..train import export_checkpoint
    out = export_checkpoint(args.checkpoint, args.out, name=args.name)
    print(f'wrote fusion-only weights to {out}')
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser('train', help='train a model (fusion + segmentation losses, one stage)',
                       description='Train a zoo model with the MultiTaskVIF recipe. Options left out take the '
                                   "model's recipe (mtvif_i: lr 1e-4, crop 160, batch 10; II-IV and baselines: "
                                   'lr 5e-5, crop 256, batch 16; 100 epochs, patience 10). --out receives '
                                   'config.json, log.csv, log.jsonl, last/ and best/.')
    p.add_argument('--model', required=True, help='model name (mtvif list)')
    p.add_argument('--data', required=True, help='dataset folder: MSRS, FMB or vi/ ir/ label/ [splits/]')
    p.add_argument('--out', required=True, help='run folder')
    p.add_argument('--layout', default='auto', choices=['auto', 'msrs', 'fmb', 'folder'])
    p.add_argument('--splits', metavar='NAME', help='folder layout: split lists from DATA/splits/NAME/ (e.g. clean: '
                   'mfnet220 without MSRS test scenes) instead of DATA/splits/')
    p.add_argument('--unlabelled', metavar='DIR', help='folder of unlabelled vi/ ir/ pairs mixed into every batch '
                   '(semi-supervised: L_fusion only for them, L_seg from the labelled pairs)')
    p.add_argument('--select-on', metavar='DIR', help='choose best/ by fusion quality on these vi/ ir/ pairs (the '
                   "paper's 7 metrics vs the pixel average and maximum), not by the validation loss")
    p.add_argument('--select-rule', choices=['mean_rank', 'wins'], help='mean_rank (default): lowest mean rank over '
                   'the 7 metrics among all checkpoints + the 2 references; wins: most metrics beating both references')
    p.add_argument('--select-every', type=int, metavar='N', help='score the selection set every N epochs (1)')
    p.add_argument('--allow-msrs-test-names', action='store_true', help='accept images named like MSRS test images '
                   '(refused by default: they leak the MSRS test set; only to reproduce the old mfnet220 runs)')
    p.add_argument('--unlabelled-ratio', type=float, metavar='R', help='share of each batch from --unlabelled '
                   '(0 < R < 1; default 0.5); log.csv shows the fusion terms of both kinds')
    p.add_argument('--crop', type=int, help='random crop size (recipe)')
    p.add_argument('--batch-size', type=int, help='batch size per process (recipe)')
    p.add_argument('--epochs', type=int, help='epochs (100)')
    p.add_argument('--max-steps', type=int, help='stop after this many optimizer steps in total')
    p.add_argument('--lr', type=float, help='Adam learning rate (recipe)')
    p.add_argument('--resume', action='store_true', help='continue the run in --out from last/')
    p.add_argument('--device', help='cpu, cuda, cuda:1 ... (default: cuda when available)')
    p.add_argument('--workers', type=int, help='data loader worker processes (default: half the CPUs, max 4)')
    p.add_argument('--threads', type=int, help='CPU threads for torch (default: torch\'s; use fewer than the '
                   'cores on a machine shared with other jobs)')
    p.add_argument('--seed', type=int, help='seed for init, data order and augmentation (0)')
    p.add_argument('--patience', type=int, help='early-stopping patience in epochs (10)')
    p.add_argument('--min-delta', type=float, help='minimum validation-loss improvement (0)')
    p.add_argument('--weight-decay', type=float)
    p.add_argument('--scheduler', choices=['constant', 'cosine'])
    p.add_argument('--grad-clip', type=float, help='clip the gradient norm to this value')
    p.add_argument('--amp', nargs='?', const='on', default=None, choices=['auto', 'off', 'bf16', 'fp16', 'on'],
                   help='mixed precision of the forward pass: bf16 (torch.autocast with bfloat16, CPU or CUDA), '
                        'fp16 (CUDA, with loss scaling), off (fp32); auto (default): bf16/fp16 on CUDA, off on '
                        'the CPU; a bare --amp = on. Loss, gradients, Adam state and weights stay fp32')
    p.add_argument('--no-amp', dest='amp', action='store_const', const='off', help='same as --amp off')
    p.add_argument('--val-fraction', type=float, help='validation share when the data has no val list (0.1)')
    p.add_argument('--val-crop', type=int, help='centre crop of validation images (default --crop; 0: whole)')
    p.add_argument('--hflip', type=float, help='horizontal flip probability (0.5)')
    p.add_argument('--ir-gain', type=float, nargs=2, metavar=('LOW', 'HIGH'),
                   help='multiply each infrared crop by a random gain in [LOW, HIGH] (intensity augmentation; off)')
    p.add_argument('--vis-gain', type=float, nargs=2, metavar=('LOW', 'HIGH'),
                   help='the same for the visible crop (off)')
    p.add_argument('--init-from', metavar='FILE', help='start from these .safetensors weights (fine-tuning)')
    p.add_argument('--vflip', type=float, help='vertical flip probability (0)')
    p.add_argument('--in-chans', type=int, choices=[1, 3], help='3: RGB (default); 1: Y channel mode')
    p.add_argument('--num-classes', type=int, help='segmentation classes (layout default: 9 MSRS/folder, 15 FMB)')
    p.add_argument('--ignore-index', type=int, help='label value to ignore (e.g. 255)')
    p.add_argument('--ckpt-every', type=int, help='also write last/ every N steps inside an epoch')
    p.add_argument('--grad-projection', type=int, metavar='N',
                   help='record the Sec. 4.7 fusion/segmentation gradient projections every N steps')
    p.add_argument('--sync-bn', action='store_true', help='SyncBatchNorm under torchrun (CUDA)')
    p.add_argument('--loss-weights', type=_kv, help='e.g. beta2=0.5,lambda4=10 (beta1 beta2 lambda1..lambda4)')
    p.add_argument('--model-args', type=json.loads, help='JSON create_model kwargs, e.g. \'{"head": "mth_nohia"}\'')
    p.add_argument('--no-progress', action='store_true', help='no tqdm progress bar')
    p.add_argument('--json', action='store_true', help='print the summary as JSON at the end')
    p.set_defaults(func=_train)

    e = sub.add_parser('export', help='export a checkpoint as fusion-only weights, or a model as ONNX',
                       description='Either write model.safetensors (segmentation classifier dropped), config.json '
                                   'and README.md from a checkpoint folder (--checkpoint RUN/best --out DIR), or '
                                   'write the fusion-only eval graph of a model as ONNX with dynamic batch / '
                                   'height / width (--model NAME[.tag] --onnx FILE; needs the onnx extra) and '
                                   'check it with onnxruntime.')
    e.add_argument('--checkpoint', help='checkpoint folder (RUN/best or RUN/last)')
    e.add_argument('--out', help='output folder for the weights')
    e.add_argument('--name', help='name in the README (default: the output folder name)')
    e.add_argument('--model', help='ONNX: model name with its published weights, e.g. mtvif_iv.mfnet220')
    e.add_argument('--onnx', metavar='FILE', help='ONNX: output file (one file, weights inside)')
    e.add_argument('--weights', metavar='FILE', help='ONNX: fusion-only .safetensors to load instead of the '
                   'published weights (e.g. an exported training run)')
    e.add_argument('--no-pretrained', action='store_true', help='ONNX: random init (no weights needed)')
    e.add_argument('--opset', type=int, default=18, help='ONNX opset (18)')
    e.add_argument('--check', action=argparse.BooleanOptionalAction, default=True,
                   help='compare onnxruntime with eager PyTorch on a random input after writing (default on)')
    e.set_defaults(func=_export)
