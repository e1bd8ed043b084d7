"""``mtvif fuse``: the main job. Fuse a pair, two folders matched by stem, or a glob.

    mtvif fuse examples/vi/00036N.png examples/ir/00036N.png -o fused.png --preview preview.png
    mtvif fuse data/vi data/ir -o out/ --preview out/preview --batch-size 4
    mtvif fuse 'data/vi/*N.png' data/ir -o out/ --tile 512
    mtvif fuse vis.mp4 ir.mp4 -o fused.mp4                 # video (PyAV): mtvif_zoo.video.fuse_video
    mtvif fuse vis_frames/ ir_frames/ -o fused.mp4 --fps 30  # frame folders (name order) -> video

Outputs are 8-bit PNG (or the suffix given for a single pair); 16-bit inputs are handled as in
:func:`mtvif_zoo.fuse` (``--ir-range``). ``--preview`` writes visible | infrared | fused |
segmentation overlay per pair (the overlay needs the model's segmentation classifier, i.e. the full
multi-task weights; fusion-only weights give three panels).
"""
import glob
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

__all__ = ['add_parser', 'resolve_pairs']

IMAGE_SUFFIXES = {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp'}


def _images_in(d: Path) -> Dict[str, Path]:
    return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def _is_glob(s: str) -> bool:
    return any(ch in s for ch in '*?[')


def resolve_pairs(vis: str, ir: str) -> Tuple[List[Tuple[str, Path, Path]], List[str]]:
    """-> ([(stem, vis_path, ir_path)], [problems]) for a pair, two folders, or a glob + folder/glob."""
    vp, ip = Path(vis), Path(ir)
    if not _is_glob(vis) and vp.is_file():
        if not ip.is_file():
            raise FileNotFoundError(f'infrared image not found: {ir!r} (the visible input is a single file)')
        return [(vp.stem, vp, ip)], []
    if _is_glob(vis):
        vis_map = {Path(p).stem: Path(p) for p in sorted(glob.glob(vis)) if Path(p).suffix.lower() in IMAGE_SUFFIXES}
        if not vis_map:
            raise FileNotFoundError(f'no images match the visible pattern {vis!r}')
    elif vp.is_dir():
        vis_map = _images_in(vp)
    else:
        raise FileNotFoundError(f'visible input not found: {vis!r} (give a file, a folder or a quoted glob)')
    if _is_glob(ir):
        ir_map = {Path(p).stem: Path(p) for p in sorted(glob.glob(ir))}
    elif ip.is_dir():
        ir_map = _images_in(ip)
    else:
        raise FileNotFoundError(f'infrared folder not found: {ir!r} (with several visible images, give a folder '
                                'or a glob whose file stems match)')
    problems = [f'no infrared partner for {p}' for s, p in vis_map.items() if s not in ir_map]
    if not _is_glob(vis):
        problems += [f'no visible partner for {p}' for s, p in ir_map.items() if s not in vis_map]
    pairs = [(s, vis_map[s], ir_map[s]) for s in vis_map if s in ir_map]
    if not pairs:
        raise FileNotFoundError(f'no visible/infrared pairs with matching file stems in {vis!r} and {ir!r}')
    return pairs, problems


def _u8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a.astype(np.float32) / 257).round().astype(np.uint8)
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / max(hi - lo, 1e-12) * 255).round().astype(np.uint8)


def _display(a: np.ndarray) -> np.ndarray:
    """Inputs as shown in the preview: 16-bit thermal min-max stretched, 8-bit unchanged."""
    if a.dtype == np.uint16:
        a = a.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        return ((a - lo) / max(hi - lo, 1e-12) * 255).round().astype(np.uint8)
    return _u8(a)


