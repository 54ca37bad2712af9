"""`python -m smis.reproduce`: the command line of smis.reproduce.cli."""
import sys

from smis.reproduce.cli import main

if __name__ == "__main__":
    sys.exit(main())
