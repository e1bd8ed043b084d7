"""Issue 18, fuse / weights side: nothing lost, nothing silent, one-line errors (cases 1, 3-6, 8, 13, 18, 19)."""
import errno
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtvif_zoo import create_model, fuse
from mtvif_zoo.cli import main
from mtvif_zoo.weights import WeightsMismatchError, load_weights, save_weights

FAST = ['--random-init', '-q', '--model', 'seafusion', '--device', 'cpu']


@pytest.fixture
def pair_dirs(tmp_path, rng):
    vi, ir = tmp_path / 'vi', tmp_path / 'ir'
    vi.mkdir(), ir.mkdir()
    for stem in ('a', 'b'):
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(vi / f'{stem}.png')
        Image.fromarray(rng.integers(0, 256, (24, 40), dtype=np.uint8)).save(ir / f'{stem}.png')
    return vi, ir


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return create_model('seafusion').eval()


def _snapshot(*dirs):
    return {p: p.read_bytes() for d in dirs for p in sorted(Path(d).rglob('*')) if p.is_file()}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)


# ------------------------------------------------------------------ 1. inputs are never overwritten
def test_output_equal_to_input_is_refused_single_pair(pair_dirs, capsys):
    vi, ir = pair_dirs
    before = _snapshot(vi, ir)
    rc = main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(vi / 'a.png')] + FAST)
    assert rc == 2
    assert _snapshot(vi, ir) == before
    err = capsys.readouterr().err
    assert 'is one of the inputs' in err and err.count('\n') == 1


def test_output_through_a_link_to_an_input_is_refused(pair_dirs, tmp_path):
    vi, ir = pair_dirs
    link = tmp_path / 'link.png'
    link.symlink_to(vi / 'a.png')
    before = _snapshot(vi, ir)
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(link)] + FAST) == 2
    assert _snapshot(vi, ir) == before


def test_output_that_is_the_input_under_another_name_is_refused(pair_dirs, tmp_path, capsys):
    """The same file under another name (a hard link here; another spelling of the name on a
    case-insensitive file system, where realpath keeps the spelling given) is an input too."""
    vi, ir = pair_dirs
    other = tmp_path / 'other.png'
    os.link(vi / 'a.png', other)
    before = _snapshot(vi, ir)
    rc = main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(other), '--overwrite'] + FAST)
    assert rc == 2 and _snapshot(vi, ir) == before and other.read_bytes() == before[vi / 'a.png']
    assert 'is one of the inputs' in capsys.readouterr().err


def test_output_folder_equal_to_input_folder_is_refused(pair_dirs, capsys):
    vi, ir = pair_dirs
    before = _snapshot(vi, ir)
    assert main(['fuse', str(vi), str(ir), '-o', str(vi)] + FAST) == 2
    assert main(['fuse', str(vi), str(ir), '-o', str(ir) + '/']) == 2
    assert _snapshot(vi, ir) == before
    assert 'input folder' in capsys.readouterr().err


def test_preview_cannot_replace_the_fused_image(pair_dirs, tmp_path):
    vi, ir = pair_dirs
    out = tmp_path / 'o'
    assert main(['fuse', str(vi), str(ir), '-o', str(out), '--preview', str(out)] + FAST) == 2
    assert not out.exists()


def test_existing_output_needs_overwrite(pair_dirs, tmp_path, capsys):
    vi, ir = pair_dirs
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'a.png').write_bytes(b'keep me')
    rc = main(['fuse', str(vi), str(ir), '-o', str(out)] + FAST)
    assert rc == 0
    assert (out / 'a.png').read_bytes() == b'keep me'  # skipped, with a message
    assert Image.open(out / 'b.png').size == (40, 24)
    assert 'already exists' in capsys.readouterr().err
    single = tmp_path / 'f.png'
    single.write_bytes(b'keep me too')
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(single)] + FAST) == 2
    assert single.read_bytes() == b'keep me too'
    assert main(['fuse', str(vi), str(ir), '-o', str(out), '--overwrite'] + FAST) == 0
    assert Image.open(out / 'a.png').size == (40, 24)


