"""Process-level guarantees: SIGKILL mid-epoch + resume == uninterrupted; torchrun (2 x gloo) == 1 process."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import mtvif_zoo

pytestmark = pytest.mark.slow

ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def _args(data, out, model_args, **kw):
    a = ['--data', str(data), '--out', str(out), '--crop', '16', '--workers', '0', '--no-progress',
         '--model-args', json.dumps(model_args)]
    for k, v in kw.items():
        a += [f'--{k.replace("_", "-")}', str(v)]
    return a


def _weights(out):
    return load_file(str(out / 'last' / 'model.safetensors'))


@pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs POSIX SIGKILL')
@pytest.mark.parametrize('amp', ['off', 'bf16'])
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tiny_data, tmp_path, tiny_mtvif, amp):
    cmd = [sys.executable, '-m', 'mtvif_zoo.train', '--model', 'mtvif_iii']
    common = dict(batch_size=2, epochs=2, ckpt_every=1, amp=amp)
    a, b = tmp_path / 'a', tmp_path / 'b'
    subprocess.run(cmd + _args(tiny_data, a, tiny_mtvif, **common), env=ENV, check=True, timeout=300,
                   capture_output=True)
    # run b pauses right after its step-4 checkpoint (epoch 2, batch 1 of 3) and is SIGKILLed there
    proc = subprocess.Popen(cmd + _args(tiny_data, b, tiny_mtvif, **common), env=dict(
        ENV, MTVIF_TRAIN_TEST_PAUSE_AT_STEP='4'), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        for line in proc.stdout:
            if 'paused after checkpoint at step 4' in line or time.time() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    st = json.loads((b / 'last' / 'state.json').read_text())
    assert (st['global_step'], st['epoch'], st['batch']) == (4, 1, 1)  # mid-epoch
    assert [ln.split(',')[0] for ln in (b / 'log.csv').read_text().splitlines()[1:]] == ['1']
    subprocess.run(cmd + _args(tiny_data, b, tiny_mtvif, **common) + ['--resume'], env=ENV, check=True,
                   timeout=300, capture_output=True)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / 'log.csv').read_text().splitlines()[1:] != []
    la = [r.split(',')[:22] for r in (a / 'log.csv').read_text().splitlines()]
    lb = [r.split(',')[:22] for r in (b / 'log.csv').read_text().splitlines()]
    assert la == lb  # same losses, same validation, same log rows (timings aside)


def test_torchrun_two_gloo_processes_match_one_process(make_data, tmp_path, tiny_seafusion):
    # a model without BatchNorm (the SeAFusion baseline): with BN each process would normalise with its own
    # half-batch statistics, which is what DDP does without SyncBatchNorm and differs from one process
    data = make_data(tmp_path / 'data', n=12)  # 11 train pairs: 2 global batches of 4 per epoch
    one, two = tmp_path / 'one', tmp_path / 'two'
    common = dict(epochs=2, lr=1e-3)
    subprocess.run([sys.executable, '-m', 'mtvif_zoo.train', '--model', 'seafusion'] +
                   _args(data, one, tiny_seafusion, batch_size=4, **common), env=ENV, check=True, timeout=300,
                   capture_output=True)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                        '-m', 'mtvif_zoo.train', '--model', 'seafusion'] +
                       _args(data, two, tiny_seafusion, batch_size=2, **common), env=ENV, timeout=300,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cfg = json.loads((two / 'config.json').read_text())
    assert cfg['world_size'] == 2 and json.loads((one / 'config.json').read_text())['world_size'] == 1
    w1, w2 = _weights(one), _weights(two)
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-6), k
    torch.manual_seed(0)  # the trainer's seeded initialisation: training did move the weights
    init = mtvif_zoo.create_model('seafusion', **tiny_seafusion).state_dict()
    assert max((w1[k] - init[k]).abs().max().item() for k in w1) > 1e-3
    st1, st2 = (json.loads((d / 'last' / 'state.json').read_text()) for d in (one, two))
    assert st1['global_step'] == st2['global_step'] == 4
    l1 = (one / 'log.csv').read_text().splitlines()
    l2 = (two / 'log.csv').read_text().splitlines()
    assert len(l1) == len(l2) == 3  # rank 0 alone writes the log
