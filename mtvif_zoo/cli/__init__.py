"""The ``mtvif`` command line: ``mtvif <command> --help`` for each command.

Each command lives in its own module exposing ``add_parser(subparsers)``; the module's parser
sets ``func(args) -> int``. The CLI only imports the library (never the reverse).

Start-up: command modules import torch and the library only inside their functions, so
``mtvif --help`` / ``mtvif COMMAND --help`` parse and answer without importing torch (see
``mtvif_zoo/__init__.py``); the library is loaded once a command runs. Output to a closed pipe
(``mtvif info NAME | head``) ends quietly, without a ``BrokenPipeError`` traceback.
"""
import argparse
import importlib
import os
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


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (``| head``): send the rest to devnull so that the interpreter's
    final flush does not raise again, and exit like a SIGPIPE-killed tool would report it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


def main(argv: Optional[List[str]] = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, 'func', None):
            parser.print_help()
            return 2
        from .. import _load_all
        _load_all()  # torch, timm, the models' registration
        try:
            return int(args.func(args) or 0)
        except (ValueError, FileNotFoundError, KeyError, ImportError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f'mtvif {args.command}: error: {msg}', file=sys.stderr)
            return 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print('mtvif: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
