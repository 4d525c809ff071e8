"""python -m bench.peer (see bench/peer/__init__.py)."""

import sys

from bench.peer.cli import main

if __name__ == "__main__":
    sys.exit(main())
