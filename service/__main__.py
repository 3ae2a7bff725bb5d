"""`python -m service --model CHECKPOINT [...]`: the same as `tlcr serve`."""

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