# ------------------------------------------------------------------ 3. / 4. weight files
def test_empty_weight_file_is_refused(tmp_path, pair_dirs, capsys):
    from safetensors.torch import save_file
    empty = tmp_path / 'empty.safetensors'
    save_file({}, str(empty))
    m = create_model('seafusion')
    with pytest.raises(WeightsMismatchError, match='missing keys'):
        load_weights(m, empty)
    with pytest.raises(WeightsMismatchError, match='none of the model'):
        load_weights(m, empty, strict=False)
    vi, ir = pair_dirs
    rc = main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(tmp_path / 'f.png'), '--weights', str(empty),
               '--model', 'seafusion', '--device', 'cpu', '-q'])
    assert rc == 2 and not (tmp_path / 'f.png').exists()
    assert 'missing keys' in capsys.readouterr().err
    # mtvif eval --model ... --weights: the same rule (it loaded with strict=False before)
    rc = main(['eval', '--model', 'seafusion', '--weights', str(empty), '--vis', str(vi), '--ir', str(ir),
               '--device', 'cpu', '-q'])
    assert rc == 2 and 'missing keys' in capsys.readouterr().err


def test_partial_loading_lists_missing_keys(tmp_path):
    from safetensors.torch import save_file
    m = create_model('seafusion')
    sd = m.state_dict()
    first = next(iter(sd))
    part = tmp_path / 'part.safetensors'
    save_file({k: v.contiguous() for k, v in sd.items() if k != first}, str(part))
    torch.manual_seed(1)
    fresh = create_model('seafusion')
    kept = fresh.state_dict()[first].clone()
    with pytest.warns(UserWarning, match=f'missing keys.*{first}'):
        load_weights(fresh, part, strict=False)
    got = fresh.state_dict()
    assert torch.equal(got[first], kept)  # the missing tensor keeps the model's own value
    assert all(torch.equal(got[k], v) for k, v in sd.items() if k != first)  # the rest came from the file


def test_fusion_only_weights_load_in_the_cli(tmp_path, pair_dirs):
    """The legitimate partial case (fusion-only weights into a multi-task model) still works in the CLI."""
    torch.manual_seed(0)
    m = create_model('mtvif_iii').fusion_only()
    save_weights(m, tmp_path / 'fo.safetensors')
    vi, ir = pair_dirs
    rc = main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(tmp_path / 'f.png'), '--weights',
               str(tmp_path / 'fo.safetensors'), '--model', 'mtvif_iii', '--device', 'cpu', '-q'])
    assert rc == 0 and Image.open(tmp_path / 'f.png').size == (40, 24)


@pytest.mark.parametrize('dtype', [torch.int32, torch.int8, torch.bool, torch.complex64])
def test_non_floating_weights_are_refused(tmp_path, dtype):
    from safetensors.torch import save_file
    m = create_model('seafusion')
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key].to(dtype)
    f = tmp_path / 'w.safetensors'
    save_file(sd, str(f))
    with pytest.raises(WeightsMismatchError, match=f'{key}: dtype {str(dtype).replace("torch.", "")}'):
        load_weights(create_model('seafusion'), f)


# ------------------------------------------------------------------ 5. / 19. fuse() arguments
@pytest.mark.parametrize('kw,match', [
    (dict(tile=64, overlap=-32), 'overlap'),
    (dict(tile=64, overlap=32), 'overlap'),
    (dict(tile=0), 'tile'),
    (dict(tile=64.5), 'tile'),
    (dict(batch_size=0), 'batch_size'),
    (dict(batch_size=-1), 'batch_size'),
])
def test_fuse_arguments_validated(tiny, small_pair, kw, match):
    vis, ir = small_pair
    with pytest.raises(ValueError, match=match):
        fuse(vis, ir, model=tiny, **kw)


def test_meta_tensors_are_refused(tiny):
    v = torch.empty(3, 16, 16, device='meta')
    with pytest.raises(ValueError, match='meta'):
        fuse(v, torch.rand(1, 16, 16), model=tiny)


def test_meta_model_is_refused(small_pair):
    vis, ir = small_pair
    with torch.device('meta'):
        m = create_model('seafusion')
    with pytest.raises(ValueError, match='meta device'):
        fuse(vis, ir, model=m)


def test_cli_batch_size_zero_is_one_line(pair_dirs, tmp_path, capsys):
    vi, ir = pair_dirs
    assert main(['fuse', str(vi), str(ir), '-o', str(tmp_path / 'o'), '--batch-size', '0'] + FAST) == 2
    assert 'batch' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


# ------------------------------------------------------------------ 6. array dtypes
@pytest.mark.parametrize('dtype', [np.int32, np.int64, np.int16, np.int8])
def test_signed_or_wide_integer_arrays_are_refused(tiny, small_pair, dtype):
    vis, ir = small_pair
    with pytest.raises(ValueError, match=r'uint8.*uint16'):
        fuse(vis.astype(dtype), ir, model=tiny)


def test_complex_arrays_are_refused(tiny, small_pair):
    vis, ir = small_pair
    with pytest.raises(ValueError, match='complex'):
        fuse(vis, ir.astype(np.complex64) / 255, model=tiny)
    with pytest.raises(ValueError, match='complex'):
        fuse(torch.from_numpy(vis).permute(2, 0, 1).to(torch.complex64) / 255, torch.rand(1, 40, 56), model=tiny)


