"""The runtime without rich (the lighter install): its stand-ins read rich's markup as rich
does, and the CLI prints the same table cells as plain text with rich unimportable."""

import re
import subprocess
import sys
import textwrap

import pytest
from rich.markup import escape as rich_escape
from rich.text import Text

from edgepack_runtime.report import plain
from edgepack_runtime.textui import PlainTable, plain_escape, strip_markup

MARKUP = ["[bold]name[/]  target x", "[green]ok[/] cos 0.9999", "[red]FAIL[/] cos 0.5 (≥ 0.99)",
          "[yellow]top-1 80.0% indicative[/]", "arm64 [yellow](≠ target)[/]", "no markup [1, 2, 3]",
          r"a \[bold] literal", r"two \\[bold]slashes[/]", "[#ff0000]hex[/] and [@click]x[/]"]
UNTRUSTED = ["[red]evil[/]", "x[/]y", "a\\[b]", "[link=http://x]y[/link]", "tab\there", "[", "]", "[1]"]


@pytest.mark.parametrize("text", MARKUP + [plain(t) for t in UNTRUSTED] + [f"[bold]{plain(t)}[/]" for t in UNTRUSTED])
def test_markup_reads_as_rich_reads_it(text):
    assert strip_markup(text) == Text.from_markup(text).plain


@pytest.mark.parametrize("text", UNTRUSTED)
def test_escape_is_riches(text):
    assert plain_escape(text) == rich_escape(text)
    assert strip_markup(plain_escape(text)) == text  # untrusted text prints as written


def test_plain_table_aligns_columns():
    table = PlainTable(title="[bold]t[/]")
    table.add_column("label")
    table.add_column("score", justify="right")
    table.add_row("[red]cat[/]", "0.9")
    table.add_row("dog", "0.25")
    table.caption = "* a note"
    assert table.lines() == ["t", "label  score", "-----  -----", "cat      0.9", "dog     0.25", "* a note"]


# `edgepack-runtime info` with rich blocked the way a missing install blocks it.
WITHOUT_RICH = textwrap.dedent("""
    import sys
    sys.modules["rich"] = None  # `import rich.anything` now raises ImportError
    sys.argv = ["edgepack-runtime", "info", sys.argv[1]]
    from edgepack_runtime.cli import main
    try:
        main()
    finally:
        sys.stderr.write("rich imported: %s" % any(m.startswith("rich.") for m in sys.modules))
""")


RULE = re.compile("[│┃]")  # rich's column rules (header, body)


def _rows(text: str, artifacts: list[str]) -> dict[str, list[str]]:
    """Each artifact's table cells, from rich's box-drawn table or the plain one."""
    rows = {}
    for line in text.splitlines():
        cells = ([c.strip() for c in RULE.split(line.strip().strip("│┃"))] if RULE.search(line)
                 else re.split(r"\s{2,}", line.strip()))
        if cells and cells[0].rstrip(" *") in artifacts:
            rows[cells[0].rstrip(" *")] = cells
    return rows


def test_cli_prints_the_same_cells_without_rich(digits_bundle):
    import edgepack_runtime

    artifacts = [a.name for a in edgepack_runtime.open_bundle(digits_bundle).manifest.artifacts]
    plain_run = subprocess.run([sys.executable, "-c", WITHOUT_RICH, str(digits_bundle)], capture_output=True,
                               text=True, timeout=120)
    assert plain_run.returncode == 0, plain_run.stderr
    assert plain_run.stderr.endswith("rich imported: False")
    rich_run = subprocess.run([sys.executable, "-m", "edgepack_runtime", "info", str(digits_bundle)],
                              capture_output=True, text=True, timeout=120)
    assert rich_run.returncode == 0, rich_run.stderr
    assert "│" in rich_run.stdout and "│" not in plain_run.stdout
    keys = ["artifact", *artifacts]  # the header row, then one row per artifact
    assert _rows(plain_run.stdout, keys) == _rows(rich_run.stdout, keys)
    assert len(_rows(plain_run.stdout, keys)) == len(keys)
    box_drawing = re.compile(r"^[\s\u2500-\u257f]*$")
    rich_lines = [line for line in rich_run.stdout.splitlines()
                  if not RULE.search(line) and not box_drawing.match(line)]
    for line in rich_lines:  # the lines around the table: word for word
        assert line.strip() in plain_run.stdout, line
