"""``python -m heedful`` runs the console script."""

import sys

from heedful.cli import main

sys.exit(main())
