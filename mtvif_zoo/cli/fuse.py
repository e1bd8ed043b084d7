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

Output safety: every path is checked before the model is loaded. An output (or preview) that is
one of the inputs or an input folder, after resolving links, is refused; an existing output is
replaced only with ``--overwrite`` (otherwise an error for one pair, skipped with a note in folder
mode); ``-o`` with an image suffix is a file (an unsupported image suffix such as ``.gif``, or a
video suffix such as ``.mp4`` for image inputs, is an error); a trailing slash always names a
folder (``-o out.png/`` writes ``out.png/<stem>.png``; for video inputs it is an error).
``--device`` and ``--tile`` (against the model's pad multiple) are checked once, before any pair
is fused or any output folder made (a run that writes no image removes the empty folders it made).
A pair whose infrared image has colour and whose visible image is grey gets a one-line warning
naming both files (swapped?).
Images are written to a temporary file and renamed into place, so a full disk leaves no
partial file. In folder mode a pair that fails (unreadable, too large, model error) is reported
and skipped, the rest are fused, and the exit code is 1.
"""
import contextlib
import glob
import os
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from ._device import cli_device

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
        model = _load_user_weights(model, args.weights, load_weights)
    device = cli_device(args.device)
    if device.type == 'cpu' and not getattr(args, 'no_tune_allocator', False):
        from ..fusion import tune_cpu_allocator
        tune_cpu_allocator()  # this process fuses many images: reuse large buffers (README "Performance")
    return model.to(device).eval()


def _load_user_weights(model, path, load_weights):
    """``--weights FILE``: every key of the model, except that a fusion-only file (no segmentation
    classifier) gives the fusion-only model; anything else missing or extra is an error."""
    from safetensors import safe_open
    fo = model.fusion_only() if getattr(model, 'has_segmentation', False) else None
    seg = set(model.state_dict()) - set(fo.state_dict()) if fo is not None else set()
    try:
        with safe_open(str(path), framework='pt') as f:
            keys = set(f.keys())
    except Exception:  # not readable: load_weights names the problem
        keys = None
    if seg and keys is not None and keys and set(model.state_dict()) - keys == seg:
        return load_weights(fo, path)
    return load_weights(model, path)


class OutputError(ValueError):
    """An output path that would lose data or cannot be written (one line, before anything is fused)."""


def _first_existing(p: Path) -> Path:
    for q in (p, *p.parents):
        if q.exists() or q.is_symlink():
            return q
    return Path('.')


def _check_folder(d: Path, what: str) -> None:
    """``d`` is (or can be made) a writable folder: no file on its path, write permission."""
    q = _first_existing(d)
    if not q.is_dir():
        raise OutputError(f'{what} {str(d)!r}: {str(q)!r} is a file, not a folder; choose another path')
    if not os.access(q, os.W_OK | os.X_OK):
        raise OutputError(f'cannot write {what} {str(d)!r}: {str(q)!r} is not writable (permission denied or a '
                          'read-only file system)')


def _names_folder(raw: str) -> bool:
    """A path typed with a trailing slash (``out.png/``) names a folder, whatever its suffix
    (``Path`` drops the slash)."""
    return raw.endswith('/') or raw.endswith(os.sep) or bool(os.altsep and raw.endswith(os.altsep))


def _output_kind(raw: str, n_pairs: int, what: str) -> bool:
    """True when ``raw`` names a file: an image suffix (supported: a file; other image formats such as
    .gif: an error), unless it is an existing folder or ends with a slash (a folder, as in ``cp``).
    A file name with several pairs is an error."""
    from PIL import Image
    p = Path(raw)
    if p.is_dir():
        return False
    if _names_folder(raw):
        if p.exists():
            raise OutputError(f'{what} {raw!r} ends with a slash (a folder) but {str(p)!r} is a file; '
                              'choose another path')
        return False
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if n_pairs > 1:
            raise OutputError(f'{what} {str(p)!r} names one image file but {n_pairs} pairs were found; give a folder')
        return True
    if suffix in Image.registered_extensions():
        raise OutputError(f'unsupported output format {suffix!r} for {what} {str(p)!r}; use one of '
                          f'{", ".join(sorted(IMAGE_SUFFIXES))} (or a folder name without an image suffix)')
    from ..video import VIDEO_SUFFIXES
    if suffix in VIDEO_SUFFIXES:
        raise OutputError(f'{what} {str(p)!r} names a video, but the inputs are image files; give an image file '
                          f'(e.g. fused.png) for one pair or a folder (a video is made from two videos or two frame '
                          f'folders)')
    if p.exists():
        raise OutputError(f'{what} {str(p)!r} is a file, not a folder; choose another path')
    return False


def _real(p: Path) -> Path:
    return Path(os.path.realpath(p))


def _file_id(p: Path):
    """(device, inode) of an existing file, else None."""
    try:
        st = os.stat(p)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _plan_outputs(args, pairs):
    """Where each pair goes, decided and checked before the model is loaded or anything written:
    ``(out, single, preview, preview_single, [(stem, vp, ip, dst, pdst)], skipped)``. Refuses an
    output that is an input or an input folder (links resolved), a path under a file, an
    unwritable folder, an unsupported suffix, and (single pair) an existing file without
    ``--overwrite``; in folder mode existing outputs are skipped without ``--overwrite``."""
    out = Path(args.output)
    single = _output_kind(args.output, len(pairs), 'output')
    preview = Path(args.preview) if args.preview else None
    pre_single = preview is not None and _output_kind(args.preview, len(pairs), 'preview')
    inputs = {_real(p) for _, vp, ip in pairs for p in (vp, ip)}
    in_dirs = {q.parent for q in inputs}
    # the same file under another name: a hard link, or another spelling on a case-insensitive file
    # system (macOS, Windows: 'VI/A.PNG' is 'vi/a.png' there, and realpath keeps the spelling given)
    in_ids = {_file_id(p) for p in inputs} - {None}
    for path, is_file, what in ((out, single, 'output'), (preview, pre_single, 'preview')):
        if path is None:
            continue
        real = _real(path)
        if is_file and real in inputs:
            raise OutputError(f'{what} {str(path)!r} is one of the inputs ({str(real)!r}); refusing to overwrite it')
        if not is_file and real in in_dirs:
            raise OutputError(f'{what} folder {str(path)!r} is an input folder ({str(real)!r}); fused images would '
                              'replace or mix with the inputs: choose another folder')
        _check_folder(path.parent if is_file else path, what)
    plan, skipped = [], []
    for stem, vp, ip in pairs:
        dst = out if single else out / f'{stem}.{args.format}'
        pdst = None if preview is None else (preview if pre_single else preview / f'{stem}.png')
        targets = [t for t in (dst, pdst) if t is not None]
        if pdst is not None and _real(pdst) == _real(dst):
            raise OutputError(f'the preview {str(pdst)!r} and the fused image are the same file; give --preview '
                              'another path')
        for t in targets:
            if _real(t) in inputs or _file_id(t) in in_ids:
                raise OutputError(f'output {str(t)!r} is one of the inputs; refusing to overwrite it')
        existing = [t for t in targets if t.exists() or t.is_symlink()]
        if existing and not args.overwrite:
            if single:
                raise OutputError(f'{str(existing[0])!r} already exists; pass --overwrite to replace it')
            skipped.append(f'{str(existing[0])!r} already exists; skipped {stem} (pass --overwrite to replace it)')
            continue
        plan.append((stem, vp, ip, dst, pdst))
    return out, single, preview, pre_single, plan, skipped


@contextlib.contextmanager
def _without_swap_warning():
    """fuse() / segment() without their "inputs look swapped" warning (the CLI names the pair's files)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='the infrared.* look swapped', category=UserWarning)
        yield


def _make_folder(d: Path) -> List[Path]:
    """``mkdir -p d``; -> the folders it made, innermost first (for :func:`_remove_empty`)."""
    made = [q for q in (d, *d.parents) if not (q.exists() or q.is_symlink())]
    d.mkdir(parents=True, exist_ok=True)
    return made


def _remove_empty(folders: List[Path]) -> None:
    """Remove the folders this run made while they are empty (deepest first)."""
    for q in sorted(folders, key=lambda q: len(q.parts), reverse=True):
        try:
            q.rmdir()
        except OSError:  # not empty (or gone): leave it
            pass


def _save_atomic(img, dst: Path) -> None:
    """Write through a hidden temporary file in the same folder and rename it into place: a full
    disk or a crash leaves no partial image (and never half of an old one)."""
    from PIL import Image
    fmt = Image.registered_extensions()[dst.suffix.lower()]
    tmp = dst.with_name(f'.{dst.name}.{os.getpid()}.tmp')
    try:
        img.save(tmp, format=fmt)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _run_video(args) -> int:
    from ..fusion import check_fuse_args
    from ..video import _same_path, fuse_video, is_video
    if args.preview:
        raise ValueError('--preview is for image pairs; for videos write frames (-o FOLDER/) and preview those')
    check_fuse_args(args.batch_size, args.tile, args.overlap)
    if _names_folder(args.output) and is_video(args.output):
        raise OutputError(f'output {args.output!r} ends with a slash (a folder) but has a video suffix; give '
                          f'{args.output.rstrip("/" + os.sep)!r} for a video file, or a folder name without a '
                          'video suffix for PNG frames')
    out = Path(args.output)
    for src in (args.vis, args.ir):
        # the same file or folder (links, '..', a hard link, another spelling on a case-insensitive
        # file system): the check fuse_video makes, here before --overwrite is considered
        sp = Path(src)
        if _same_path(out, sp) or (out.suffix == '' and _same_path(out, _real(sp).parent)):
            raise OutputError(f'output {str(out)!r} is the input {str(src)!r} (or its folder); '
                              'refusing to overwrite it')
    if (out.is_file() or (out.is_dir() and any(out.iterdir()))) and not args.overwrite:
        raise OutputError(f'{str(out)!r} already exists; pass --overwrite to replace it')
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
    # video mode: a video input, or frame folders written to a video file (image files in, .gif out: an error below)
    if is_video(args.vis) or is_video(args.ir) or (is_video(args.output) and not _names_folder(args.output)
                                                   and Path(args.vis).is_dir()):
        return _run_video(args)
    from PIL import Image
    from tqdm.auto import tqdm

    from ..fusion import check_fuse_args, fuse, load_image, looks_swapped, segment, to_tensor_image
    from ..preview import make_preview

    check_fuse_args(args.batch_size, args.tile, args.overlap)
    pairs, problems = resolve_pairs(args.vis, args.ir)
    for p in problems:
        print(f'warning: {p}', file=sys.stderr)
    out, single, preview, pre_single, plan, skipped = _plan_outputs(args, pairs)
    for msg in skipped:
        print(f'note: {msg}', file=sys.stderr)
    if not plan:
        if not args.quiet:
            print(f'nothing to fuse: all {len(pairs)} output(s) exist in {out} (pass --overwrite to replace them)')
        return 0
    model = _load_model(args)
    want_seg = preview is not None and model.has_segmentation
    if preview is not None and not model.has_segmentation:
        print('note: this model has no segmentation classifier; previews show visible | infrared | fused',
              file=sys.stderr)
    amp = {'auto': None, 'on': True, 'off': False}[args.amp]
    ir_range = tuple(args.ir_range) if args.ir_range else 'minmax'
    written = []
    bar = tqdm(total=len(plan), unit='pair', disable=len(plan) < 2 or args.quiet)
    bad = []

    def skip(stem, e):
        if len(pairs) == 1:  # a single pair: an error with the reason, nothing claims to be written
            _remove_empty(created)
            raise e
        msg = f'{type(e).__name__}: {e}' if not isinstance(e, ValueError) else str(e)
        bad.append(f'{stem}: {msg}')
        print(f'warning: skipped {stem}: {msg}', file=sys.stderr)

    if args.tile is not None and args.tile < model.pad_multiple:  # once, not once per pair
        raise ValueError(f'--tile {args.tile} is smaller than {args.model}\'s pad multiple ({model.pad_multiple}); '
                         f'use --tile {model.pad_multiple} or more (with --overlap < tile / 2)')
    fuse_kw = dict(model=model, tile=args.tile, overlap=args.overlap, amp=amp, ir_range=ir_range)
    # the folders are made only now, once the model and --tile are known good, and removed again
    # (those this run made, while empty) when no pair is written
    created: List[Path] = []
    try:
        created += _make_folder(out.parent if single else out)
        if preview is not None:
            created += _make_folder(preview.parent if pre_single else preview)
    except OSError as e:
        _remove_empty(created)
        raise OutputError(f'cannot create the output folder: {e}') from None

    def fuse_pairs(v, i, **kw):  # the pair's own one-line note (check_swapped) replaces fuse()'s warning
        with _without_swap_warning():
            return fuse(v, i, **kw, **fuse_kw)

    def check_swapped(stem, vp, ip, v, i):
        with warnings.catch_warnings():  # fuse() gives the input warnings once
            warnings.simplefilter('ignore')
            vt, it = to_tensor_image(v, 'visible')[0], to_tensor_image(i, 'infrared', ir_range)[0]
        if looks_swapped(vt, it):
            print(f'warning: {stem}: the infrared input {str(ip)!r} has colour and the visible input {str(vp)!r} is '
                  'grey: they look swapped (mtvif fuse VISIBLE INFRARED); fused as given, the infrared colour is '
                  'discarded', file=sys.stderr)
    for start in range(0, len(plan), args.batch_size):
        chunk = plan[start:start + args.batch_size]
        loaded = []
        for stem, vp, ip, dst, pdst in chunk:
            try:
                v, i = load_image(vp, 'visible'), load_image(ip, 'infrared')
                check_swapped(stem, vp, ip, v, i)
                loaded.append((stem, v, i, dst, pdst))
            except Exception as e:  # noqa: BLE001 - every per-pair failure is reported and skipped
                skip(stem, e)
        if not loaded:
            bar.update(len(chunk))
            continue
        try:
            fused = fuse_pairs([x[1] for x in loaded], [x[2] for x in loaded], batch_size=args.batch_size)
        except Exception:  # noqa: BLE001 - one bad pair in the chunk: pair by pair to name it
            fused = []
            for stem, v, i, _, _ in loaded:
                try:
                    fused.append(fuse_pairs(v, i))
                except Exception as e1:  # noqa: BLE001
                    skip(stem, e1)
                    fused.append(None)
        for (stem, v, i, dst, pdst), f in zip(loaded, fused):
            if f is None:
                continue
            try:
                f8 = _u8(f)
                pic = None
                if pdst is not None:
                    with _without_swap_warning():  # a swapped pair was named once already (check_swapped)
                        classes = segment(v, i, model=model, amp=amp, ir_range=ir_range) if want_seg else None
                    pic = make_preview(_display(v), _display(i), f8, classes, title=stem)
            except Exception as e:  # noqa: BLE001
                skip(stem, e)
                continue
            target = dst
            try:
                _save_atomic(Image.fromarray(f8), dst)
                written.append(dst)
                if pic is not None:
                    target = pdst
                    _save_atomic(pic, pdst)
            except OSError as e:  # full disk, read-only file system...: the next pair would fail the same way
                bar.close()
                if not written:
                    _remove_empty(created)
                raise OutputError(f'cannot write {"preview " if target is pdst else ""}{str(target)!r}: '
                                  f'{e.strerror or e}; stopped after {len(written)} complete fused image(s), '
                                  'no partial file left') from None
        bar.update(len(chunk))
    bar.close()
    if not written:
        _remove_empty(created)
    if not args.quiet:
        where = written[0] if single and written else out
        print(f'fused {len(written)} pair(s) with {args.model} -> {where}'
              + (f'; previews -> {preview}' if preview is not None else '')
              + (f'; {len(bad)} pair(s) failed (listed above)' if bad else ''))
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
    p.add_argument('--amp', choices=('auto', 'on', 'off'), default='auto',
                   help='autocast [auto: on for CUDA and for CPUs with native bf16 units (AMX / AVX512-BF16: bf16), '
                        'fp32 on other CPUs]; on: autocast (bf16 on CPU); off: fp32')
    p.add_argument('--ir-range', type=float, nargs=2, metavar=('LOW', 'HIGH'),
                   help='raw 16-bit infrared range mapped to [0, 1] [per-image min-max]')
    p.add_argument('--preview', help='file (single pair) or folder for visible|infrared|fused|segmentation strips')
    p.add_argument('--format', default='png', choices=('png', 'jpg', 'bmp', 'tif'))
    p.add_argument('--overwrite', action='store_true',
                   help='replace existing output files (default: an existing file is an error for one pair and '
                        'is skipped in folder mode; inputs are never overwritten)')
    p.add_argument('--fps', type=float, help='video output from a visible frame folder: frame rate [25] '
                   '(a visible video keeps its own rate)')
    p.add_argument('--resize-ir', action='store_true', help='video: resize infrared frames to the visible '
                   'size (bilinear) instead of stopping on a size mismatch')
    p.add_argument('--codec', help='video output codec [libx264, crf 18]')
    p.add_argument('--no-tune-allocator', action='store_true', help='CPU: leave glibc\'s allocator as it is '
                   '(default: mtvif_zoo.fusion.tune_cpu_allocator(), as mtvif bench does)')
    p.add_argument('-q', '--quiet', action='store_true')
    p.set_defaults(func=run)
