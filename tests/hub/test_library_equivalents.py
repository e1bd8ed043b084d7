"""Where the zoo uses a library helper instead of its former hand-written code, the helper does what
the old code did (the cases the zoo relies on)."""
import torch
from timm.models._hub import hf_split

from mtvif_zoo.models.backbones.swinfusion import SwinTransformerBlock, _dpr


def test_hf_split_is_the_zoos_revision_convention():
    assert hf_split('org/name@0123abcd') == ('org/name', '0123abcd')
    assert hf_split('org/name') == ('org/name', None)  # no revision: None (= main)


def test_drop_path_schedule_is_the_originals():
    """SwinFusion: ``linspace(0, rate, sum(depths))`` split per stage (the former hand-written code)."""
    def original(rate, depths):
        dpr = [x.item() for x in torch.linspace(0, rate, sum(depths))]
        return [dpr[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]
    for rate, depths in [(0.1, [4]), (0.1, [2, 2]), (0., [3, 1])]:
        assert _dpr(rate, depths) == original(rate, depths)


def test_timm_window_partition_is_the_einops_layout():
    """The plain path's windows via timm's window_partition / window_reverse, in the original's order."""
    from einops import rearrange
    blk = SwinTransformerBlock(dim=12, num_heads=2, window_size=4, shift_size=2, mlp_ratio=2., drop_path=0.,
                               layout_cache=None)
    x = torch.randn(2, 8 * 12, 12)
    xw = blk._to_windows(x, 8, 12)
    ref = torch.roll(x.view(2, 8, 12, 12), shifts=(-2, -2), dims=(1, 2))
    assert torch.equal(xw, rearrange(ref, 'b (h wh) (w ww) c -> (b h w) (wh ww) c', wh=4, ww=4))
    assert torch.equal(blk._from_windows(xw, 2, 8, 12), x)
