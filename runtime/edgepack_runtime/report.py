"""The artifacts table that `edgepack build` and `edgepack-runtime info` both print."""

from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .manifest import Artifact, Manifest

__all__ = ["artifacts_table", "format_size", "make_console"]

# Rich assumes 80 columns when output is not a terminal (CI logs, pipes); the
# artifacts table needs more to stay on one line per artifact.
PIPE_WIDTH = 140


def make_console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=PIPE_WIDTH)
    return console


def format_size(size: Optional[int]) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


def _parity(art: Artifact) -> str:
    v = art.validation
    if v is None:
        return "-"
    mark = "[green]ok[/]" if v.passed else "[red]FAIL[/]"
    return f"{mark} {v.max_abs_diff:.2e} ≤ {v.tolerance:.1e}" if v.passed else f"{mark} {v.max_abs_diff:.2e} > {v.tolerance:.1e}"


def _accuracy(art: Artifact, tolerance: float) -> str:
    acc = art.accuracy
    if acc is None:
        return "-"
    text = f"{acc.top1:.2f}% ({-acc.drop:+.2f})"
    if acc.indicative:
        # Measured on a host whose int8 kernels differ from the target's.
        return f"[yellow]{text} indicative[/]"
    return f"[red]{text}[/]" if acc.drop > tolerance else text


def artifacts_table(manifest: Manifest) -> Table:
    """One row per artifact: format, precision, size, parity vs PyTorch, accuracy."""
    reference = next((a.accuracy.reference_top1 for a in manifest.artifacts if a.accuracy), None)
    title = f"{manifest.name} → {manifest.target.get('id')}"
    if reference is not None:
        title += f"   (PyTorch top-1 {reference:.2f}%)"
    table = Table(title=title)
    for column in ("artifact", "format", "precision", "size", "parity vs PyTorch", "top-1 (vs PyTorch)", "validated on"):
        table.add_column(column, no_wrap=True)
    failures = []
    for art in manifest.artifacts:
        if art.status != "ok":
            table.add_row(art.name, art.format, art.precision, "-", "[red]build failed (below)[/]", "-", "-")
            failures.append(f"[red]{art.name}[/]: {escape(art.error or '')}")
            continue
        host = art.validation.host if art.validation else {}
        where = host.get("arch", "-")
        if art.validation is not None and not art.validation.host_matches_target:
            where += " [yellow](≠ target)[/]"
        table.add_row(
            art.name, art.format, art.precision, format_size(art.size_bytes),
            _parity(art), _accuracy(art, manifest.accuracy_tolerance), where,
        )
    if failures:
        table.caption = "\n".join(failures)
        table.caption_justify = "left"
    return table
