"""The artifacts table that `edgepack build` and `edgepack-runtime info` both print."""

from __future__ import annotations

import re
from typing import Optional

from .manifest import Artifact, Manifest
from .textui import Console, Table, escape

__all__ = ["artifacts_table", "format_size", "make_console", "one_line", "plain"]

# Terminal control characters (an escape sequence can recolour, retitle or clear a terminal);
# line breaks and tabs stay: they only move the text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")
# Rich assumes 80 columns when output is not a terminal (CI logs, pipes); the
# artifacts table needs more to stay on one line per artifact.
PIPE_WIDTH = 160
TABLE_METRICS = 2  # of an artifact's task figures in the table; the manifest has them all


def plain(value: object) -> str:
    """The one rule for untrusted text on the terminal: anything from a bundle, a device, a
    file name or a model goes through here before rich prints it, so "[red]" or "x[/]y" in
    a manifest name prints as written instead of being read (or failing) as markup."""
    return escape(_CONTROL.sub(lambda m: repr(m.group())[1:-1], str(value)))


def one_line(text: str) -> str:
    """An error message as the one line it must be, even with line breaks from a bundle in it."""
    return " ".join(str(text).split("\n")).replace("\r", " ")


def make_console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=PIPE_WIDTH)
    return console


def format_size(size: Optional[int]) -> str:
    if size is None:
        return "-"
    scaled = float(size)
    for unit in ("B", "KiB", "MiB"):
        if scaled < 1024 or unit == "MiB":
            return f"{scaled:.0f} {unit}" if unit == "B" else f"{scaled:.1f} {unit}"
        scaled /= 1024
    return "-"


def _parity(art: Artifact) -> str:
    v = art.validation
    if v is None:
        return "-"
    mark = "[green]ok[/]" if v.passed else "[red]FAIL[/]"
    if v.cosine is None:  # schema-1 bundle: absolute tolerance only
        return f"{mark} {v.max_abs_diff:.2e} {'≤' if v.passed else '>'} {v.tolerance:.1e}"
    if v.passed:
        return f"{mark} cos {v.cosine:.4f}"
    return f"{mark} cos {v.cosine:.4f} (≥ {v.min_cosine}), |diff| {v.max_abs_diff:.1e} (≤ {v.tolerance:.1e})"


def _accuracy(art: Artifact, manifest: Manifest) -> str:
    acc = art.accuracy
    if acc is None:
        return "-"
    if acc.cosine is None:  # schema-1 bundle: top-1 against the labels, when there were labels
        if acc.drop is None:
            return "-"
        text = f"top-1 {acc.top1:.2f}% ({-acc.drop:+.2f})"
        missed = acc.drop > manifest.accuracy_tolerance
    elif acc.metrics:  # schema 2.3: the task's two main figures, the first with its 95 % interval (all: --json)
        parts = [m.describe(interval=i == 0) for i, m in enumerate(acc.metrics[:TABLE_METRICS])]
        if acc.drop is not None:
            parts.append(f"top-1 {acc.top1:.1f}% ({-acc.drop:+.1f})")
        text = escape(", ".join(parts))
        missed = acc.within_budget is False
    else:
        parts = [f"cos {acc.cosine:.4f}"]
        if acc.top1_agreement is not None:
            parts.append(f"top-1 agree {acc.top1_agreement:.1f}%")
        if acc.drop is not None:
            parts.append(f"top-1 {acc.top1:.1f}% ({-acc.drop:+.1f})")
        text = ", ".join(parts)
        missed = acc.within_budget is False
    if acc.indicative:
        # Measured on a host whose integer kernels differ from the target's.
        return f"[yellow]{text} indicative[/]"
    return f"[red]{text}[/]" if missed else text


def _where(art: Artifact) -> str:
    acc = art.accuracy
    if acc is not None and acc.measured_on:
        return (plain(acc.measured_on.replace(" (build host)", ""))
                + (" [yellow](≠ target)[/]" if acc.indicative else ""))
    host = (art.validation.host if art.validation else None) or {}
    where = plain(host.get("arch", "-"))
    if art.validation is not None and not art.validation.host_matches_target:
        where += " [yellow](≠ target)[/]"
    return where


def artifacts_table(manifest: Manifest, default: Optional[str] = None) -> Table:
    """One row per artifact: format, precision, size, parity vs PyTorch, accuracy, latency.
    `default` marks the artifact `load()` picks when none is named."""
    reference = next((a.accuracy.reference_top1 for a in manifest.artifacts
                      if a.accuracy and a.accuracy.reference_top1 is not None), None)
    title = f"{plain(manifest.name)} → {plain(manifest.target.get('id'))}"
    if reference is not None:
        title += f"   (PyTorch top-1 {reference:.2f}%)"
    table = Table(title=title)
    for column in ("artifact", "size", "parity", "accuracy vs PyTorch", "measured on", "p50 at build"):
        table.add_column(column, no_wrap=True)
    failures = []
    for art in manifest.artifacts:
        label = plain(art.name) + (" *" if art.name == default else "")
        if art.status != "ok":
            verdict = "[red]build failed (below)[/]" if art.status == "failed" else "[red]left out (below)[/]"
            table.add_row(label, "-", verdict, _accuracy(art, manifest), "-", "-")
            failures.append(f"[red]{plain(art.name)}[/]: {plain(art.error or '')}")
            continue
        speed = f"{art.latency.p50_ms:.2f} ms" if art.latency is not None and art.latency.matches_target else "-"
        table.add_row(label, format_size(art.size_bytes), _parity(art), _accuracy(art, manifest), _where(art), speed)
    notes = failures + (["* the default artifact (load() without artifact=)"] if default else [])
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table