def _load_model(args):
    import torch
    from .. import create_model
    from ..weights import load_weights
    kwargs = {}
    if args.in_chans:
        kwargs['in_chans'] = args.in_chans
    pretrained = not (args.weights or args.random_init)
    model = None
    if pretrained and args.preview:  # the segmentation panel needs the full multi-task weights
        try:
            model = create_model(args.model, pretrained=True, **kwargs,
                                 pretrained_cfg_overlay=dict(hf_hub_filename='model_full.safetensors'))
        except (FileNotFoundError, ValueError, RuntimeError):
            model = None
    if model is None:
        model = create_model(args.model, pretrained=pretrained, **kwargs)
    if args.weights:
        load_weights(model, args.weights, strict=False)
    device = torch.device(args.device) if args.device else torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.type == 'cpu' and not getattr(args, 'no_tune_allocator', False):
        from ..fusion import tune_cpu_allocator
        tune_cpu_allocator()  # this process fuses many images: reuse large buffers (README "Performance")
    return model.to(device).eval()


def _run_video(args) -> int:
    from ..video import fuse_video
    if args.preview:
        raise ValueError('--preview is for image pairs; for videos write frames (-o FOLDER/) and preview those')
    model = _load_model(args)
    amp = {'auto': None, 'on': True, 'off': False}[args.amp]
    ir_range = tuple(args.ir_range) if args.ir_range else 'minmax'
    info = fuse_video(args.vis, args.ir, args.output, model=model, batch_size=args.batch_size, fps=args.fps,
                      resize_ir=args.resize_ir, codec=args.codec, progress=not args.quiet, tile=args.tile,
                      overlap=args.overlap, amp=amp, ir_range=ir_range)
    if not args.quiet:
        print(f'fused {info["frames"]} frame(s) with {args.model} -> {info["output"]} '
              f'({info["size"][0]}x{info["size"][1]}, {info["fps"]:g} fps)')
    return 0


def run(args) -> int:
    from ..video import is_video
    if is_video(args.vis) or is_video(args.ir) or is_video(args.output):
        return _run_video(args)
    from PIL import Image
    from tqdm.auto import tqdm

    from ..fusion import fuse, load_image, segment
    from ..preview import make_preview

    pairs, problems = resolve_pairs(args.vis, args.ir)
    for p in problems:
        print(f'warning: {p}', file=sys.stderr)
    out = Path(args.output)
    single = len(pairs) == 1 and out.suffix.lower() in IMAGE_SUFFIXES
    if not single:
        out.mkdir(parents=True, exist_ok=True)
    preview = Path(args.preview) if args.preview else None
    if preview is not None and not (single and preview.suffix.lower() in IMAGE_SUFFIXES):
        preview.mkdir(parents=True, exist_ok=True)
    model = _load_model(args)
    want_seg = preview is not None and model.has_segmentation
    if preview is not None and not model.has_segmentation:
        print('note: this model has no segmentation classifier; previews show visible | infrared | fused',
              file=sys.stderr)
    amp = {'auto': None, 'on': True, 'off': False}[args.amp]
    ir_range = tuple(args.ir_range) if args.ir_range else 'minmax'
    written = []
    bar = tqdm(total=len(pairs), unit='pair', disable=len(pairs) < 2 or args.quiet)
    bad = []
    for start in range(0, len(pairs), args.batch_size):
        chunk = pairs[start:start + args.batch_size]
        loaded = []
        for stem, vp, ip in chunk:
            try:
                loaded.append((stem, load_image(vp, 'visible'), load_image(ip, 'infrared')))
            except (ValueError, FileNotFoundError) as e:
                if len(pairs) == 1:  # a single pair: an error with the reason, nothing claims to be written
                    raise
                bad.append(str(e))
                print(f'warning: skipped {stem}: {e}', file=sys.stderr)
        if not loaded:
            bar.update(len(chunk))
            continue
        try:
            fused = fuse([v for _, v, _ in loaded], [i for _, _, i in loaded], model=model,
                         batch_size=args.batch_size, tile=args.tile, overlap=args.overlap, amp=amp, ir_range=ir_range)
        except ValueError:  # one bad pair in the chunk: fall back to pair by pair to name it
            if len(pairs) == 1:
                raise
            fused = []
            for stem, v, i in loaded:
                try:
                    fused.append(fuse(v, i, model=model, tile=args.tile, overlap=args.overlap, amp=amp,
                                      ir_range=ir_range))
                except ValueError as e1:
                    bad.append(f'{stem}: {e1}')
                    print(f'warning: skipped {stem}: {e1}', file=sys.stderr)
                    fused.append(None)
        for (stem, v, i), f in zip(loaded, fused):
            if f is None:
                continue
            f8 = _u8(f)
            dst = out if single else out / f'{stem}.{args.format}'
            Image.fromarray(f8).save(dst)
            written.append(dst)
            if preview is not None:
                classes = segment(v, i, model=model, amp=amp, ir_range=ir_range) if want_seg else None
                pic = make_preview(_display(v), _display(i), f8, classes, title=stem)
                pdst = preview if (single and preview.suffix.lower() in IMAGE_SUFFIXES) else preview / f'{stem}.png'
                pic.save(pdst)
        bar.update(len(chunk))
    bar.close()
    if not args.quiet:
        where = written[0] if single and written else out
        print(f'fused {len(written)} pair(s) with {args.model} -> {where}'
              + (f'; previews -> {preview}' if preview is not None else ''))
    return 0 if written and not bad else (1 if written else 2)


