"""Prometheus text exposition: what the server's /metrics and `telemetry export --format
prometheus` (node_exporter's textfile collector) both write."""

from __future__ import annotations

from typing import Union

__all__ = ["metric", "sample"]


def _label(value: object) -> str:
    """A label value, escaped as the text exposition format requires."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metric(name: str, kind: str, help_text: str) -> list[str]:
    """The # HELP and # TYPE lines that start a metric family."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def sample(name: str, value: Union[float, str], **labels: object) -> str:
    """One sample line; floats in the shortest form that keeps 6 significant digits."""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    inner = ",".join(f'{key}="{_label(v)}"' for key, v in labels.items())
    return f"{name}{{{inner}}} {text}" if labels else f"{name} {text}"
