"""Video and frame streams: ``fuse_video(vis, ir, output)`` / ``mtvif fuse vis.mp4 ir.mp4 -o fused.mp4``.

Each input is a video file (read with PyAV: ``pip install 'mtvif_zoo[video]'``) or a folder of frames
(image files in name order); the output is a video file or a folder of PNG frames. Frames are fused
in batches of ``batch_size`` with :func:`mtvif_zoo.fuse` (so everything ``fuse()`` does applies:
any size, grey or RGB visible, 16-bit thermal frames of a folder min-max scaled per frame).

* **what must match**: the frame count, the frame rate (two videos; 0.1 % tolerance) and the frame
  size. A mismatch raises :class:`ValueError` naming both values and the fix, before anything is
  written when the counts are in the containers' headers, otherwise at the first frame that has no
  partner (the partial output is removed). ``resize_ir=True`` instead resizes each infrared frame
  to the visible size (bilinear; only for a rigidly registered pair whose sensors differ in
  resolution -- it does not register anything).
* **output**: the visible stream's frame rate (for a visible frame folder: ``fps``, default 25),
  H.264 (``libx264``, ``crf`` 18, yuv420p; yuv444p when a side is odd) unless ``codec`` says
  otherwise; audio and any other streams of the inputs are ignored. A folder output gets
  ``000000.png``, ``000001.png``, ... (lossless).
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np

__all__ = ['VIDEO_SUFFIXES', 'is_video', 'FrameStream', 'fuse_video']

VIDEO_SUFFIXES = {'.mp4', '.mov', '.avi', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.ts', '.wmv', '.gif'}
IMAGE_SUFFIXES = {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp'}
PathLike = Union[str, os.PathLike]


def is_video(path: PathLike) -> bool:
    """A path whose suffix is a video container (it need not exist yet)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av():
    try:
        import av
    except ImportError as e:
        raise ImportError(f'video files need PyAV: pip install "mtvif_zoo[video]" ({e}); '
                          'frame folders work without it') from e
    return av


