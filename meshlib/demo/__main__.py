"""``python -m meshlib.demo [--fast|--serve]``."""

import sys

from ._cli import main

sys.exit(main())
