"""Local telemetry: one record per inference, in SQLite (WAL), batched, bounded, crash-safe.

What is stored, where, how much and how long: docs/telemetry.md. The rules that matter:
- `record()` only appends to a list: an inference never waits on or fails for telemetry.
- A background thread commits the list as one transaction (a *batch*) every
  `flush_seconds` or `batch_records` records, whichever comes first: few fsyncs for the
  SD card, and a crash or power cut loses at most the records not yet committed.
- The database never grows past `max_bytes` (SQLite's max_page_count enforces it); when
  full, the oldest data goes first; if a batch still does not fit it is dropped and counted.
- Any database failure degrades telemetry, never inference: a corrupt or foreign file is
  moved aside (`*.corrupt-<time>`, as systemd-journald does) and a new one started; a
  database that cannot be opened at all (read-only card, a directory in the way, disk
  full) turns telemetry off with one warning, and every record is counted as dropped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from .errors import EdgepackError
from .files import user_dir

# (time, bundle, artifact, latency ms or None, outcome); (time, bundle, input, PSI)
Record = tuple[float, str, str, Optional[float], str]
DriftRecord = tuple[float, str, str, float]

__all__ = ["TelemetryWriter", "shared_writer", "default_path", "enabled_by_env", "HISTOGRAM_EDGES_MS",
           "histogram_index", "ENV_DISABLE", "ENV_PATH"]

ENV_DISABLE = "EDGEPACK_TELEMETRY"  # "0", "off" or "false" turns telemetry off everywhere
ENV_PATH = "EDGEPACK_TELEMETRY_DB"
DEFAULT_BATCH_RECORDS = 256
DEFAULT_FLUSH_SECONDS = 5.0
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
RAW_WINDOW_ROWS = 10_000  # raw per-inference rows kept; older ones live on as per-minute aggregates
PRUNE_FRACTION = 0.2  # at the cap, drop this share of the oldest aggregates (and raw rows) at a time
BUSY_TIMEOUT_MS = 5000
log = logging.getLogger("edgepack_runtime.telemetry")
# SQLite's verdicts on the file itself (not a database, corrupt, another program's schema),
# as opposed to its circumstances (locked, read-only, full), which leave the file alone.
UNUSABLE_FILE = ("SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_ERROR")
# Latency histogram: 4 buckets per octave from 10 µs (≤ 9 % error on interpolated percentiles).
HISTOGRAM_EDGES_MS = tuple(0.01 * 2 ** (i / 4) for i in range(96))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, committed REAL NOT NULL, records INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, ts REAL NOT NULL, bundle TEXT NOT NULL,
    artifact TEXT NOT NULL, latency_ms REAL, outcome TEXT NOT NULL, batch INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS minutes (minute INTEGER NOT NULL, bundle TEXT NOT NULL, artifact TEXT NOT NULL,
    outcome TEXT NOT NULL, count INTEGER NOT NULL, latency_sum_ms REAL NOT NULL, histogram TEXT NOT NULL,
    PRIMARY KEY (minute, bundle, artifact, outcome));
CREATE TABLE IF NOT EXISTS drift (ts REAL NOT NULL, bundle TEXT NOT NULL, input TEXT NOT NULL, psi REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def enabled_by_env() -> bool:
    return os.environ.get(ENV_DISABLE, "1").strip().lower() not in ("0", "off", "false", "no")


def default_path() -> Path:
    """$EDGEPACK_TELEMETRY_DB, else $XDG_DATA_HOME/edgepack-runtime/telemetry.sqlite."""
    if os.environ.get(ENV_PATH):
        return Path(os.environ[ENV_PATH])
    return user_dir("data", "edgepack-runtime") / "telemetry.sqlite"


def histogram_index(latency_ms: float) -> int:
    """Bucket i holds latencies in (edge[i-1], edge[i]]; the last bucket is everything above."""
    if latency_ms <= HISTOGRAM_EDGES_MS[0]:
        return 0
    return min(len(HISTOGRAM_EDGES_MS), math.ceil(4 * math.log2(latency_ms / HISTOGRAM_EDGES_MS[0])))


def connect(path: Path, max_bytes: Optional[int] = None, durability: str = "full") -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    try:
        _prepare(conn, max_bytes, durability)
    except BaseException:
        conn.close()  # folds any WAL back into the file and lets go of it
        raise
    return conn


def _prepare(conn: sqlite3.Connection, max_bytes: Optional[int], durability: str) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file: frees pages at the cap
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a committed batch survives a power cut. NORMAL: fewer fsyncs (SD wear), a power
    # cut may also lose the last committed batches; a process crash loses nothing committed.
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    conn.executescript(_SCHEMA)
    if max_bytes:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(16, max_bytes // page_size)}")


def _is_full(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return ("full" in text or "no space" in text
            or getattr(exc, "sqlite_errorname", "") in ("SQLITE_FULL", "SQLITE_IOERR"))


class TelemetryWriter:
    """Buffers inference records and commits them in batches from a background thread."""

    def __init__(self, path: Optional[Path] = None, *, batch_records: int = DEFAULT_BATCH_RECORDS,
                 flush_seconds: float = DEFAULT_FLUSH_SECONDS, max_bytes: int = DEFAULT_MAX_BYTES,
                 durability: str = "full", on_commit: Optional[Callable[[int, int], None]] = None) -> None:
        self.path = Path(path) if path else default_path()
        self.batch_records, self.flush_seconds = batch_records, flush_seconds
        self.on_commit = on_commit
        self.dropped = 0  # records lost and not yet counted in the database's `counters`
        self.dropped_total = 0  # records lost by this process (for /metrics)
        self.disabled: Optional[str] = None  # why telemetry is off (the database cannot be used)
        self._conn = self._open(max_bytes, durability)
        self._pending: list[Record] = []
        self._drift: list[DriftRecord] = []
        self._lock = threading.Lock()  # guards _pending/_drift
        self._db_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgepack-telemetry", daemon=True)
        self._thread.start()

    def _open(self, max_bytes: Optional[int], durability: str) -> Optional[sqlite3.Connection]:
        """The database connection, or None (telemetry off, one warning) when it cannot be had."""
        try:
            return connect(self.path, max_bytes, durability)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", "") not in UNUSABLE_FILE or not self.path.is_file():
                self._disable(exc)
                return None  # locked, read-only, I/O, full: the file may be fine, leave it
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            try:
                for suffix in ("-wal", "-shm", ""):  # journal files travel with their database
                    if Path(f"{self.path}{suffix}").exists():
                        os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
                conn = connect(self.path, max_bytes, durability)
            except (OSError, sqlite3.Error) as again:
                self._disable(again)
                return None
            log.warning("telemetry database %s was unusable (%s); kept it as %s and started a new one",
                        self.path, exc, aside.name)
            return conn
        except OSError as exc:
            self._disable(exc)
            return None

    def _disable(self, exc: Exception) -> None:
        self.disabled = f"{type(exc).__name__}: {exc}"
        log.warning("telemetry is off: cannot use %s (%s); inference goes on, records are counted as dropped",
                    self.path, self.disabled)
        return None

    def record(self, bundle: str, artifact: str, latency_ms: Optional[float], outcome: str) -> None:
        """Queue one inference record (outcome: "ok" or the error class name). Never raises."""
        if self._conn is None:
            self.dropped_total += 1
            return
        with self._lock:
            self._pending.append((time.time(), bundle, artifact, latency_ms, outcome))
            full = len(self._pending) >= self.batch_records
        if full:
            self._wake.set()

    def record_drift(self, bundle: str, scores: dict[str, Optional[float]]) -> None:
        if self._conn is None:
            return
        now = time.time()
        with self._lock:
            self._drift += [(now, bundle, name, score) for name, score in scores.items() if score is not None]

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> Optional[int]:
        """Commit everything queued as one batch; returns its id (None if nothing was queued
        or the batch was dropped)."""
        with self._db_lock:
            with self._lock:
                records, drift = self._pending, self._drift
                self._pending, self._drift = [], []
            if not records and not drift:
                return None
            for attempt in range(2):
                try:
                    batch = self._commit(records, drift)
                    break
                except (sqlite3.Error, OSError) as exc:  # full, read-only, I/O error: drop, count, go on
                    if attempt == 0 and isinstance(exc, sqlite3.Error) and _is_full(exc):
                        self._prune()  # make room: the oldest data goes first
                        continue
                    self.dropped += len(records)
                    self.dropped_total += len(records)
                    return None
            self._trim_raw()
        if self.on_commit is not None:
            self.on_commit(batch, len(records))
        return batch

    def _commit(self, records: list[Record], drift: list[DriftRecord]) -> int:
        conn = self._conn
        if conn is None:  # record() queues nothing without a connection
            raise sqlite3.OperationalError("the telemetry database is not open")
        conn.execute("BEGIN IMMEDIATE")
        try:
            batch = conn.execute("INSERT INTO batches (committed, records) VALUES (?, ?)",
                                 (time.time(), len(records))).lastrowid
            if batch is None:  # an INSERT always sets it
                raise sqlite3.OperationalError("the batch was not inserted")
            conn.executemany("INSERT INTO events (ts, bundle, artifact, latency_ms, outcome, batch) "
                             "VALUES (?, ?, ?, ?, ?, ?)", [r + (batch,) for r in records])
            for key, (count, total, histogram) in _aggregate(records).items():
                row = conn.execute("SELECT count, latency_sum_ms, histogram FROM minutes WHERE minute = ? AND "
                                   "bundle = ? AND artifact = ? AND outcome = ?", key).fetchone()
                if row:
                    count += row[0]
                    total += row[1]
                    histogram = [a + b for a, b in zip(histogram, json.loads(row[2]))]
                conn.execute("INSERT OR REPLACE INTO minutes VALUES (?, ?, ?, ?, ?, ?, ?)",
                             key + (count, total, json.dumps(histogram)))
            conn.executemany("INSERT INTO drift VALUES (?, ?, ?, ?)", drift)
            if self.dropped:
                conn.execute("INSERT INTO counters VALUES ('dropped', ?) ON CONFLICT(name) DO UPDATE "
                             "SET value = value + excluded.value", (self.dropped,))
            conn.execute("COMMIT")
            self.dropped = 0  # now persisted
            return batch
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back (e.g. on SQLITE_FULL)
                conn.execute("ROLLBACK")
            raise

    def _trim_raw(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (RAW_WINDOW_ROWS,))
        except sqlite3.Error:
            pass  # retention is best effort; the cap is still enforced by max_page_count

    def _prune(self) -> None:
        """Delete the oldest share of aggregates, raw rows and drift scores, and free the pages."""
        conn = self._conn
        if conn is None:
            return
        try:
            for table, order in (("minutes", "minute"), ("events", "id"), ("drift", "ts"), ("batches", "id")):
                conn.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY {order} "
                             f"LIMIT (SELECT CAST(COUNT(*) * ? AS INTEGER) + 1 FROM {table}))", (PRUNE_FRACTION,))
            conn.execute("PRAGMA incremental_vacuum")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        """Stop the thread and commit what is queued."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.flush()
        if self._conn is not None:
            self._conn.close()


