"""`python -m tlcr ...`: the same as the `tlcr` command."""

from tlcr.entry import main

if __name__ == "__main__":
    main()
