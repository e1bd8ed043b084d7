"""Video and frame streams (issue 19 point 10): ``mtvif fuse vis.mp4 ir.mp4 -o fused.mp4`` on a short
clip built from the shipped sample frames; frame folders; mismatches as clear errors."""
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mtvif_zoo
from mtvif_zoo.cli import main
from mtvif_zoo.video import FrameStream, fuse_video

av = pytest.importorskip('av', reason='the video extra is not installed (pip install ".[video]")')

EXAMPLES = Path(__file__).resolve().parents[1] / 'examples'

MODEL = 'seafusion.mfnet220'
H, W, N = 48, 64, 5


def _frames(role, n=N, h=H, w=W):
    """n frames panning across the shipped 00036N pair (visible RGB, infrared grey)."""
    sub, mode = ('vi', 'RGB') if role == 'vis' else ('ir', 'L')
    img = np.asarray(Image.open(EXAMPLES / sub / '00036N.png').convert(mode))
    return [img[200:200 + h, 250 + 6 * k:250 + 6 * k + w] for k in range(n)]


def _write_video(path, frames, fps, audio=False):
    with av.open(str(path), 'w') as c:
        s = c.add_stream('libx264', rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = 'yuv420p'
        s.options = {'crf': '10'}
        if audio:  # a stereo AAC track, which the fusion must ignore
            a = c.add_stream('aac', rate=44100)
            samples = np.zeros((2, 44100 // 5), dtype=np.float32)
            af = av.AudioFrame.from_ndarray(samples, format='fltp', layout='stereo')
            af.sample_rate = 44100
            for p in a.encode(af):
                c.mux(p)
            for p in a.encode():
                c.mux(p)
        for f in frames:
            rgb = f if f.ndim == 3 else np.repeat(f[..., None], 3, axis=2)
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format='rgb24')):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp('clip')
    _write_video(d / 'vis.mp4', _frames('vis'), 10, audio=True)
    _write_video(d / 'ir.mp4', _frames('ir'), 10)
    return d


@pytest.fixture(scope='module')
def model():
    return mtvif_zoo.create_model(MODEL, pretrained=True)


def test_fuse_video_cli(clip, model, tmp_path):
    out = tmp_path / 'fused.mp4'
    assert main(['fuse', str(clip / 'vis.mp4'), str(clip / 'ir.mp4'), '-o', str(out), '--model', MODEL,
                 '--batch-size', '2', '-q']) == 0
    with av.open(str(out)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 0  # audio not copied
        s = c.streams.video[0]
        assert s.average_rate == Fraction(10) and (s.height, s.width) == (H, W)
        got = [f.to_ndarray(format='rgb24') for f in c.decode(s)]
    assert len(got) == N
    # the fused frames of the decoded inputs, as fuse() gives them (the H.264 output is lossy: crf 18)
    vis, ir = list(FrameStream(clip / 'vis.mp4', 'visible')), list(FrameStream(clip / 'ir.mp4', 'infrared'))
    ref = mtvif_zoo.fuse(vis, ir, model=model)
    assert np.mean([np.abs(g.astype(float) - r).mean() for g, r in zip(got, ref)]) < 3


def test_video_to_frame_folder_is_exact_and_batched(clip, model, tmp_path):
    info = fuse_video(clip / 'vis.mp4', clip / 'ir.mp4', tmp_path / 'frames', model=model, batch_size=2,
                      progress=False)
    assert info['frames'] == N and info['fps'] == 10 and info['size'] == (H, W)
    names = sorted(p.name for p in (tmp_path / 'frames').iterdir())
    assert names == [f'{k:06d}.png' for k in range(N)]
    vis, ir = list(FrameStream(clip / 'vis.mp4', 'visible')), list(FrameStream(clip / 'ir.mp4', 'infrared'))
    for k in (0, N - 1):
        ref = mtvif_zoo.fuse(vis[k], ir[k], model=model)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'frames' / names[k])), ref)


def test_frame_folders_to_video(model, tmp_path):
    for role in ('vis', 'ir'):
        (tmp_path / role).mkdir()
        for k, f in enumerate(_frames(role, n=3)):
            Image.fromarray(f).save(tmp_path / role / f'f{k:03d}.png')
    out = tmp_path / 'out.mkv'
    assert main(['fuse', str(tmp_path / 'vis'), str(tmp_path / 'ir'), '-o', str(out), '--model', MODEL,
                 '--fps', '12', '-q']) == 0
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.average_rate == Fraction(12)
        assert sum(1 for _ in c.decode(s)) == 3


def test_mismatches_are_clear_errors(clip, model, tmp_path):
    _write_video(tmp_path / 'ir_short.mp4', _frames('ir', n=3), 10)
    with pytest.raises(ValueError, match=r'frame counts differ: visible .*5 frames.*infrared .*3 frames'):
        fuse_video(clip / 'vis.mp4', tmp_path / 'ir_short.mp4', tmp_path / 'o.mp4', model=model, progress=False)
    _write_video(tmp_path / 'ir_fps.mp4', _frames('ir'), 15)
    with pytest.raises(ValueError, match='frame rates differ: .*10 fps.*15 fps'):
        fuse_video(clip / 'vis.mp4', tmp_path / 'ir_fps.mp4', tmp_path / 'o.mp4', model=model, progress=False)
    big = [np.asarray(Image.fromarray(f).resize((2 * W, 2 * H), Image.BILINEAR)) for f in _frames('ir')]
    _write_video(tmp_path / 'ir_big.mp4', big, 10)
    with pytest.raises(ValueError, match=r'frame sizes differ: .*48x64.*96x128.*--resize-ir'):
        fuse_video(clip / 'vis.mp4', tmp_path / 'ir_big.mp4', tmp_path / 'o.mp4', model=model, progress=False)
    assert not (tmp_path / 'o.mp4').exists()
    # the documented resize: the infrared frames are brought to the visible size
    info = fuse_video(clip / 'vis.mp4', tmp_path / 'ir_big.mp4', tmp_path / 'r', model=model, progress=False,
                      resize_ir=True)
    assert info['frames'] == N
    assert np.asarray(Image.open(tmp_path / 'r' / '000000.png')).shape == (H, W, 3)
    # CLI: the same error as one line, exit 2, nothing written
    assert main(['fuse', str(clip / 'vis.mp4'), str(tmp_path / 'ir_short.mp4'), '-o', str(tmp_path / 'c.mp4'),
                 '--model', MODEL, '-q']) == 2
    assert not (tmp_path / 'c.mp4').exists()
