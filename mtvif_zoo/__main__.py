"""``python -m mtvif_zoo ...`` == ``mtvif ...``."""
import sys

from .cli import main

sys.exit(main())
