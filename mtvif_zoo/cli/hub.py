"""``mtvif card NAME [--out FILE]`` and ``mtvif info NAME``: a published weight's model card and its summary.

NAME: ``arch.tag`` (or an architecture: its default tag), ``hf-hub:org/name[@rev]``,
``local-dir:PATH``, a folder or ``.md`` file, or an ``http(s)://`` / ``file://`` URL.
"""
import json
import sys
from pathlib import Path

__all__ = ['add_parser']


def _card(args) -> int:
    from ..hub import model_card
    text = model_card(args.name, revision=args.revision)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding='utf-8')
        print(f'wrote {args.out}', file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith('\n') else text + '\n')
    return 0


def _num(v, scale: float, unit: str) -> str:
    return f'{v / scale:.3f} {unit}' if isinstance(v, (int, float)) else 'not recorded'


def _info(args) -> int:
    from ..hub import card_summary, model_card
    info = card_summary(model_card(args.name, revision=args.revision))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [('name', info.get('name')), ('architecture', info.get('architecture')),
            ('backbone / head', f'{info.get("backbone")} / {info.get("head")}'),
            ('input channels', info.get('in_chans')), ('classes', info.get('num_classes')),
            ('weights', info.get('weights')),
            ('params', f'{_num(info.get("params"), 1e6, "M")} '
                       f'(fusion-only {_num(info.get("params_fusion"), 1e6, "M")})'),
            ('MACs @256x256', f'{_num(info.get("macs_256_train"), 1e9, "G")} training, '
                              f'{_num(info.get("macs_256_fusion"), 1e9, "G")} fusion-only'),
            ('training data', info.get('training_data')), ('license', info.get('license')),
            ('sha256', info.get('sha256')), ('hub', info.get('hf_hub_id') or '-'), ('url', info.get('url') or '-')]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f'{k:<{width}}  {v}')
    if info['metrics']:
        print('metrics:')
        for m in info['metrics']:
            print(f'  {m["dataset"]} {m["split"] or ""} {m["metric"]:<8} {m["value"]}  '
                  f'({m["task"]}, {m["convention"]})')
    else:
        print('metrics:  not recorded')
    return 0


def add_parser(sub) -> None:
    help_name = 'arch.tag, hf-hub:org/name[@rev], local-dir:PATH, a file/folder or a URL'
    p = sub.add_parser('card', help="print or save a published weight's model card")
    p.add_argument('name', help=help_name)
    p.add_argument('--out', '-o', help='write the card to this file instead of printing it')
    p.add_argument('--revision', help='Hub revision (default: the pinned one)')
    p.set_defaults(func=_card)

    p = sub.add_parser('info', help="summary of a published weight's card (variant, sizes, data, metrics)")
    p.add_argument('name', help=help_name)
    p.add_argument('--revision', help='Hub revision (default: the pinned one)')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=_info)
