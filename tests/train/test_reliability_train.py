"""Issue 18, training side: --out never clobbers, resume survives corrupted / truncated checkpoints and
torn log lines, the pre-flight check decodes every image (cases 2, 7, 14, 15, 19)."""
import csv
import json
import struct
import zlib

import pytest
import torch
from safetensors.torch import load_file

from mtvif_zoo.cli import main
from mtvif_zoo.data import DatasetError
from mtvif_zoo.train import LOG_COLUMNS, TrainConfig, Trainer, read_state, train

try:
    from mtvif_zoo.train.checkpoint import CheckpointError
except ImportError:  # before the fix
    CheckpointError = ValueError


def _cfg(data, out, model_args, **kw):
    base = dict(model='mtvif_iii', data=str(data), out=str(out), crop=16, batch_size=2, epochs=2, workers=0,
                progress=False, model_args=model_args)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run):
    return load_file(str(run / 'last' / 'model.safetensors'))


def _same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ 2. --out holding something else
def test_non_empty_out_that_is_not_a_run_is_refused(tiny_data, tmp_path, tiny_mtvif, capsys):
    out = tmp_path / 'weights_copy'
    out.mkdir()
    (out / 'config.json').write_text('{"architecture": "mtvif_iii"}')
    (out / 'model.safetensors').write_bytes(b'precious')
    with pytest.raises(FileExistsError, match=r'config\.json.*model\.safetensors|model\.safetensors.*config\.json'):
        train(_cfg(tiny_data, out, tiny_mtvif, max_steps=1))
    assert (out / 'config.json').read_text() == '{"architecture": "mtvif_iii"}'
    assert sorted(p.name for p in out.iterdir()) == ['config.json', 'model.safetensors']
    rc = main(['train', '--model', 'mtvif_iii', '--data', str(tiny_data), '--out', str(out), '--crop', '16',
               '--batch-size', '2', '--max-steps', '1', '--workers', '0', '--no-progress',
               '--model-args', json.dumps(tiny_mtvif)])
    assert rc == 2 and 'not empty' in capsys.readouterr().err
    assert (out / 'config.json').read_text() == '{"architecture": "mtvif_iii"}'


def test_empty_existing_out_is_fine(tiny_data, tmp_path, tiny_mtvif):
    out = tmp_path / 'empty'
    out.mkdir()
    assert train(_cfg(tiny_data, out, tiny_mtvif, max_steps=1))['global_step'] == 1


# ------------------------------------------------------------------ 7. / 15. damaged checkpoints
def _flip(path, at_from_end=64):
    data = bytearray(path.read_bytes())
    for k in range(len(data) - at_from_end, len(data) - at_from_end + 16):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def _two_checkpoints(data, run, model_args):
    train(_cfg(data, run, model_args, max_steps=2, ckpt_every=1))  # last/ at step 2, the previous at step 1
    assert read_state(run / 'last')['global_step'] == 2


def test_corrupted_model_file_falls_back_to_previous_checkpoint(tiny_data, tmp_path, tiny_mtvif, capsys):
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    train(_cfg(tiny_data, ref, tiny_mtvif, max_steps=3))
    _two_checkpoints(tiny_data, run, tiny_mtvif)
    size = (run / 'last' / 'model.safetensors').stat().st_size
    _flip(run / 'last' / 'model.safetensors')
    assert (run / 'last' / 'model.safetensors').stat().st_size == size
    capsys.readouterr()
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=3, resume=True))
    out = capsys.readouterr().out
    assert 'model.safetensors' in out and 'sha256' in out and 'step 1' in out
    assert (run / '.last.damaged' / 'model.safetensors').is_file()  # kept for inspection, out of the rotation
    assert _same(_weights(ref), _weights(run))  # resumed from step 1: the same weights as an uninterrupted run
    with open(run / 'log.csv') as f:
        assert [r['step'] for r in csv.DictReader(f)] == ['3']


def test_truncated_optimizer_file_falls_back(tiny_data, tmp_path, tiny_mtvif, capsys):
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    train(_cfg(tiny_data, ref, tiny_mtvif, max_steps=3))
    _two_checkpoints(tiny_data, run, tiny_mtvif)
    opt = run / 'last' / 'optimizer.safetensors'
    opt.write_bytes(opt.read_bytes()[:100])
    capsys.readouterr()
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=3, resume=True))
    out = capsys.readouterr().out
    assert 'optimizer.safetensors' in out and 'step 1' in out
    assert _same(_weights(ref), _weights(run))


