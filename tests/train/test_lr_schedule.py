"""The trainer's schedules are torch's and give the closed-form rates the former hand-written ones did."""
import math

import torch

from mtvif_zoo.train.trainer import make_scheduler


def _rates(kind, total, steps, lr=5e-4):
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt, kind, total)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    return out


def test_cosine_is_the_closed_form():
    total, lr = 37, 5e-4
    for step, got in enumerate(_rates('cosine', total, total + 1, lr)):
        want = lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        assert abs(got - want) < 1e-12, step


def test_constant():
    assert _rates('constant', 10, 12) == [5e-4] * 12
    assert _rates(None, 10, 3) == [5e-4] * 3