# ------------------------------------------------------------------ 8. swapped inputs
def test_swapped_inputs_warn(tiny, small_pair, rng):
    vis, ir = small_pair
    with pytest.warns(UserWarning, match='swapped'):
        swapped = fuse(ir, vis, model=tiny)
    assert swapped.shape[:2] == vis.shape[:2]  # a warning, still a fused image of the pair's size
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        right = fuse(vis, ir, model=tiny)  # the right order: no warning
        grey = fuse(ir, np.repeat(ir[..., None], 3, axis=2), model=tiny)  # grey + replicated grey: no warning
    assert right.shape[:2] == grey.shape[:2] == vis.shape[:2]


# ------------------------------------------------------------------ 13. decompression bomb, folder mode keeps going
def _bomb_png(path: Path):
    ihdr = struct.pack('>IIBBBBB', 30000, 30000, 8, 0, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr) +
                     _png_chunk(b'IDAT', zlib.compress(b'\0' * 64)) + _png_chunk(b'IEND', b''))


def test_decompression_bomb_is_a_value_error(tmp_path):
    from mtvif_zoo.fusion import load_image
    _bomb_png(tmp_path / 'bomb.png')
    with pytest.raises(ValueError, match='pixels'):
        load_image(tmp_path / 'bomb.png', 'visible')


def test_folder_named_like_an_image_is_named_a_folder(pair_dirs, tmp_path, capsys):
    """A folder called x.png among the inputs was reported as 'visible image not found'."""
    vi, ir = pair_dirs
    (vi / 'c.png').mkdir()
    (ir / 'c.png').write_bytes((ir / 'a.png').read_bytes())
    assert main(['fuse', str(vi), str(ir), '-o', str(tmp_path / 'o')] + FAST) == 1
    err = capsys.readouterr().err
    assert f"skipped c: visible image {str(vi / 'c.png')!r} is a folder, not an image file" in err
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['a.png', 'b.png']


def test_folder_mode_reports_and_skips_every_bad_pair(pair_dirs, tmp_path, capsys, rng):
    vi, ir = pair_dirs
    _bomb_png(vi / '0bomb.png')
    Image.fromarray(rng.integers(0, 256, (24, 40), dtype=np.uint8)).save(ir / '0bomb.png')
    rc = main(['fuse', str(vi), str(ir), '-o', str(tmp_path / 'o'), '--batch-size', '1'] + FAST)
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['a.png', 'b.png']
    assert '0bomb' in capsys.readouterr().err


# ------------------------------------------------------------------ 18. output errors
def test_output_under_a_file(pair_dirs, tmp_path, capsys):
    vi, ir = pair_dirs
    (tmp_path / 'afile').write_text('x')
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(tmp_path / 'afile' / 'f.png')] + FAST) == 2
    assert main(['fuse', str(vi), str(ir), '-o', str(tmp_path / 'afile' / 'sub')] + FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all('not a folder' in e for e in err)


@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root ignores folder permissions')
def test_read_only_output_folder(pair_dirs, tmp_path, capsys):
    vi, ir = pair_dirs
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(['fuse', str(vi), str(ir), '-o', str(ro)] + FAST) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and 'cannot write' in err[0]
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_permission_denied_at_write_time_is_one_line(pair_dirs, tmp_path, capsys, monkeypatch):
    """The read-only case as root sees it too (a read-only mount): the error comes from the write."""
    vi, ir = pair_dirs

    def denied(self, fp, *a, **k):
        raise PermissionError(errno.EACCES, 'Permission denied', str(fp))
    monkeypatch.setattr(Image.Image, 'save', denied)
    out = tmp_path / 'o'
    assert main(['fuse', str(vi), str(ir), '-o', str(out)] + FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'cannot write' in err[0] and 'Permission denied' in err[0]
    assert not out.exists()  # nothing written: the folder this run made is removed too


def test_full_disk_leaves_no_partial_file(pair_dirs, tmp_path, capsys, monkeypatch):
    vi, ir = pair_dirs
    real_save = Image.Image.save

    def full_disk(self, fp, *a, **k):
        with open(fp, 'wb') as f:  # some bytes land, then the disk is full
            f.write(b'\x89PNG partial')
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(Image.Image, 'save', full_disk)
    out = tmp_path / 'o'
    assert main(['fuse', str(vi), str(ir), '-o', str(out)] + FAST) == 2
    monkeypatch.setattr(Image.Image, 'save', real_save)
    assert not out.exists()  # no partial file, and the folder this run made is removed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'No space left' in err[0]
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(tmp_path / 'f.png')] + FAST) == 0


