"""``python -m meshlib``: the command line."""

import sys

from meshlib.cli import main

sys.exit(main())