def add_parser(sub) -> None:
    from .._defaults import DEFAULT_MODEL
    p = sub.add_parser('fuse', help='fuse visible + infrared images (a pair, two folders, a glob, or videos)',
                       description='Fuse a pair of images, two folders matched by file stem, a glob, or two '
                                   'videos / frame streams (a video file or frame folder in, a video file or '
                                   'frame folder out; frames are paired in order and fused in batches).')
    p.add_argument('vis', help='visible image, folder, quoted glob, or video file')
    p.add_argument('ir', help='infrared image, folder (partners matched by file stem), or video file')
    p.add_argument('-o', '--output', default='fused', help='output file (single pair), folder [fused/], or '
                   'video file (.mp4, .mkv, ...: the frames of two videos / frame folders)')
    p.add_argument('--model', default=DEFAULT_MODEL, help=f'model name or arch.tag [{DEFAULT_MODEL}]')
    p.add_argument('--weights', help='a .safetensors file to load instead of the published weights')
    p.add_argument('--random-init', action='store_true', help='no weights at all (for testing the pipeline)')
    p.add_argument('--in-chans', type=int, choices=(1, 3))
    p.add_argument('--device', help='cpu, cuda, cuda:1 ... [cuda if available]')
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--tile', type=int, help='fuse in overlapping tiles of this size (very large images)')
    p.add_argument('--overlap', type=int, default=32)
    p.add_argument('--amp', choices=('auto', 'on', 'off'), default='auto', help='autocast [auto: on for CUDA]')
    p.add_argument('--ir-range', type=float, nargs=2, metavar=('LOW', 'HIGH'),
                   help='raw 16-bit infrared range mapped to [0, 1] [per-image min-max]')
    p.add_argument('--preview', help='file (single pair) or folder for visible|infrared|fused|segmentation strips')
    p.add_argument('--format', default='png', choices=('png', 'jpg', 'bmp', 'tif'))
    p.add_argument('--fps', type=float, help='video output from a visible frame folder: frame rate [25] '
                   '(a visible video keeps its own rate)')
    p.add_argument('--resize-ir', action='store_true', help='video: resize infrared frames to the visible '
                   'size (bilinear) instead of stopping on a size mismatch')
    p.add_argument('--codec', help='video output codec [libx264, crf 18]')
    p.add_argument('--no-tune-allocator', action='store_true', help='CPU: leave glibc\'s allocator as it is '
                   '(default: mtvif_zoo.fusion.tune_cpu_allocator(), as mtvif bench does)')
    p.add_argument('-q', '--quiet', action='store_true')
    p.set_defaults(func=run)
