"""``mtvif fuse``: a pair, folders matched by stem, globs, previews, and problems named by file."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtvif_zoo import create_model, segment
from mtvif_zoo.cli import main
from mtvif_zoo.cli.fuse import resolve_pairs
from mtvif_zoo.preview import MSRS_PALETTE, make_preview, overlay

EXAMPLES = Path(__file__).resolve().parents[1] / 'examples'


@pytest.fixture
def pair_dirs(tmp_path, rng):
    vi, ir = tmp_path / 'vi', tmp_path / 'ir'
    vi.mkdir(), ir.mkdir()
    for stem in ('a', 'b', 'c'):
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(vi / f'{stem}.png')
        if stem != 'c':
            Image.fromarray(rng.integers(0, 256, (24, 40), dtype=np.uint8)).save(ir / f'{stem}.png')
    Image.fromarray(rng.integers(0, 256, (24, 40), dtype=np.uint8)).save(ir / 'd.png')
    return vi, ir


def test_resolve_pairs_by_stem(pair_dirs):
    vi, ir = pair_dirs
    pairs, problems = resolve_pairs(str(vi), str(ir))
    assert [s for s, _, _ in pairs] == ['a', 'b']
    assert any('no infrared partner for' in p and p.endswith('c.png') for p in problems)
    assert any('no visible partner for' in p and p.endswith('d.png') for p in problems)
    pairs, problems = resolve_pairs(str(vi / '[ab].png'), str(ir))
    assert [s for s, _, _ in pairs] == ['a', 'b'] and problems == []
    with pytest.raises(FileNotFoundError, match='no images match the visible pattern'):
        resolve_pairs(str(vi / 'z*.png'), str(ir))
    with pytest.raises(FileNotFoundError, match='infrared image not found'):
        resolve_pairs(str(vi / 'a.png'), str(ir / 'zz.png'))


def test_fuse_folders_with_preview(pair_dirs, tmp_path, capsys):
    vi, ir = pair_dirs
    out, prev = tmp_path / 'out', tmp_path / 'prev'
    rc = main(['fuse', str(vi), str(ir), '-o', str(out), '--preview', str(prev), '--random-init', '-q',
               '--model', 'mtvif_iv', '--device', 'cpu'])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ['a.png', 'b.png']
    assert Image.open(out / 'a.png').size == (40, 24)
    strip = Image.open(prev / 'a.png')
    assert strip.size[0] == 4 * 40  # visible | infrared | fused | segmentation
    assert 'no infrared partner' in capsys.readouterr().err


def test_fuse_single_pair_file_output(tmp_path):
    # a quarter-size copy of the shipped pair (the full one is a slow test)
    v, i = tmp_path / 'v.png', tmp_path / 'i.png'
    Image.open(EXAMPLES / 'vi' / '00036N.png').resize((160, 120)).save(v)
    Image.open(EXAMPLES / 'ir' / '00036N.png').resize((160, 120)).save(i)
    rc = main(['fuse', str(v), str(i), '-o', str(tmp_path / 'f.png'), '--random-init', '-q', '--model', 'seafusion',
               '--device', 'cpu', '--preview', str(tmp_path / 'p.png')])
    assert rc == 0
    assert Image.open(tmp_path / 'f.png').size == (160, 120)
    assert Image.open(tmp_path / 'p.png').size[0] == 3 * 160  # baseline: no segmentation panel


def test_unreadable_pair_is_named_not_fatal(pair_dirs, tmp_path, capsys):
    vi, ir = pair_dirs
    (ir / 'a.png').write_bytes(b'garbage')
    rc = main(['fuse', str(vi), str(ir), '-o', str(tmp_path / 'o'), '--random-init', '-q', '--model', 'seafusion',
               '--device', 'cpu'])
    assert rc == 1  # some written, some skipped
    assert (tmp_path / 'o' / 'b.png').exists() and not (tmp_path / 'o' / 'a.png').exists()
    assert "a.png' is not a readable image file" in capsys.readouterr().err


def test_segment_and_overlay(small_pair):
    vis, ir = small_pair
    torch.manual_seed(0)
    m = create_model('mtvif_iii').eval()
    cls = segment(vis, ir, model=m)
    assert cls.shape == (40, 56) and cls.dtype == np.uint8 and cls.max() < 9
    with torch.no_grad():
        ref = m.segment(torch.from_numpy(vis).permute(2, 0, 1)[None].float() / 255,
                        (torch.from_numpy(ir)[None, None].float() / 255).expand(-1, 3, -1, -1)).argmax(1)[0]
    assert np.array_equal(cls, ref.numpy())
    ov = overlay(vis, np.full((40, 56), 2, np.uint8), alpha=1.0)
    assert (ov == MSRS_PALETTE[2]).all()
    assert np.array_equal(overlay(vis, np.zeros((40, 56), np.uint8)), vis)  # unlabelled keeps the image
    pic = make_preview(vis, ir, vis, cls)
    assert pic.size[0] == 4 * 56 and pic.size[1] > 40
    with pytest.raises(ValueError, match='no segmentation classifier'):
        segment(vis, ir, model=m.fusion_only())
