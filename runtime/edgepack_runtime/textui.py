"""Rich when it is installed, plain text when it is not: the device runtime's tables.

rich and pygments (7 MB on aarch64, where the base runtime installs in 58 MB) only draw tables, so the
runtime's core does not require them (`pip install 'edgepack-runtime[rich]'` brings them
back). The code that prints builds rich's objects through this module either way: with
rich present nothing changes; without it `Console`, `Table` and `escape` are small
stand-ins that understand the part of rich the runtime uses (markup tags such as
`[bold]`/`[red]…[/]`, escaped brackets, titled tables with a caption) and print aligned
plain text.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Optional, TextIO

__all__ = ["Console", "Table", "escape", "HAVE_RICH"]

# rich's markup: a tag is "[" + a letter, "#", "/" or "@" + anything up to "]"; a tag with
# an odd number of backslashes before it is an escaped literal (rich.markup's own pattern).
_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")
COLUMN_GAP = "  "
HEADER_RULE = "-"


def plain_escape(text: str) -> str:
    """rich.markup.escape: a backslash before anything that would read as a tag."""
    return _TAG.sub(r"\1\1\\\2", text)


def strip_markup(text: str) -> str:
    """What rich prints of `text`, without its styles: tags dropped, escapes undone."""
    def replace(match: re.Match[str]) -> str:
        slashes, tag = match.groups()
        escaped = len(slashes) % 2 == 1
        return slashes[:len(slashes) // 2] + (tag if escaped else "")

    return _TAG.sub(replace, text)


class PlainTable:
    """The subset of rich.table.Table the runtime builds: a title, columns (left or right
    justified), rows of markup strings, a caption."""

    def __init__(self, title: Optional[str] = None, **_: Any) -> None:
        self.title, self.caption, self.caption_justify = title, None, "center"
        self.columns: list[tuple[str, str]] = []
        self.rows: list[list[str]] = []

    def add_column(self, header: str = "", justify: str = "left", **_: Any) -> None:
        self.columns.append((header, justify))

    def add_row(self, *cells: Any) -> None:
        self.rows.append(["" if cell is None else str(cell) for cell in cells])

    def lines(self) -> list[str]:
        header = [strip_markup(name) for name, _ in self.columns]
        body = [[strip_markup(cell) for cell in row] for row in self.rows]
        widths = [max(len(cell) for cell in column) for column in zip(header, *body)]
        justify = [how for _, how in self.columns]

        def line(cells: list[str]) -> str:
            padded = (cell.rjust(w) if how == "right" else cell.ljust(w)
                      for cell, w, how in zip(cells, widths, justify))
            return COLUMN_GAP.join(padded).rstrip()

        out = [strip_markup(self.title)] if self.title else []
        out += [line(header), COLUMN_GAP.join(HEADER_RULE * w for w in widths)]
        out += [line(row) for row in body]
        if self.caption:
            out += strip_markup(self.caption).splitlines()
        return out


class PlainConsole:
    """The subset of rich.console.Console the runtime prints through, to stdout or stderr
    as they are at print time (so redirections made after start-up are followed)."""

    def __init__(self, stderr: bool = False, width: Optional[int] = None, **_: Any) -> None:
        self.stderr, self.width = stderr, width
        self.file = None

    @property
    def is_terminal(self) -> bool:
        stream = self._stream()
        return bool(getattr(stream, "isatty", lambda: False)())

    def _stream(self) -> TextIO:
        return self.file or (sys.stderr if self.stderr else sys.stdout)

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        parts = ["\n".join(o.lines()) if isinstance(o, PlainTable) else strip_markup(str(o)) for o in objects]
        self._stream().write(sep.join(parts) + end)


try:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    HAVE_RICH = True
except ImportError:  # the lighter install: same calls, plain text
    Console, Table, escape = PlainConsole, PlainTable, plain_escape  # type: ignore[assignment,misc]
    HAVE_RICH = False
