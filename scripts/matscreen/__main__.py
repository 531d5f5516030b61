"""``python -m matscreen`` is the ``matscreen`` command."""

import sys

from matscreen.cli import main

sys.exit(main())