def test_output_suffix_rules(pair_dirs, tmp_path, capsys):
    vi, ir = pair_dirs
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(tmp_path / 'out.gif')] + FAST) == 2
    assert not (tmp_path / 'out.gif').exists()
    assert 'unsupported output format' in capsys.readouterr().err
    # several pairs and a file name: refused, not a folder called x.png
    assert main(['fuse', str(vi), str(ir), '-o', str(tmp_path / 'x.png')] + FAST) == 2
    assert not (tmp_path / 'x.png').exists()
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(tmp_path / 'x.jpg')] + FAST) == 0
    assert Image.open(tmp_path / 'x.jpg').format == 'JPEG'
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(tmp_path / 'new' / 'y.png')] + FAST) == 0
    assert Image.open(tmp_path / 'new' / 'y.png').size == (40, 24)


# ------------------------------------------------------------------ re-audit (issue 18 closing check)
def _int32_weights(tmp_path):
    from safetensors.torch import save_file
    m = create_model('seafusion')
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key].to(torch.int32)
    f = tmp_path / 'int32.safetensors'
    save_file(sd, str(f))
    return f, key


def test_pretrained_sources_refuse_non_floating_weights(tmp_path):
    """Case 4 through pretrained loading (checkpoint_path=, a file overlay, local-dir:): the int32
    tensor was cast into the float model (truncated) and the model built."""
    f, key = _int32_weights(tmp_path)
    with pytest.raises(ValueError, match=f'{key}: dtype int32 \\(model float32\\)'):
        create_model('seafusion', pretrained=True, checkpoint_path=f)
    with pytest.raises(ValueError, match=f'{key}: dtype int32'):
        create_model('seafusion', pretrained=True, pretrained_cfg_overlay=dict(file=str(f)))


def test_pretrained_sources_name_an_unreadable_file(tmp_path, pair_dirs, capsys):
    """An empty / truncated weight file given as a pretrained source: a one-line error naming the file
    (it was safetensors' own SafetensorError traceback, from inside timm)."""
    import json
    import shutil
    src = Path(__file__).resolve().parents[1] / 'mtvif_zoo' / 'hub' / 'weights' / 'seafusion.mfnet220'
    if not (src / 'model.safetensors').is_file():
        pytest.skip('the shipped seafusion.mfnet220 weights are not in this checkout')
    d = tmp_path / 'ld'
    shutil.copytree(src, d)
    good = (d / 'model.safetensors').read_bytes()
    (d / 'model.safetensors').write_bytes(good[:len(good) // 2])  # truncated (config.json records no sha256 then)
    cfg = d / 'config.json'
    c = json.loads(cfg.read_text())
    c.get('mtvif_zoo', {}).pop('files', None)
    cfg.write_text(json.dumps(c))
    with pytest.raises(ValueError, match='model.safetensors.* is not a readable safetensors file'):
        create_model('seafusion', pretrained=True, checkpoint_path=d / 'model.safetensors')
    vi, ir = pair_dirs
    out = tmp_path / 'f.png'
    rc = main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(out), '--model', f'local-dir:{d}',
               '--device', 'cpu', '-q'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert err[-1].startswith('mtvif fuse: error: ') and 'not a readable safetensors file' in err[-1]
    assert not any('Traceback' in e for e in err)
    from mtvif_zoo.hub.pretrained import check_safetensors
    (d / 'model.safetensors').write_bytes(good)
    check_safetensors(d / 'model.safetensors')  # an intact file passes the header check


@pytest.mark.parametrize('device,match', [('meta', 'holds no data'), ('foo', 'not a device name'),
                                          ('cuda:99', 'no such CUDA device')])
def test_cli_device_is_checked(pair_dirs, tmp_path, capsys, device, match):
    """``--device meta`` said to materialise a model (an API hint); an unknown name or a missing GPU
    gave a torch traceback."""
    vi, ir = pair_dirs
    out = tmp_path / 'f.png'
    rc = main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(out), '--random-init', '-q', '--model',
               'seafusion', '--device', device])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert len(err) == 1 and match in err[0] and 'use cpu' in err[0]


def test_cli_swapped_inputs_name_the_files(pair_dirs, tmp_path, capsys):
    """Case 8 in the CLI: one line naming the pair's files and the right order (it was Python's
    warning, located in torch's inference_mode wrapper and calling a single pair 'infrared #0')."""
    vi, ir = pair_dirs
    out = tmp_path / 'f.png'
    assert main(['fuse', str(ir / 'a.png'), str(vi / 'a.png'), '-o', str(out)] + FAST) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'look swapped' in err[0] and 'mtvif fuse VISIBLE INFRARED' in err[0]
    assert str(vi / 'a.png') in err[0] and str(ir / 'a.png') in err[0] and '#0' not in err[0]
    assert Image.open(out).size == (40, 24)
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(tmp_path / 'g.png')] + FAST) == 0
    assert capsys.readouterr().err == ''


