"""`python -m kmcodec`: the same as the kmcodec command."""

from .console import run

if __name__ == "__main__":
    run()
