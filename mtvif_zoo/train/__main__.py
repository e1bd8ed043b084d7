"""``python -m mtvif_zoo.train ARGS`` == ``mtvif train ARGS`` (works under ``torchrun -m`` too)."""
import sys

from ..cli import main

if __name__ == '__main__':
    sys.exit(main(['train', *sys.argv[1:]]))
