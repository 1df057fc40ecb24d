"""Read the telemetry database: summaries, exports (JSON, CSV, Prometheus text), purge."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from .drift import DRIFT_THRESHOLD
from .errors import TelemetryError
from .prometheus import metric, sample
from .telemetry import HISTOGRAM_EDGES_MS, connect


@contextlib.contextmanager
def _database(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection for a report; any database failure becomes one TelemetryError."""
    try:
        conn = connect(path)
    except (sqlite3.Error, OSError) as exc:
        raise TelemetryError(f"cannot read the telemetry database {path} ({exc}); move it aside or delete it "
                             "(recording starts a new one)") from exc
    try:
        yield conn
    except (sqlite3.Error, ValueError) as exc:  # ValueError: a histogram that is not JSON
        raise TelemetryError(f"the telemetry database {path} is damaged ({exc}); move it aside or delete it "
                             "(recording starts a new one)") from exc
    finally:
        conn.close()

__all__ = ["summary", "export", "purge", "histogram_percentile", "parse_since"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: Optional[str]) -> Optional[float]:
    """"30m", "1h", "7d" → seconds; None → everything."""
    if not text:
        return None
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.replace(".", "", 1).isdigit():
        raise ValueError(f"--since {text!r} must look like 30s, 15m, 1h or 7d")
    return float(number) * _UNITS[unit]


def histogram_percentile(histogram: list[int], q: float) -> Optional[float]:
    """The q-quantile (0..1) of a latency histogram, interpolated inside its bucket."""
    total = sum(histogram)
    if total == 0:
        return None
    target, seen = q * total, 0
    for i, count in enumerate(histogram):
        if count and seen + count >= target:
            if i >= len(HISTOGRAM_EDGES_MS):
                return HISTOGRAM_EDGES_MS[-1]  # above the top edge: a lower bound
            low = HISTOGRAM_EDGES_MS[i - 1] if i else 0.0
            return low + (HISTOGRAM_EDGES_MS[i] - low) * (target - seen) / count
        seen += count
    return HISTOGRAM_EDGES_MS[-1]


def _rows(conn: sqlite3.Connection, since_s: Optional[float]) -> list[tuple[Any, ...]]:
    first_minute = int((time.time() - since_s) // 60) if since_s else 0
    return conn.execute("SELECT minute, bundle, artifact, outcome, count, latency_sum_ms, histogram FROM minutes "
                        "WHERE minute >= ? ORDER BY minute", (first_minute,)).fetchall()


def summary(path: Path, since: Optional[str] = None) -> dict[str, Any]:
    """Per bundle × artifact: count, error rate, latency percentiles; latest drift; drops."""
    since_s = parse_since(since)
    with _database(path) as conn:
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for _minute, bundle, artifact, outcome, count, _total, histogram in _rows(conn, since_s):
            g = groups.setdefault((bundle, artifact), {"count": 0, "errors": {}, "histogram": None})
            g["count"] += count
            if outcome == "ok":
                h = json.loads(histogram)
                g["histogram"] = h if g["histogram"] is None else [a + b for a, b in zip(g["histogram"], h)]
            else:
                g["errors"][outcome] = g["errors"].get(outcome, 0) + count
        artifacts = []
        for (bundle, artifact), g in sorted(groups.items()):
            errors = sum(g["errors"].values())
            h = g["histogram"] or []
            artifacts.append({
                "bundle": bundle, "artifact": artifact, "count": g["count"], "errors": g["errors"],
                "error_rate": errors / g["count"] if g["count"] else 0.0,
                "latency_ms": {f"p{int(q * 100)}": histogram_percentile(h, q) for q in (0.5, 0.9, 0.99)},
            })
        cutoff = time.time() - since_s if since_s else 0
        drift = [
            {"bundle": b, "input": i, "psi": psi, "drifted": psi >= DRIFT_THRESHOLD,
             "at": dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")}
            for b, i, psi, ts in conn.execute(
                "SELECT bundle, input, psi, MAX(ts) FROM drift WHERE ts >= ? GROUP BY bundle, input", (cutoff,))
        ]
        dropped = conn.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return {"since": since, "artifacts": artifacts, "drift": drift, "dropped": dropped[0] if dropped else 0,
                "database": str(path), "database_bytes": os.path.getsize(path)}


def _prometheus(data: dict[str, Any]) -> str:
    lines = metric("edgepack_inferences_total", "counter", "Inferences recorded, by outcome.")
    for a in data["artifacts"]:
        where = {"bundle": a["bundle"], "artifact": a["artifact"]}
        lines.append(sample("edgepack_inferences_total", a["count"] - sum(a["errors"].values()), **where, outcome="ok"))
        lines += [sample("edgepack_inferences_total", v, **where, outcome=k) for k, v in a["errors"].items()]
    lines += metric("edgepack_inference_latency_ms", "gauge", "Latency percentiles of successful inferences.")
    lines += [sample("edgepack_inference_latency_ms", float(v), bundle=a["bundle"], artifact=a["artifact"],
                     quantile=f"0.{q[1:]}")
              for a in data["artifacts"] for q, v in a["latency_ms"].items() if v is not None]
    lines += metric("edgepack_input_drift_psi", "gauge", "Population stability index of recent inputs vs calibration.")
    lines += [sample("edgepack_input_drift_psi", float(d["psi"]), bundle=d["bundle"], input=d["input"])
              for d in data["drift"]]
    lines += metric("edgepack_telemetry_dropped_total", "counter",
                    "Telemetry records dropped (disk full or database error).")
    lines.append(sample("edgepack_telemetry_dropped_total", data["dropped"]))
    return "\n".join(lines) + "\n"


def export(path: Path, fmt: str, since: Optional[str] = None) -> str:
    """The telemetry as JSON (summary), CSV (per-minute rows) or Prometheus text."""
    if fmt == "prometheus":
        return _prometheus(summary(path, since))
    if fmt == "json":
        return json.dumps(summary(path, since), indent=2) + "\n"
    if fmt != "csv":
        raise ValueError(f"unknown export format {fmt!r}; use json, csv or prometheus")
    with _database(path) as conn:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["minute_utc", "bundle", "artifact", "outcome", "count", "mean_ms",
                         "p50_ms", "p90_ms", "p99_ms"])
        for minute, bundle, artifact, outcome, count, total, histogram in _rows(conn, parse_since(since)):
            h = json.loads(histogram)
            stamp = dt.datetime.fromtimestamp(minute * 60, dt.timezone.utc).isoformat(timespec="minutes")
            writer.writerow([stamp, bundle, artifact, outcome, count, f"{total / count:.4f}" if count else "",
                             *(f"{v:.4f}" if (v := histogram_percentile(h, q)) is not None else ""
                               for q in (0.5, 0.9, 0.99))])
        return out.getvalue()


def purge(path: Path) -> None:
    with _database(path) as conn:
        for table in ("events", "minutes", "drift", "batches", "counters"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("VACUUM")