class FrameStream:
    """Frames of a video file or a frame folder: ``count`` (``None`` if the container does not say),
    ``fps`` (``None`` for a folder), ``size`` ``(H, W)`` of the first frame; iterating yields
    ``H x W x 3`` uint8 arrays (video) or the frames as :func:`mtvif_zoo.fusion.load_image` reads them."""

    def __init__(self, path: PathLike, role: str):
        self.path, self.role = Path(path), role
        if not self.path.exists():
            raise FileNotFoundError(f'{role} input not found: {str(self.path)!r}')
        if self.path.is_dir():
            self.frames = [p for p in sorted(self.path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
            if not self.frames:
                raise ValueError(f'{role} frame folder {str(self.path)!r} has no image files '
                                 f'({", ".join(sorted(IMAGE_SUFFIXES))})')
            self.count: Optional[int] = len(self.frames)
            self.fps: Optional[Fraction] = None
            self.size = self._load(self.frames[0]).shape[:2]
        elif is_video(self.path):
            av = _av()
            try:
                with av.open(str(self.path)) as c:
                    if not c.streams.video:
                        raise ValueError(f'{role} file {str(self.path)!r} has no video stream')
                    s = c.streams.video[0]
                    self.count = int(s.frames) or None
                    self.fps = s.average_rate or s.guessed_rate
                    self.size = (s.codec_context.height, s.codec_context.width)
            except av.error.FFmpegError as e:
                raise ValueError(f'{role} file {str(self.path)!r} is not a readable video: {e}') from e
            self.frames = None
        else:
            raise ValueError(f'{role} input {str(self.path)!r} is neither a video file '
                             f'({", ".join(sorted(VIDEO_SUFFIXES))}) nor a folder of frames')

    def _load(self, p: Path) -> np.ndarray:
        from .fusion import load_image
        return load_image(p, f'{self.role} frame')

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.frames is not None:
            for p in self.frames:
                yield self._load(p)
            return
        av = _av()
        with av.open(str(self.path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = 'AUTO'
            for frame in c.decode(stream):  # the first video stream only: audio is never decoded
                yield frame.to_ndarray(format='rgb24')

    def describe(self) -> str:
        n = 'unknown' if self.count is None else self.count
        fps = '' if self.fps is None else f', {float(self.fps):g} fps'
        return f'{self.role} {str(self.path)!r}: {n} frames, {self.size[0]}x{self.size[1]} (HxW){fps}'


class _Writer:
    def __init__(self, path: Path, fps: Fraction, codec: Optional[str], crf: int):
        self.path, self.fps, self.codec, self.crf = path, fps, codec, crf
        self.container = self.stream = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        if not is_video(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(self.path / f'{self.count:06d}.png')
            self.count += 1
            return
        if self.container is None:
            av = _av()
            h, w = frame.shape[:2]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.path), 'w')
            codec = self.codec or 'libx264'
            self.stream = self.container.add_stream(codec, rate=self.fps)
            self.stream.width, self.stream.height = w, h
            odd = h % 2 or w % 2
            self.stream.pix_fmt = 'yuv444p' if (odd and codec == 'libx264') else 'yuv420p'
            if codec == 'libx264':
                self.stream.options = {'crf': str(self.crf)}
        av = _av()
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None


def _resize(frame: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    from PIL import Image
    h, w = size
    if frame.dtype == np.uint8:
        return np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))
    f = frame.astype(np.float32)
    chans = [np.asarray(Image.fromarray(f[..., c] if f.ndim == 3 else f, mode='F').resize((w, h), Image.BILINEAR))
             for c in range(f.shape[2] if f.ndim == 3 else 1)]
    out = np.stack(chans, axis=-1) if f.ndim == 3 else chans[0]
    return out.round().clip(0, np.iinfo(frame.dtype).max).astype(frame.dtype) if frame.dtype.kind == 'u' else out


def _remove(path: Path) -> None:
    if path.is_file():
        path.unlink()


def _same_path(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same existing file or folder (links, ``..`` and hard links
    resolved: the same device and inode)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (yet)
        return False


def fuse_video(vis: PathLike, ir: PathLike, output: PathLike, model=None, *, batch_size: int = 8,
               fps: Optional[float] = None, resize_ir: bool = False, codec: Optional[str] = None, crf: int = 18,
               progress: bool = True, **fuse_kwargs) -> dict:
    """Fuse a visible and an infrared stream (video files or frame folders) frame by frame into
    ``output`` (a video file or a folder of PNG frames); see the module docstring for the rules.

    ``model``: as for :func:`mtvif_zoo.fuse` (a model or a name; ``None`` = the default weights).
    ``fps``: output frame rate when the visible input is a frame folder (default 25); a video
    output always keeps a visible *video*'s rate. ``fuse_kwargs`` go to :func:`mtvif_zoo.fuse`
    (``tile``, ``amp``, ``ir_range``, ...). Returns ``{'frames', 'fps', 'size', 'output'}``.
    """
    from tqdm.auto import tqdm

    from .fusion import _resolve_model, fuse
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    for src, role in ((vis, 'visible'), (ir, 'infrared')):  # never write over an input (issue 18, case 1)
        if _same_path(output, src):
            raise ValueError(f'output {str(output)!r} is the {role} input {str(src)!r} (the same file or folder): '
                             'writing there would destroy it; choose another output path')
    vs, irs = FrameStream(vis, 'visible'), FrameStream(ir, 'infrared')
    if vs.count is not None and irs.count is not None and vs.count != irs.count:
        raise ValueError(f'frame counts differ: {vs.describe()}; {irs.describe()}. Trim the longer one '
                         '(e.g. ffmpeg -i IN -frames:v N OUT) so that frame k of both shows the same instant')
    if vs.fps is not None and irs.fps is not None and abs(float(vs.fps) - float(irs.fps)) > 1e-3 * float(vs.fps):
        raise ValueError(f'frame rates differ: {vs.describe()}; {irs.describe()}. Resample one stream to the '
                         'other\'s rate first (e.g. ffmpeg -i IN -r FPS OUT): fusing frame k with frame k would '
                         'pair different instants')
    if tuple(vs.size) != tuple(irs.size) and not resize_ir:
        raise ValueError(f'frame sizes differ: {vs.describe()}; {irs.describe()}. Register the streams to the '
                         'same size, or pass resize_ir=True (--resize-ir) to resize each infrared frame to the '
                         'visible size (bilinear) when the cameras are already aligned')
    out_fps = vs.fps if vs.fps is not None else Fraction(fps if fps is not None else 25).limit_denominator(1001)
    output = Path(output)
    if output.exists() and output.is_dir() and is_video(output):
        raise ValueError(f'output {str(output)!r} is a folder, expected a video file')
    model = _resolve_model(model)
    writer = _Writer(output, out_fps, codec, crf)
    total = vs.count if vs.count is not None else irs.count
    bar = tqdm(total=total, unit='frame', disable=not progress)
    batch_v: List[np.ndarray] = []
    batch_i: List[np.ndarray] = []
    n = 0

    def flush():
        for f in fuse(batch_v, batch_i, model=model, batch_size=batch_size, **fuse_kwargs):
            writer.write(f)
        bar.update(len(batch_v))
        batch_v.clear(), batch_i.clear()

    ok = False
    try:
        it_v, it_i = iter(vs), iter(irs)
        while True:
            v, i = next(it_v, None), next(it_i, None)
            if v is None or i is None:
                if v is not None or i is not None:
                    longer, shorter = (vs, irs) if v is not None else (irs, vs)
                    raise ValueError(f'the {shorter.role} stream ended after {n} frames but the {longer.role} '
                                     f'stream has more ({vs.describe()}; {irs.describe()}); trim the longer one '
                                     'so that both have the same number of frames')
                break
            if i.shape[:2] != v.shape[:2]:
                if not resize_ir:
                    raise ValueError(f'frame {n}: visible is {v.shape[0]}x{v.shape[1]} but infrared is '
                                     f'{i.shape[0]}x{i.shape[1]} (HxW); pass resize_ir=True (--resize-ir) to '
                                     'resize the infrared to the visible size')
                i = _resize(i, v.shape[:2])
            batch_v.append(v), batch_i.append(i)
            n += 1
            if len(batch_v) == batch_size:
                flush()
        if batch_v:
            flush()
        ok = True
    finally:
        bar.close()
        writer.close()
        if not ok:
            _remove(output)
    if n == 0:
        raise ValueError(f'no frames to fuse: {vs.describe()}; {irs.describe()}')
    return {'frames': n, 'fps': float(out_fps), 'size': tuple(vs.size), 'output': output}