def test_truncated_state_json_is_named(tiny_data, tmp_path, tiny_mtvif, capsys):
    import shutil
    run = tmp_path / 'run'
    _two_checkpoints(tiny_data, run, tiny_mtvif)
    st = run / 'last' / 'state.json'
    st.write_text(st.read_text()[:50])
    capsys.readouterr()
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=3, resume=True))  # falls back to the previous one
    assert 'state.json' in capsys.readouterr().out
    # no intact checkpoint left: a typed error naming every damaged file
    st = run / 'last' / 'state.json'
    st.write_text(st.read_text()[:50])
    for p in run.iterdir():
        if p.name.startswith('.last.'):
            shutil.rmtree(p)
    with pytest.raises(CheckpointError, match=r'state\.json'):
        train(_cfg(tiny_data, run, tiny_mtvif, max_steps=4, resume=True))


# ------------------------------------------------------------------ 14. torn log lines
def test_resume_drops_torn_last_log_lines(tiny_data, tmp_path, tiny_mtvif):
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    train(_cfg(tiny_data, ref, tiny_mtvif, max_steps=5))
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=2))
    with open(run / 'log.csv', 'a') as f:
        f.write('1,3,3,5e-0')  # a kill during the write
    with open(run / 'log.jsonl', 'a') as f:
        f.write('{"epoch": 1, "st')
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=5, resume=True))
    with open(run / 'log.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['step'] for r in rows] == ['2', '3', '5'] and all(len(r) == len(LOG_COLUMNS) for r in rows)
    lines = (run / 'log.jsonl').read_text().splitlines()
    assert [json.loads(ln)['step'] for ln in lines] == [2, 3, 5]
    assert _same(_weights(ref), _weights(run))


def test_log_lines_are_written_whole(tiny_data, tmp_path, tiny_mtvif, monkeypatch):
    """Each log line reaches the file in a single write call (no line can be half-written by a
    buffered writer flushing in pieces)."""
    import os
    run = tmp_path / 'run'
    writes = []
    real = os.write

    def spy(fd, data):
        writes.append(bytes(data))
        return real(fd, data)
    monkeypatch.setattr(os, 'write', spy)
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=1))
    monkeypatch.undo()
    logged = [w for w in writes if w.startswith(b'{"epoch"') or w.startswith(b'1,1,')]
    assert len(logged) == 2 and all(w.endswith(b'\n') and w.count(b'\n') == 1 for w in logged)


# ------------------------------------------------------------------ 19. pre-flight decodes every image
def _chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)


def test_crc_valid_garbage_png_is_caught_before_training(tmp_path, make_data, tiny_mtvif):
    data = make_data(tmp_path / 'd', n=4)
    ihdr = struct.pack('>IIBBBBB', 28, 24, 8, 2, 0, 0, 0)  # 28x24 RGB, like the others
    garbage = b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', b'\x78\x9c' + bytes(range(200))) + \
        _chunk(b'IEND', b'')
    (data / 'vi' / '001.png').write_bytes(garbage)
    with pytest.raises(DatasetError, match=r'001\.png'):
        Trainer(_cfg(data, tmp_path / 'o', tiny_mtvif))


# ------------------------------------------------------------------ re-audit (issue 18): gaps found by a careless user
def test_run_stopped_before_its_first_checkpoint_resumes_from_step_0(tiny_data, tmp_path, tiny_mtvif, monkeypatch,
                                                                     capsys):
    """Ctrl-C / SIGKILL in epoch 1 (before any last/) left config.json, log rows and best/: --resume used to say
    'no last/ checkpoint (drop --resume)' and a new run 'not empty (pass --resume)', a loop with no way out."""
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    train(_cfg(tiny_data, ref, tiny_mtvif, max_steps=4))

    def killed(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, 'save_last', killed)  # killed between best/ and the first last/
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_data, run, tiny_mtvif, max_steps=4))
    monkeypatch.undo()
    assert sorted(p.name for p in run.iterdir()) == ['best', 'config.json', 'log.csv', 'log.jsonl']
    with pytest.raises(FileExistsError, match='holds a run: pass --resume'):
        train(_cfg(tiny_data, run, tiny_mtvif, max_steps=4))
    capsys.readouterr()
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=4, resume=True))
    assert 'no checkpoint yet' in capsys.readouterr().out
    assert _same(_weights(ref), _weights(run))
    with open(run / 'log.csv') as f:
        assert [r['step'] for r in csv.DictReader(f)] == ['3', '4']  # the first attempt's row is not duplicated
    assert [json.loads(ln)['step'] for ln in (run / 'log.jsonl').read_text().splitlines()] == [3, 4]


