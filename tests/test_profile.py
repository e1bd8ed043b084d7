"""Table 7 fidelity: params and MACs (torch FlopCounterMode) of the four variants within 10 %."""
import pytest

from mtvif_zoo import create_model, profile
from mtvif_zoo.profile import TABLE7, count_macs


@pytest.mark.parametrize('name', sorted(TABLE7))
def test_table7_band(name):
    params, macs, _ = TABLE7[name]
    res = profile(create_model(name), size=(256, 256), memory=False)
    assert res.table7 == TABLE7[name]
    assert abs(res.params - params) / params < 0.10, (res.params, params)
    assert abs(res.macs - macs) / macs < 0.10, (res.macs, macs)


def test_exact_figures_of_variant_iii():
    res = profile(create_model('mtvif_iii'), memory=False)
    assert res.params == 928_396
    assert res.by_module == {'backbone': 88_640, 'head': 839_756}
    assert res.macs == 60_987_277_312
    text = str(res)
    assert '0.928 M' in text and 'Table 7: 0.93 M' in text and '60.99 G' in text


def test_macs_meta_equals_real_and_scale_with_pixels():
    m = create_model('seafusion')
    real = count_macs(m, (64, 64), on_meta=False)
    assert count_macs(m, (64, 64)) == real
    assert count_macs(m, (128, 128)) == 4 * real


def test_cpu_training_memory_is_measured():
    res = profile(create_model('seafusion'), size=(64, 64))
    assert res.memory_method == 'saved activations + params + grads'
    # at least params + grads, at most a loose bound for a 0.17 M-param net at 64x64
    assert 2 * res.params * 4 / 2 ** 20 < res.train_memory_mb < 200


def test_count_macs_leaves_the_model_untouched_on_every_path():
    """Counting MACs (also on the real-device fallback, also via save_pretrained's card) must not run a
    training-mode forward on the caller's model: its BatchNorm statistics would change."""
    import torch
    torch.manual_seed(0)
    model = create_model('mtvif_iii')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta = count_macs(model, (64, 64))
    real = count_macs(model, (64, 64), on_meta=False)
    assert meta == real > 0
    after = model.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