def _aggregate(records: Iterable[Record]) -> dict[tuple[int, str, str, str], tuple[int, float, list[int]]]:
    """(minute, bundle, artifact, outcome) -> (count, latency sum, histogram)."""
    out: dict[tuple[int, str, str, str], tuple[int, float, list[int]]] = {}
    for ts, bundle, artifact, latency, outcome in records:
        key = (int(ts // 60), bundle, artifact, outcome)
        count, total, histogram = out.get(key) or (0, 0.0, [0] * (len(HISTOGRAM_EDGES_MS) + 1))
        if latency is not None:
            histogram[histogram_index(latency)] += 1
            total += latency
        out[key] = (count + 1, total, histogram)
    return out


_shared: dict[Path, TelemetryWriter] = {}
_shared_lock = threading.Lock()


# Settings for the CLI and server, where there is no Python call to pass them to.
SETTINGS_ENV = {"EDGEPACK_TELEMETRY_MAX_BYTES": ("max_bytes", int),
                "EDGEPACK_TELEMETRY_FLUSH_SECONDS": ("flush_seconds", float),
                "EDGEPACK_TELEMETRY_BATCH_RECORDS": ("batch_records", int),
                "EDGEPACK_TELEMETRY_DURABILITY": ("durability", str)}


def settings_from_env() -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name, (key, kind) in SETTINGS_ENV.items():
        if os.environ.get(name):
            try:
                settings[key] = kind(os.environ[name])
            except ValueError:
                raise EdgepackError(f"{name}={os.environ[name]!r} is not a valid {kind.__name__}; "
                                    "fix or unset it") from None
    return settings


def shared_writer(path: Optional[Path] = None) -> TelemetryWriter:
    """One writer per database per process (models share it); flushed at interpreter exit.
    Sizes and durability come from the EDGEPACK_TELEMETRY_* variables (docs/telemetry.md)."""
    import atexit

    key = Path(path) if path else default_path()
    with _shared_lock:
        if key not in _shared:
            _shared[key] = TelemetryWriter(key, **settings_from_env())
            atexit.register(_shared[key].close)
        return _shared[key]
