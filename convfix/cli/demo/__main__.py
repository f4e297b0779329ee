"""``python -m convfix.cli.demo``: the demo, as ``convfix demo`` runs it."""

import sys

from convfix.cli._pipe import guarded
from convfix.cli.demo import main

sys.exit(guarded(main))
