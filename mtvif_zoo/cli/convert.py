"""``mtvif convert --arch NAME --checkpoint FILE.pth --out DIR``: an original release -> a zoo folder.

The written folder (``model.safetensors``, ``config.json`` with the source sha256, card) loads with
``create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=DIR))``.
"""
import sys

__all__ = ['add_parser', 'ARCHS']

#: the networks with a converter (== sorted(mtvif_zoo.hub.convert.ORIGINAL_ARCHS), kept here so --help imports no torch)
ARCHS = ('emma_ufuser', 'seafusion', 'segmif', 'swinfusion')


def _convert(args) -> int:
    from ..hub.convert import convert_checkpoint
    out = convert_checkpoint(args.arch, args.checkpoint, args.out, tag=args.tag)
    print(f'wrote {out} (load: mtvif_zoo.create_model({args.arch!r}, pretrained=True, '
          f'pretrained_cfg_overlay=dict(file={str(out)!r})))', file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser('convert', help='convert an original SwinFusion / EMMA / SeAFusion / SegMiF checkpoint '
                                       '(.pth, read with weights_only=True) into a safetensors folder')
    p.add_argument('--arch', required=True, choices=ARCHS, help='the original network')
    p.add_argument('--checkpoint', required=True, help='the original release file (.pth)')
    p.add_argument('--out', required=True, help='folder to write (model.safetensors, config.json, README.md)')
    p.add_argument('--tag', default='converted', help='tag of the written name ARCH.TAG (default: converted)')
    p.set_defaults(func=_convert)
