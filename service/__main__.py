"""`python -m tlcr.service --model CHECKPOINT [...]`: the same as `tlcr serve`."""

from tlcr.service.cli import main

if __name__ == "__main__":
    main()
