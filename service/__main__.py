"""`python -m service --model CHECKPOINT [...]`: the same as `tlcr serve`."""

from service.cli import main

if __name__ == "__main__":
    main()