def test_swapped_warning_points_at_the_caller(tiny, small_pair):
    vis, ir = small_pair
    with pytest.warns(UserWarning, match='swapped') as rec:
        fuse(ir, vis, model=tiny)
    assert [w.filename for w in rec if 'swapped' in str(w.message)] == [__file__]


def test_segment_warns_on_swapped_inputs(small_pair, pair_dirs, tmp_path, capsys):
    """segment() (and so the preview's overlay) gets the same warning as fuse(); the CLI with a
    multi-task model and --preview still prints one line for the pair."""
    from mtvif_zoo import segment
    vis, ir = small_pair
    torch.manual_seed(0)
    m = create_model('mtvif_iii').eval()
    with pytest.warns(UserWarning, match='swapped') as rec:
        segment(ir, vis, model=m)
    assert [w.filename for w in rec if 'swapped' in str(w.message)] == [__file__]
    vi, ir_dir = pair_dirs
    rc = main(['fuse', str(ir_dir / 'a.png'), str(vi / 'a.png'), '-o', str(tmp_path / 'f.png'), '--preview',
               str(tmp_path / 'p.png'), '--random-init', '-q', '--model', 'mtvif_iii', '--device', 'cpu'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 0 and len(err) == 1 and 'look swapped' in err[0]


def test_cli_tile_below_the_pad_multiple_is_one_error(pair_dirs, tmp_path, capsys):
    """Case 5, folder mode: a tile below the model's pad multiple failed every pair with the same
    message (one warning per pair, 'fused 0 pair(s)'); it is one error naming the smallest tile."""
    vi, ir = pair_dirs
    rc = main(['fuse', str(vi), str(ir), '-o', str(tmp_path / 'o'), '--random-init', '-q', '--model', 'mtvif_i',
               '--device', 'cpu', '--tile', '4', '--overlap', '0'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and '--tile 8 or more' in err[0]
    assert not (tmp_path / 'o').exists()  # no output folder either


def test_a_run_that_writes_nothing_leaves_no_output_folder(pair_dirs, tmp_path, capsys):
    """A run that failed before any pair (a --tile below the pad multiple) left the empty output folder
    it had made: the folders are made after the model and --tile checks, and removed again (those this
    run made, while empty) when no pair is written."""
    vi, ir = pair_dirs
    tile = ['--random-init', '-q', '--model', 'mtvif_i', '--device', 'cpu', '--tile', '4', '--overlap', '0']
    new = tmp_path / 'new'
    assert main(['fuse', str(vi), str(ir), '-o', str(new / 'o'), '--preview', str(new / 'p')] + tile) == 2
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(new / 'f.png')] + tile) == 2
    assert not new.exists()
    _short_png(vi / 'c.png')  # a single pair that cannot be read: an error, no folder
    (ir / 'c.png').write_bytes((ir / 'a.png').read_bytes())
    assert main(['fuse', str(vi / 'c.png'), str(ir / 'c.png'), '-o', str(new / 'c' / 'f.png')] + FAST) == 2
    assert not new.exists()
    mine = tmp_path / 'mine'  # a folder the user made is kept
    mine.mkdir()
    assert main(['fuse', str(vi), str(ir), '-o', str(mine)] + tile) == 2
    assert mine.is_dir() and not list(mine.iterdir())
    capsys.readouterr()


def test_video_suffix_for_image_files_is_refused(pair_dirs, tmp_path, capsys):
    """Case 18: ``-o out.mp4`` with image files created a folder named out.mp4."""
    vi, ir = pair_dirs
    for args in ([str(vi / 'a.png'), str(ir / 'a.png')], [str(vi / '*.png'), str(ir)]):
        assert main(['fuse', *args, '-o', str(tmp_path / 'out.mp4')] + FAST) == 2
        assert not (tmp_path / 'out.mp4').exists()
        assert 'names a video' in capsys.readouterr().err


def test_preview_write_error_names_the_preview(pair_dirs, tmp_path, capsys, monkeypatch):
    """Case 18: a full disk while writing the preview blamed the fused image (which was written) and
    counted 0 outputs."""
    vi, ir = pair_dirs
    real_save = Image.Image.save

    def full_for_previews(self, fp, *a, **k):
        if Path(fp).name.startswith('.p.png'):
            with open(fp, 'wb') as f:
                f.write(b'\x89PNG partial')
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(self, fp, *a, **k)
    monkeypatch.setattr(Image.Image, 'save', full_for_previews)
    out, prev = tmp_path / 'f.png', tmp_path / 'p.png'
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', str(out), '--preview', str(prev)] + FAST) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith('note: ')]
    assert len(err) == 1 and f"cannot write preview {str(prev)!r}" in err[0] and '1 complete fused image' in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f.png', 'ir', 'vi']  # no preview, no temporary file
    assert Image.open(out).size == (40, 24)


def test_metrics_reader_decompression_bomb_is_unreadable(tmp_path):
    """Case 13 in ``mtvif eval`` / the metrics: PIL's DecompressionBombError (not an OSError) stopped
    the evaluation with a traceback instead of skipping the image as unreadable."""
    from mtvif_zoo.metrics.io import UnreadableImageError, to_metric_tensor
    _bomb_png(tmp_path / 'bomb.png')
    with pytest.raises(UnreadableImageError, match='bomb.png.*too large to decode safely'):
        to_metric_tensor(tmp_path / 'bomb.png', name='fused')


def test_long_double_arrays_are_converted(tiny, small_pair):
    """Case 6: float128 / long double arrays gave torch's TypeError; they are read as float64."""
    vis, ir = small_pair
    v64 = vis.astype(np.float64) / 255
    got = fuse(v64.astype(np.longdouble), ir, model=tiny)
    assert got.dtype == np.longdouble
    np.testing.assert_array_equal(got.astype(np.float64), fuse(v64, ir, model=tiny))


def test_eight_bit_values_in_a_16_bit_input_warn(tiny, small_pair):
    """Case 6 for tensors and uint16 data: an int64 tensor (``torch.randint``, ``torch.tensor(list)``)
    or a uint16 array holding 0..255 is read as 16-bit (divided by 65535: nearly black) -- the
    documented rule, now with a warning naming the fix."""
    vis, ir = small_pair
    t_ir = torch.from_numpy(ir)[None].float() / 255
    with pytest.warns(UserWarning, match=r'int64\) whose values are all <= 255.*tensor.to\(torch.uint8\)'):
        fuse(torch.from_numpy(vis).permute(2, 0, 1).long(), t_ir, model=tiny)
    with pytest.warns(UserWarning, match=r'uint16\) whose values are all <= 255'):
        fuse(vis.astype(np.uint16), ir, model=tiny)
    ref = fuse(vis, ir, model=tiny)  # the 8-bit reading
    with warnings.catch_warnings():  # no warning where nothing is misread; the images equal the 8-bit reading
        warnings.simplefilter('error')
        real16 = fuse(vis.astype(np.uint16) * 257, ir, model=tiny)  # real 16-bit data
        assert real16.dtype == np.uint16
        np.testing.assert_allclose(real16 / 257, ref, atol=0.5)  # within the 8-bit output's rounding
        # infrared: per-image min-max, no darkening
        np.testing.assert_array_equal(fuse(vis, ir.astype(np.uint16), model=tiny), ref)
        # the range given: read as 8-bit values
        np.testing.assert_array_equal(fuse(vis.astype(np.uint16), ir, model=tiny, vis_range=(0, 255)), real16)


def _short_png(path: Path, channels: int = 3, colour_type: int = 2, fill: int = 200):
    """A PNG whose (CRC-valid, complete) zlib stream holds 12 of the 24 rows its header declares:
    PIL decodes it without an error, the missing rows black."""
    a = np.full((24, 40, channels), fill, np.uint8)
    rows = b''.join(b'\x00' + a[i].tobytes() for i in range(12))
    ihdr = struct.pack('>IIBBBBB', 40, 24, 8, colour_type, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr) + _png_chunk(b'IDAT', zlib.compress(rows)) +
                     _png_chunk(b'IEND', b''))
    with Image.open(path) as im:  # what makes it dangerous
        assert np.asarray(im)[-1].max() == 0 and np.asarray(im)[0].min() == fill


def test_png_whose_data_ends_early_is_refused_by_every_image_reader(pair_dirs, tmp_path, tiny):
    """The training pre-flight refused such a file, but fuse(), its loader and the metrics reader
    (mtvif eval) read it with black rows: a silent wrong result."""
    from mtvif_zoo.fusion import load_image
    from mtvif_zoo.metrics.io import UnreadableImageError, to_metric_tensor
    vi, ir = pair_dirs
    bad = tmp_path / 'short.png'
    _short_png(bad)
    with pytest.raises(ValueError, match=f"visible image {str(bad)!r}.*ends early: 1452 of the 2904 bytes"):
        load_image(bad, 'visible')
    with pytest.raises(ValueError, match='short.png.*ends early'):
        fuse(str(bad), str(ir / 'a.png'), model=tiny)
    with pytest.raises(UnreadableImageError, match=f"fused image {str(bad)!r}.*ends early"):
        to_metric_tensor(bad, name='fused')
    load_image(vi / 'a.png', 'visible'), to_metric_tensor(vi / 'a.png')  # a whole PNG passes


def test_folder_mode_skips_a_png_whose_data_ends_early(pair_dirs, tmp_path, capsys):
    vi, ir = pair_dirs
    _short_png(vi / 'c.png')
    (ir / 'c.png').write_bytes((ir / 'a.png').read_bytes())
    rc = main(['fuse', str(vi), str(ir), '-o', str(tmp_path / 'o'), '--batch-size', '1'] + FAST)
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['a.png', 'b.png']
    err = capsys.readouterr().err
    assert 'skipped c: ' in err and 'ends early' in err and str(vi / 'c.png') in err


def test_eval_reports_every_skipped_image_and_exits_1(pair_dirs, tmp_path, capsys):
    """``mtvif eval`` skipped unreadable images with warnings only and exited 0; like ``mtvif fuse``
    folder mode, every skipped pair / image is reported, the others evaluated, exit code 1."""
    import csv
    vi, ir = pair_dirs
    (vi / 'c.png').write_bytes(b'not a png')  # an unreadable source: pair c skipped
    (ir / 'c.png').write_bytes((ir / 'a.png').read_bytes())
    fused = tmp_path / 'fused' / 'm'
    fused.mkdir(parents=True)
    for s in ('a', 'c'):
        (fused / f'{s}.png').write_bytes((vi / 'a.png').read_bytes())
    _short_png(fused / 'b.png')  # an unreadable fused image (its data ends early)
    out = tmp_path / 'ev'
    rc = main(['eval', '--fused', str(fused), '--vis', str(vi), '--ir', str(ir), '--metrics', 'EN,SD', '-o', str(out),
               '--workers', '1', '-q'])
    err = capsys.readouterr().err
    assert rc == 1
    assert "warning: pair 'c' skipped" in err and str(vi / 'c.png') in err
    assert 'warning: unreadable' in err and str(fused / 'b.png') in err and 'ends early' in err
    assert '2 pair(s) / image(s) skipped' in err
    with open(out / 'per_image.csv') as f:
        assert [r['image'] for r in csv.DictReader(f)] == ['a']
    for p in (vi / 'c.png', fused / 'b.png', fused / 'c.png', ir / 'c.png'):
        p.unlink()
    (fused / 'b.png').write_bytes((vi / 'b.png').read_bytes())
    assert main(['eval', '--fused', str(fused), '--vis', str(vi), '--ir', str(ir), '--metrics', 'EN', '-o', str(out),
                 '--workers', '1', '-q']) == 0


def test_trailing_slash_names_a_folder(pair_dirs, tmp_path, capsys):
    """``-o out.png/`` wrote a file ``out.png`` (Path drops the slash): a trailing slash names a folder."""
    vi, ir = pair_dirs
    out = tmp_path / 'out.png'
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', f'{out}/', '--preview', f'{tmp_path}/p.png/']
                + FAST) == 0
    assert out.is_dir() and sorted(p.name for p in out.iterdir()) == ['a.png']
    assert Image.open(out / 'a.png').size == (40, 24) and (tmp_path / 'p.png' / 'a.png').is_file()
    f = tmp_path / 'f.png'
    f.write_bytes(b'x')
    assert main(['fuse', str(vi / 'a.png'), str(ir / 'a.png'), '-o', f'{f}/'] + FAST) == 2
    assert 'ends with a slash (a folder)' in capsys.readouterr().err and f.read_bytes() == b'x'
    assert main(['fuse', str(vi), str(ir), '-o', f'{tmp_path}/o.mp4/'] + FAST) == 0  # frame folders -> PNG folder
    assert sorted(p.name for p in (tmp_path / 'o.mp4').iterdir()) == ['a.png', 'b.png']
    capsys.readouterr()
    assert main(['fuse', str(tmp_path / 'v.mp4'), str(tmp_path / 'i.mp4'), '-o', f'{tmp_path}/x.mp4/'] + FAST) == 2
    assert 'ends with a slash (a folder) but has a video suffix' in capsys.readouterr().err
    assert not (tmp_path / 'x.mp4').exists()