def test_resume_in_a_weight_folder_copy_is_still_refused(tiny_data, tmp_path, tiny_mtvif):
    out = tmp_path / 'weights_copy'
    out.mkdir()
    (out / 'config.json').write_text('{"architecture": "mtvif_iii"}')
    with pytest.raises(FileNotFoundError, match='nothing to resume'):
        train(_cfg(tiny_data, out, tiny_mtvif, max_steps=1, resume=True))
    assert (out / 'config.json').read_text() == '{"architecture": "mtvif_iii"}'


def test_out_under_a_file_is_a_one_line_error(tiny_data, tmp_path, tiny_mtvif, capsys):
    (tmp_path / 'afile').write_text('x')
    rc = main(['train', '--model', 'mtvif_iii', '--data', str(tiny_data), '--out', str(tmp_path / 'afile' / 'run'),
               '--crop', '16', '--batch-size', '2', '--max-steps', '1', '--workers', '0', '--no-progress',
               '--model-args', json.dumps(tiny_mtvif)])
    err = capsys.readouterr().err
    assert rc == 2 and 'afile' in err and 'is a file' in err and 'Traceback' not in err
    assert (tmp_path / 'afile').read_text() == 'x'


def test_state_json_without_resume_entries_falls_back(tiny_data, tmp_path, tiny_mtvif, capsys):
    """A state.json that parses but lacks what resume needs ({} after a bad edit or copy) is a damaged
    checkpoint like a torn one: named, and the previous checkpoint is used."""
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    train(_cfg(tiny_data, ref, tiny_mtvif, max_steps=3))
    _two_checkpoints(tiny_data, run, tiny_mtvif)
    (run / 'last' / 'state.json').write_text('{}')
    capsys.readouterr()
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=3, resume=True))
    out = capsys.readouterr().out
    assert 'last/state.json' in out and 'step 1' in out
    assert _same(_weights(ref), _weights(run))


def test_label_of_the_wrong_size_is_named(tmp_path, make_data, tiny_mtvif):
    from PIL import Image
    data = make_data(tmp_path / 'd', n=4)
    Image.new('L', (28, 20)).save(data / 'label' / '002.png')
    with pytest.raises(DatasetError, match=r"label/002\.png: size mismatch within pair '002'.*label 20x28"):
        Trainer(_cfg(data, tmp_path / 'o', tiny_mtvif))


