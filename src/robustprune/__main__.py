"""``python -m robustprune``: the ``robustprune`` command, for environments without the console script."""

import sys

from robustprune.cli import main

sys.exit(main())
