"""The ``mtvif`` command line: ``mtvif <command> --help`` for each command.

Each command lives in its own module exposing ``add_parser(subparsers)``; the module's parser
sets ``func(args) -> int``. The CLI only imports the library (never the reverse).
"""
import argparse
import importlib
import pkgutil
import sys
from typing import List, Optional

from ..version import __version__

__all__ = ['main', 'build_parser']



def command_modules() -> List[str]:
    """Every module of this package that defines ``add_parser`` (one or more commands each), sorted."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith('_')]
    return sorted(names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='mtvif', description='MultiTaskVIF model zoo: visible + infrared image fusion.')
    parser.add_argument('--version', action='version', version=f'mtvif_zoo {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name in command_modules():
        module = importlib.import_module(f'{__name__}.{name}')
        if hasattr(module, 'add_parser'):
            module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'func', None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f'mtvif {args.command}: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