def test_full_disk_during_training_is_a_one_line_error(tiny_data, tmp_path, tiny_mtvif, monkeypatch, capsys):
    import errno

    import mtvif_zoo.train.trainer as trainer_mod

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, 'No space left on device', str(path))
    monkeypatch.setattr(trainer_mod, 'save_checkpoint', full)
    rc = main(['train', '--model', 'mtvif_iii', '--data', str(tiny_data), '--out', str(tmp_path / 'run'),
               '--crop', '16', '--batch-size', '2', '--max-steps', '1', '--workers', '0', '--no-progress',
               '--model-args', json.dumps(tiny_mtvif)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count('\n') == 1 and 'No space left on device' in err and 'run/best' in err


def test_png_whose_image_data_ends_early_is_caught_before_training(tmp_path, make_data, tiny_mtvif):
    """A PNG whose (CRC-valid, complete) zlib stream holds fewer rows than IHDR declares: PIL decodes it
    without an error, the missing rows black (a label: class 0), a silent wrong sample."""
    import numpy as np
    from PIL import Image
    data = make_data(tmp_path / 'd', n=4)

    def short_png(path, channels, colour_type, fill):
        a = np.full((24, 28, channels), fill, np.uint8)
        rows = b''.join(b'\x00' + a[i].tobytes() for i in range(12))  # 12 of 24 rows
        ihdr = struct.pack('>IIBBBBB', 28, 24, 8, colour_type, 0, 0, 0)
        path.write_bytes(b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', zlib.compress(rows)) +
                         _chunk(b'IEND', b''))
        with Image.open(path) as im:  # what makes it dangerous
            assert np.asarray(im)[-1].max() == 0
    short_png(data / 'vi' / '001.png', 3, 2, 200)
    short_png(data / 'label' / '002.png', 1, 0, 1)
    with pytest.raises(DatasetError) as e:
        Trainer(_cfg(data, tmp_path / 'o', tiny_mtvif))
    msg = str(e.value)
    assert '2 problem(s)' in msg and 'vi/001.png: ' in msg and 'label/002.png: ' in msg and 'rows' in msg


def test_last_and_previous_checkpoint_both_damaged_is_one_line_naming_both(tiny_data, tmp_path, tiny_mtvif, capsys):
    run = tmp_path / 'run'
    _two_checkpoints(tiny_data, run, tiny_mtvif)
    _flip(run / 'last' / 'model.safetensors')
    opt = run / '.last.prev' / 'optimizer.safetensors'
    opt.write_bytes(opt.read_bytes()[:100])
    capsys.readouterr()
    rc = main(['train', '--model', 'mtvif_iii', '--data', str(tiny_data), '--out', str(run), '--resume',
               '--max-steps', '3', '--workers', '0', '--no-progress'])
    err = capsys.readouterr().err
    assert rc == 2 and err.count('\n') == 1 and err.startswith('mtvif train: error: no intact checkpoint')
    assert 'last/model.safetensors' in err and '.last.prev/optimizer.safetensors' in err
    assert sorted(p.name for p in run.iterdir() if p.name.startswith('.last')) == ['.last.prev']  # nothing moved


def test_state_json_edited_in_place_is_caught_by_its_own_sha256(tiny_data, tmp_path, tiny_mtvif, capsys):
    """One flipped bit can leave state.json valid JSON (the optimizer's lr 5e-05 -> 4e-05, a digit of an RNG
    state): it used to resume silently with that value; it is checked against the sha256 it records."""
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    train(_cfg(tiny_data, ref, tiny_mtvif, max_steps=3))
    _two_checkpoints(tiny_data, run, tiny_mtvif)
    st = run / 'last' / 'state.json'
    text = st.read_text()
    at = text.index('"param_groups": [{"lr": 5e-05') + len('"param_groups": [{"lr": ')
    st.write_text(text[:at] + '4' + text[at + 1:])
    assert json.loads(st.read_text())['optimizer']['param_groups'][0]['lr'] == 4e-05
    capsys.readouterr()
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=3, resume=True))
    out = capsys.readouterr().out
    assert 'last/state.json' in out and 'sha256' in out and 'step 1' in out
    assert _same(_weights(ref), _weights(run))


def test_out_file_existing_run_and_resume_of_nothing(tiny_data, tmp_path, tiny_mtvif):
    import hashlib

    def snapshot(d):
        return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in d.rglob('*') if p.is_file()}
    f = tmp_path / 'out.txt'
    f.write_text('keep')
    with pytest.raises(FileExistsError, match=r"out\.txt' is a file, not a folder"):
        train(_cfg(tiny_data, f, tiny_mtvif, max_steps=1))
    assert f.read_text() == 'keep'
    run = tmp_path / 'run'
    train(_cfg(tiny_data, run, tiny_mtvif, max_steps=1))
    before = snapshot(run)
    with pytest.raises(FileExistsError, match=r'it holds .*config\.json, last, log\.csv.*holds a run: pass --resume'):
        train(_cfg(tiny_data, run, tiny_mtvif, max_steps=1))
    assert snapshot(run) == before
    (tmp_path / 'empty').mkdir()
    for d in (tmp_path / 'empty', tmp_path / 'missing'):
        with pytest.raises(FileNotFoundError, match='nothing to resume .* no last/ checkpoint'):
            train(_cfg(tiny_data, d, tiny_mtvif, max_steps=1, resume=True))
    assert not (tmp_path / 'missing').exists() and not any((tmp_path / 'empty').iterdir())
