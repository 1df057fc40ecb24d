"""`python -m edgepack`: the same CLI as `edgepack`."""

from .cli import main

main(prog_name="edgepack")
