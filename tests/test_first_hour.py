"""First-hour frictions (issue 19 points 4-8): CLI start-up without torch, ``python -m mtvif_zoo``,
closed pipes, ``mtvif info`` summary, single-pair errors, model-name suggestions, read-only arrays."""
import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mtvif_zoo
from mtvif_zoo.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / 'examples'


def _run(*args):
    env = {'PYTHONPATH': str(REPO), 'HF_HUB_OFFLINE': '1', 'PATH': '/usr/bin:/bin'}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_help_does_not_import_torch():
    """``mtvif --help`` / ``mtvif fuse --help`` answer without importing torch, timm or the models
    (they took ~6 s on an idle 2-core machine, all of it imports)."""
    for args in (['--help'], ['fuse', '--help'], ['--version']):
        r = _run('-X', 'importtime', '-m', 'mtvif_zoo', *args)
        assert r.returncode == 0, r.stderr[-2000:]
        imported = {line.rsplit('|', 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith('import time')}
        assert not imported & {'torch', 'timm', 'mtvif_zoo.models', 'mtvif_zoo.fusion'}, args
    assert 'usage: mtvif' in _run('-m', 'mtvif_zoo', '--help').stdout


@pytest.mark.slow  # imports torch in a fresh process (~6 s idle)
def test_python_m_runs_a_command():
    r = _run('-m', 'mtvif_zoo', 'list', 'seafusion*', '--pretrained')
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[1].startswith('seafusion.mfnet220')


def test_library_import_is_eager_outside_the_cli():
    """A plain ``import mtvif_zoo`` (here: under pytest) loads the library and registers the models."""
    import timm
    assert mtvif_zoo._LOADED and not mtvif_zoo._started_as_cli()
    assert 'mtvif_iii' in timm.list_models('mtvif*')


class _ClosedPipe(io.StringIO):
    def write(self, s):
        raise BrokenPipeError(32, 'Broken pipe')


def test_closed_pipe_is_quiet(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'stdout', _ClosedPipe())
    assert main(['info', 'mtvif_iv.mfnet220', '--full']) == 141  # no traceback, the SIGPIPE exit status
    assert main(['list']) == 141


def test_info_summary_and_full(capsys):
    assert main(['info', 'mtvif_iv.mfnet220']) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 25
    assert 'MSRS test (20 pairs) (paper convention' in out
    assert 'EN 6.307  MI 2.249  VIF 0.824  Qabf 0.568  SSIM 0.964  MS_SSIM 1.489  dE 4.335' in out  # README table
    assert 'mIoU 0.160' in out and 'budget' in out and 'shipped copy' in out
    assert main(['info', 'mtvif_iv.mfnet220', '--full']) == 0
    full = capsys.readouterr().out
    assert len(full.splitlines()) > 100 and 'RoadScene' in full and 'sha256' in full


def test_single_pair_failure_is_an_error(tmp_path, capsys):
    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(tmp_path / 'v.png')
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(tmp_path / 'i.png')
    out = tmp_path / 'x.png'
    rc = main(['fuse', str(tmp_path / 'v.png'), str(tmp_path / 'i.png'), '-o', str(out), '--random-init',
               '--model', 'seafusion', '--device', 'cpu'])
    captured = capsys.readouterr()
    assert rc == 2 and not out.exists()
    assert 'mtvif fuse: error:' in captured.err and '24x40' in captured.err and '20x40' in captured.err
    assert 'fused 0' not in captured.out + captured.err and 'skipped' not in captured.err
    (tmp_path / 'broken.png').write_bytes(b'not a png')
    rc = main(['fuse', str(tmp_path / 'v.png'), str(tmp_path / 'broken.png'), '-o', str(out), '--random-init',
               '--model', 'seafusion', '--device', 'cpu'])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists() and 'broken.png' in err


@pytest.mark.parametrize('typo, suggestion', [('mtvif-iv', 'mtvif_iv'), ('MTVIF_IV', 'mtvif_iv'),
                                              ('MTVIF-III.mfnet220', 'mtvif_iii.mfnet220'), ('seafuson', 'seafusion')])
def test_did_you_mean(typo, suggestion):
    with pytest.raises(ValueError, match=f"did you mean '{suggestion}'"):
        mtvif_zoo.create_model(typo)


def test_read_only_array_from_pil_no_warning():
    vis = np.asarray(Image.open(EXAMPLES / 'vi' / '00036N.png').convert('RGB'))[:32, :48]
    ir = np.asarray(Image.open(EXAMPLES / 'ir' / '00036N.png').convert('L'))[:32, :48]
    assert not vis.flags.writeable
    model = mtvif_zoo.create_model('seafusion').eval()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # torch's "The given NumPy array is not writable" warning
        out = model.fuse(vis, ir)
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8


def test_profile_says_what_memory_is(capsys):
    from mtvif_zoo.profile import ProfileResult
    res = ProfileResult(name='mtvif_iii', size=(256, 256), params=928000, macs=60.9e9, train_memory_mb=901.68,
                        memory_method='saved activations + params + grads', by_module={},
                        table7=(0.93e6, 60.84e9, 245.68))
    text = str(res)
    assert 'Table 7: 245.68 MB, on a GPU' in text
    assert 'measured on the CPU: one training forward + backward at batch 1' in text
    assert 'does not state' in text
