"""``mtvif list`` and ``mtvif profile``: what the zoo holds and what each model costs."""
import json

__all__ = ['add_parser']


def _list(args) -> int:
    from .. import create_model, list_models
    from ..profile import count_params
    names = list_models(args.filter or '', pretrained=args.pretrained)
    published = list_models(pretrained=True)
    rows = []
    for name in names:
        arch = name.split('.')[0]
        m = create_model(arch)
        tags = [n.split('.', 1)[1] for n in published if n.split('.')[0] == arch]
        rows.append((name, m.backbone_name, m.head_name, count_params(m), tags))
    if args.json:
        print(json.dumps([dict(name=n, backbone=b, head=h, params=p, pretrained_tags=t) for n, b, h, p, t in rows],
                         indent=2))
        return 0
    print(f'{"model":<24}{"backbone":<12}{"head":<10}{"params":>10}  pretrained')
    for n, b, h, p, t in rows:
        print(f'{n:<24}{b:<12}{h:<10}{p / 1e6:>9.3f}M  {", ".join(t) if t else "-"}')
    return 0


def _profile(args) -> int:
    from .. import create_model
    from ..profile import profile
    from ._device import cli_device
    device = cli_device(args.device) if args.device else None
    kwargs = {}
    if args.in_chans:
        kwargs['in_chans'] = args.in_chans
    if args.head:
        kwargs['head'] = args.head
    model = create_model(args.model, **kwargs)
    if device is not None:
        model = model.to(device)
    res = profile(model, size=tuple(args.size), memory=not args.no_memory, name=args.model)
    print(json.dumps(res.as_dict(), indent=2) if args.json else res)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser('list', help='list the zoo\'s models (and pretrained tags)')
    p.add_argument('filter', nargs='?', default='', help="wildcard, e.g. 'mtvif*'")
    p.add_argument('--pretrained', action='store_true', help='only arch.tag names with published weights')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=_list)

    p = sub.add_parser('profile', help='params, MACs and training memory at 256x256, next to Table 7')
    p.add_argument('model', help='model name, e.g. mtvif_i, mtvif_ii, mtvif_iii, mtvif_iv')
    p.add_argument('--size', type=int, nargs=2, default=(256, 256), metavar=('H', 'W'))
    p.add_argument('--in-chans', type=int, choices=(1, 3))
    p.add_argument('--head')
    p.add_argument('--device', help='cpu or cuda (memory is measured on this device)')
    p.add_argument('--no-memory', action='store_true', help='skip the (slower) training-memory measurement')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=_profile)
