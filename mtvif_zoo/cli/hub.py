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


#: the headline of ``mtvif info``: the paper's Tables 4-5 metrics (dE lower is better) on MSRS
HEADLINE = ('EN', 'MI', 'VIF', 'Qabf', 'SSIM', 'MS_SSIM', 'dE')


def _card_field(text: str, field: str) -> str:
    """The text of a ``- **Field**: ...`` line of a card ('' if absent)."""
    for line in text.splitlines():
        if line.startswith(f'- **{field}**:'):
            return line.split(':', 1)[1].strip()
    return ''


def _sources(info) -> str:
    from ..hub import __file__ as hub_init
    name = info.get('name') or ''
    shipped = Path(hub_init).parent / 'weights' / name / 'model.safetensors'
    out = [f'shipped copy {shipped}' if name and shipped.is_file() else None,
           f'HF Hub {info["hf_hub_id"]}' if info.get('hf_hub_id') else None,
           f'URL {info["url"]}' if info.get('url') else None]
    return '; '.join(o for o in out if o) or 'none recorded'


def _headline(metrics):
    """(where, {metric: value}) of the MSRS test set in the paper convention, else the first
    image-to-image group of the card; and the segmentation mIoU rows."""
    groups = {}
    for m in metrics:
        if m['task'] == 'image-to-image':
            groups.setdefault((m['dataset'], m['split'] or '', m['convention']), {})[m['metric']] = m['value']
    key = next((k for k in groups if k[0] == 'MSRS' and k[2] == 'paper'), next(iter(groups), None))
    seg = [m for m in metrics if m['task'] == 'image-segmentation']
    return key, (groups[key] if key else {}), seg


def _info(args) -> int:
    import textwrap

    from ..hub import card_summary, model_card
    text = model_card(args.name, revision=args.revision)
    info = card_summary(text)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [('name', info.get('name')), ('architecture', info.get('architecture')),
            ('backbone / head', f'{info.get("backbone")} / {info.get("head")}'),
            ('input channels', info.get('in_chans')), ('classes', info.get('num_classes')),
            ('params', f'{_num(info.get("params"), 1e6, "M")} '
                       f'(fusion-only {_num(info.get("params_fusion"), 1e6, "M")})'),
            ('MACs @256x256', f'{_num(info.get("macs_256_train"), 1e9, "G")} training, '
                              f'{_num(info.get("macs_256_fusion"), 1e9, "G")} fusion-only'),
            ('training data', info.get('training_data')), ('budget', _card_field(text, 'Budget') or 'not recorded')]
    if args.full:
        rows += [('hardware', _card_field(text, 'Hardware') or 'not recorded'), ('weights', info.get('weights')),
                 ('license', info.get('license')), ('sha256', info.get('sha256'))]
    rows.append(('sources', _sources(info)))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        lines = textwrap.wrap(str(v), 100 - width - 2) or ['']
        print(f'{k:<{width}}  {lines[0]}')
        for line in lines[1:]:
            print(f'{"":<{width}}  {line}')
    metrics = info['metrics']
    if not metrics:
        print('metrics: not recorded')
        return 0
    if args.full:
        print('metrics:')
        for m in metrics:
            v = m['value']
            print(f'  {m["dataset"]} {m["split"] or ""} {m["metric"]:<8} {v:.4f}  ({m["task"]}, {m["convention"]})'
                  if isinstance(v, (int, float)) else f'  {m["dataset"]} {m["split"] or ""} {m["metric"]:<8} {v}')
        return 0
    key, head, seg = _headline(metrics)
    if key:
        names = [n for n in HEADLINE if n in head] or sorted(head)
        print(f'{key[0]} {key[1]} ({key[2]} convention; dE lower is better):')
        print('  ' + '  '.join(f'{n} {head[n]:.3f}' for n in names))
    for m in seg:
        print(f'segmentation: {m["metric"]} {m["value"]:.3f} on {m["dataset"]} {m["split"] or ""}'.rstrip())
    sets = sorted({m['dataset'] for m in metrics})
    print(f'({len(metrics)} values on {len(sets)} datasets in the card: mtvif info {args.name} --full, '
          f'or --json; the card itself: mtvif card {args.name})')
    return 0


def add_parser(sub) -> None:
    help_name = 'arch.tag, hf-hub:org/name[@rev], local-dir:PATH, a file/folder or a URL'
    p = sub.add_parser('card', help="print or save a published weight's model card")
    p.add_argument('name', help=help_name)
    p.add_argument('--out', '-o', help='write the card to this file instead of printing it')
    p.add_argument('--revision', help='Hub revision (default: the pinned one)')
    p.set_defaults(func=_card)

    p = sub.add_parser('info', help="summary of a published weight's card (variant, sizes, data, metrics)",
                       description="A short summary of a published weight's card: variant, size, training data "
                                   'and budget, the headline metrics (MSRS test, paper convention) to 3 decimals '
                                   'and where the weights come from; --full adds every recorded metric.')
    p.add_argument('name', help=help_name)
    p.add_argument('--revision', help='Hub revision (default: the pinned one)')
    p.add_argument('--full', action='store_true', help='every field and every metric of the card')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=_info)
