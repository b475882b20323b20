"""``python -m notifier`` is the ``notifier`` command."""

from notifier.cli import main

raise SystemExit(main())
