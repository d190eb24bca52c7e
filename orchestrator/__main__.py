"""`python -m orchestrator ...`: the same command line as the `orchestrator` script."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main())
