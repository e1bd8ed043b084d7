"""Search Multi-Task Head widths that put a variant on Table 7 (params and MACs at 256x256, 3 ch).

    python benchmarks/size_mth.py mtvif_iii            # prints the best width settings
    python benchmarks/size_mth.py mtvif_i --seg-stride 2

MACs are counted with torch's FlopCounterMode on the meta device (no arithmetic), the backbone
once, each candidate head on the backbone's feature map. The chosen settings are in
``mtvif_zoo.models.multitaskvif.MTH_CFGS``.
"""
import argparse
import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

import mtvif_zoo
from mtvif_zoo.models.heads.mth import MultiTaskHead
from mtvif_zoo.profile import TABLE7, count_params


def macs(fn, *args) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn(*args)
    return fc.get_total_flops() / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('variant', choices=sorted(TABLE7))
    ap.add_argument('--seg-stride', type=int, default=1)
    ap.add_argument('--top', type=int, default=8)
    args = ap.parse_args()
    target_p, target_m, _ = TABLE7[args.variant]
    bb = copy.deepcopy(mtvif_zoo.create_model(args.variant).backbone).to('meta')
    x = torch.empty(1, 3, 256, 256, device='meta')
    bb_m = macs(bb, x, x)
    with torch.no_grad():
        feat = bb(x, x)
    bb_p = count_params(bb)
    rows = []
    for a in range(32, 257, 16):
        for b in range(32, 161, 16):
            for s in range(32, 385, 16):
                for tail in ((32, 16), (64, 32)):
                    head = MultiTaskHead(bb.num_features, 3, 9, fusion_chs=(a, b), fusion_tail_chs=tail, seg_chs=(s,),
                                         seg_stride=args.seg_stride)
                    p = bb_p + count_params(head)
                    if abs(p - target_p) / target_p > 0.05:
                        continue
                    m = bb_m + macs(head.to('meta').train(), feat, True)
                    err = max(abs(p - target_p) / target_p, abs(m - target_m) / target_m)
                    rows.append((err, dict(fusion_chs=(a, b), fusion_tail_chs=tail, seg_chs=(s,),
                                           seg_stride=args.seg_stride), p, m))
    rows.sort(key=lambda r: r[0])
    print(f'{args.variant}: backbone {bb_p / 1e6:.3f} M params, {bb_m / 1e9:.2f} GMACs; '
          f'Table 7 {target_p / 1e6:.2f} M, {target_m / 1e9:.2f} G')
    for err, cfg, p, m in rows[:args.top]:
        print(f'  max err {100 * err:5.2f} %  params {p / 1e6:.3f} M  MACs {m / 1e9:7.2f} G  {cfg}')


if __name__ == '__main__':
    main()
