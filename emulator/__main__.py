"""``python -m emulator ...``: the same as ``notifier emulator ...``."""

import sys

from emulator import main

raise SystemExit(main(sys.argv[1:]))
