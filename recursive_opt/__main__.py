"""`python -m recursive_opt` is the `recursive-opt` command (see `_cli.py`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
