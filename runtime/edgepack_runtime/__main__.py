"""`python -m edgepack_runtime`: the same CLI as `edgepack-runtime` (handy on a device
where pip's script folder is not on PATH)."""

from .cli import main

main(prog_name="edgepack-runtime")