def test_video_output_that_is_an_input_under_another_name_is_refused(tmp_path, capsys):
    """Video mode compared output and inputs with realpath only: a hard link to the visible video (or
    another spelling on a case-insensitive file system) passed, and --overwrite would replace it."""
    vis, ir = tmp_path / 'vis.mp4', tmp_path / 'ir.mp4'
    vis.write_bytes(b'visible video bytes')
    ir.write_bytes(b'infrared video bytes')
    link = tmp_path / 'fused.mp4'
    os.link(vis, link)
    rc = main(['fuse', str(vis), str(ir), '-o', str(link), '--overwrite'] + FAST)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'refusing to overwrite it' in err[0] and str(vis) in err[0]
    assert vis.read_bytes() == b'visible video bytes' and link.read_bytes() == b'visible video bytes'


def test_pretrained_weight_errors_name_the_file(tmp_path):
    """The dtype and missing / unexpected-key errors of pretrained loading (checkpoint_path=, a file
    overlay) did not say which file they came from."""
    from safetensors.torch import save_file
    f, key = _int32_weights(tmp_path)
    for kw in (dict(checkpoint_path=f), dict(pretrained_cfg_overlay=dict(file=str(f)))):
        with pytest.raises(ValueError, match=f"pretrained weights {str(f)!r} have tensors of the wrong dtype.*{key}"):
            create_model('seafusion', pretrained=True, **kw)
    sd = {k: v.contiguous() for k, v in create_model('seafusion').state_dict().items()}
    gone = next(k for k in sd if not k.startswith('head.seg_'))
    del sd[gone]
    sd['extra.weight'] = torch.zeros(1)
    g = tmp_path / 'missing.safetensors'
    save_file(sd, str(g))
    for kw in (dict(checkpoint_path=g), dict(pretrained_cfg_overlay=dict(file=str(g)))):
        with pytest.raises(ValueError, match=f"pretrained weights {str(g)!r} do not match") as e:
            create_model('seafusion', pretrained=True, **kw)
        assert gone in str(e.value) and 'extra.weight' in str(e.value)


