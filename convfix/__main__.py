"""``python -m convfix``: the ``convfix`` command, for when the console script is not on PATH."""

import sys

from convfix.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
