"""Turn a converter's exception chain into the one line a user needs."""

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def root_cause(exc: BaseException) -> str:
    """The innermost cause's first line: converters wrap the useful part (which op
    failed) under layers of generic advice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = _ANSI.sub("", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