@pytest.mark.parametrize('command', [
    ['train', '--model', 'seafusion', '--data', 'DATA', '--out', 'OUT'],
    ['bench', '--model', 'seafusion', '--size', '32x32', '--runs', '1', '--warmup', '0'],
    ['profile', 'seafusion', '--no-memory'],
])
@pytest.mark.parametrize('device,match', [('foo', 'not a device name'), ('cuda:99', 'no such CUDA device'),
                                          ('meta', 'holds no data')])
def test_every_command_checks_device(pair_dirs, tmp_path, capsys, command, device, match):
    """``mtvif train / bench / profile --device`` get fuse's check: ``bench --device foo`` was a torch
    traceback, ``train --device cuda:3`` on a machine without that GPU went on to the data checks."""
    vi, _ = pair_dirs
    argv = [str(vi.parent) if a == 'DATA' else str(tmp_path / 'run') if a == 'OUT' else a for a in command]
    rc = main([*argv, '--device', device])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err and err[-1].startswith(f'mtvif {command[0]}: error: --device ') and device in err[-1]
    assert match in err[-1] and 'use cpu' in err[-1] and not (tmp_path / 'run').exists()


def test_fuse_video_api_never_writes_over_an_input(tmp_path):
    """``mtvif_zoo.video.fuse_video`` called from Python had no output == input check (only the CLI
    did): ``fuse_video(vis, ir, vis)`` would replace the visible video, a frame-folder output equal to
    an input folder would write over its frames."""
    from mtvif_zoo.video import fuse_video
    vdir, idir = tmp_path / 'vi_frames', tmp_path / 'ir_frames'
    for d in (vdir, idir):
        d.mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / '000.png')
    with pytest.raises(ValueError, match='is the infrared input'):
        fuse_video(vdir, idir, tmp_path / 'ir_frames' / '..' / 'ir_frames', model='seafusion', progress=False)
    assert [p.name for p in idir.iterdir()] == ['000.png']
    vis, ir = tmp_path / 'vis.mp4', tmp_path / 'ir.mp4'
    vis.write_bytes(b'visible video bytes')
    ir.write_bytes(b'infrared video bytes')
    os.link(ir, tmp_path / 'same_as_ir.mp4')
    outs = ((vis, 'visible'), (tmp_path / 'same_as_ir.mp4', 'infrared'), (tmp_path / '.' / 'vis.mp4', 'visible'))
    for out, role in outs:
        with pytest.raises(ValueError, match=f'is the {role} input .* choose another output path'):
            fuse_video(vis, ir, out, model='seafusion', progress=False)
    assert vis.read_bytes() == b'visible video bytes' and ir.read_bytes() == b'infrared video bytes'
    assert [p.name for p in idir.iterdir()] == ['000.png']
