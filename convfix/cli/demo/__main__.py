"""``python -m convfix.cli.demo``: the demo, as ``convfix demo`` runs it."""

import sys

from convfix.cli.demo import main

sys.exit(main())
