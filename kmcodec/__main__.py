"""`python -m kmcodec`: the same as the kmcodec command."""

from .cli import run

run()
