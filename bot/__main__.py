"""``python -m bot``: the same entry point as the ``pipebot`` console script."""

import sys

from bot.cli import main

sys.exit(main())
