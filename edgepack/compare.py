"""Put benchmark results from many devices side by side (`edgepack compare`).

Reads the JSON that `edgepack-runtime bench -o` writes (docs/bench-format.md). Results
for different bundles or schema versions are refused, never mixed: an artifact name
only means the same model inside one bundle.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from edgepack_runtime.bench import BENCH_SCHEMA_VERSION
from edgepack_runtime.dims import size_label
from edgepack_runtime.files import atomic_write
from edgepack_runtime.manifest import TaskMetric
from edgepack_runtime.versions import newer_major, parse_version

from .errors import CompareError, EdgepackError

__all__ = ["CompareError", "Row", "load_result", "compare_rows", "regressions", "write_csv", "write_json",
           "write_plot", "write_html"]


@dataclass(frozen=True)
class Row:
    device: str
    artifact: str
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput_per_s: float
    backend: str
    top1: Optional[float]
    top1_indicative: Optional[bool]
    cosine: Optional[float] = None  # of the outputs vs PyTorch's, from the bundle (schema 2)
    fidelity: Optional[str] = None  # the task's headline figure vs PyTorch (bench 1.3), e.g. "detection F1 0.962"
    baseline_p50_ms: Optional[float] = None

    @property
    def speedup(self) -> Optional[float]:
        """Baseline p50 / this p50: above 1 is faster than the baseline."""
        return self.baseline_p50_ms / self.p50_ms if self.baseline_p50_ms else None

    @property
    def change_pct(self) -> Optional[float]:
        return (self.p50_ms / self.baseline_p50_ms - 1) * 100 if self.baseline_p50_ms else None


def load_result(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CompareError(f"cannot read {path} ({exc}); pass JSON written by `edgepack-runtime bench -o`") from exc
    if not isinstance(doc, dict) or not {"schema_version", "device", "bundle", "results"} <= set(doc):
        raise CompareError(f"{path} is not a benchmark result; pass JSON written by `edgepack-runtime bench -o`")
    version = parse_version(doc["schema_version"])
    if version is None or newer_major(version, BENCH_SCHEMA_VERSION):
        raise CompareError(
            f"{path} has bench schema_version {doc['schema_version']}, this edgepack reads "
            f"{BENCH_SCHEMA_VERSION.split('.')[0]}.x; upgrade edgepack or re-run the benchmark with a matching "
            "edgepack-runtime"
        )
    return doc  # a newer minor only adds keys, which the rows ignore


def _check_same_bundle(docs: Sequence[tuple[Path, dict]]) -> None:
    bundles: dict[str, list[str]] = {}
    for path, doc in docs:
        bundles.setdefault(doc["bundle"]["sha256"], []).append(f"{path} ({doc['bundle']['name']})")
    if len(bundles) > 1:
        groups = "; ".join(f"{sha[:12]}: {', '.join(files)}" for sha, files in bundles.items())
        raise CompareError(f"results are for different bundles ({groups}); compare results of one bundle at a time")


def _rows(doc: dict) -> list[Row]:
    device = doc["device"]["name"]
    out = []
    for r in doc["results"]:
        acc = r.get("accuracy") or {}
        lat = r["latency_ms"]
        # Results at several sizes of a dynamic dim (bench --size) are rows of their own.
        at = f" {size_label(r['sizes'])}" if r.get("sizes") else ""
        out.append(Row(device=device, artifact=r["artifact"] + at, threads=r["threads"], p50_ms=lat["p50"],
                       p90_ms=lat["p90"], p99_ms=lat["p99"], throughput_per_s=r["throughput_per_s"],
                       backend=f"{r['backend']} {r['backend_version']}", top1=acc.get("top1"),
                       top1_indicative=acc.get("indicative"), cosine=acc.get("cosine"),
                       fidelity=_fidelity(acc.get("metric"))))
    return out


def _fidelity(metric: Optional[dict]) -> Optional[str]:
    try:
        return TaskMetric(**metric).describe(interval=False) if metric else None
    except TypeError:  # a newer bench's figure with keys this edgepack does not know
        return None


def compare_rows(paths: Sequence[Path], baseline: Optional[Path] = None) -> list[Row]:
    """Rows of every result file (one bundle), each matched to the baseline if given:
    by device, artifact and threads, or by artifact and threads when the baseline holds
    one device (e.g. a Pi 4 baseline for a Pi 5 run)."""
    if not paths:
        raise CompareError("no result files given; pass one or more JSON files from `edgepack-runtime bench -o`")
    docs = [(Path(p), load_result(p)) for p in paths]
    _check_same_bundle(docs)
    rows = [row for _, doc in docs for row in _rows(doc)]
    if baseline is None:
        return rows
    base_rows = _rows(load_result(baseline))
    exact = {(r.device, r.artifact, r.threads): r.p50_ms for r in base_rows}
    single_device = len({r.device for r in base_rows}) == 1
    loose = {(r.artifact, r.threads): r.p50_ms for r in base_rows} if single_device else {}
    return [
        Row(**{**asdict(r), "baseline_p50_ms": exact.get((r.device, r.artifact, r.threads),
                                                         loose.get((r.artifact, r.threads)))})
        for r in rows
    ]


def regressions(rows: Sequence[Row], max_slower_pct: float) -> list[str]:
    """One line per row whose p50 is more than `max_slower_pct` % above its baseline."""
    return [
        f"{r.device} {r.artifact}×{r.threads}: p50 {r.p50_ms:.3f} ms vs {r.baseline_p50_ms:.3f} ms "
        f"(+{r.change_pct:.1f}%)"
        for r in rows if r.change_pct is not None and r.change_pct > max_slower_pct
    ]


COLUMNS = ("device", "artifact", "threads", "p50 ms", "p90 ms", "p99 ms", "inf/s", "speed-up", "top-1 %",
           "vs PyTorch", "backend")


def table_cells(r: Row) -> list[str]:
    top1 = "-" if r.top1 is None else f"{r.top1:.2f}" + (" (indicative)" if r.top1_indicative else "")
    speedup = "-" if r.speedup is None else f"{r.speedup:.2f}x"
    figure = r.fidelity or (None if r.cosine is None else f"cos {r.cosine:.4f}")
    cosine = "-" if figure is None else figure + (" (indicative)" if r.top1_indicative else "")
    return [r.device, r.artifact, str(r.threads), f"{r.p50_ms:.3f}", f"{r.p90_ms:.3f}", f"{r.p99_ms:.3f}",
            f"{r.throughput_per_s:.0f}", speedup, top1, cosine, r.backend]


def _records(rows: Sequence[Row]) -> list[dict]:
    return [{**asdict(r), "speedup": r.speedup, "change_pct": r.change_pct} for r in rows]


def write_csv(rows: Sequence[Row], path: Path) -> None:
    records = _records(rows)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    atomic_write(Path(path), text.getvalue())


def write_json(rows: Sequence[Row], path: Path) -> None:
    atomic_write(Path(path), json.dumps(_records(rows), indent=2) + "\n")


def _plot_png(rows: Sequence[Row]) -> bytes:
    """Grouped bars: p50 per device for each artifact × threads, whiskers up to p90."""
    try:
        import matplotlib
    except ImportError:
        raise EdgepackError("compare --plot/--html draw with matplotlib, which is not installed; "
                            "pip install 'edgepack[report]'") from None

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(dict.fromkeys(f"{r.artifact}×{r.threads}" for r in rows))
    devices = list(dict.fromkeys(r.device for r in rows))
    width = 0.8 / len(devices)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups) * max(1, len(devices) / 2)), 4.5))
    for i, device in enumerate(devices):
        by_group = {f"{r.artifact}×{r.threads}": r for r in rows if r.device == device}
        x = np.arange(len(groups)) + (i - (len(devices) - 1) / 2) * width
        p50 = [by_group[g].p50_ms if g in by_group else np.nan for g in groups]
        upper = [by_group[g].p90_ms - by_group[g].p50_ms if g in by_group else 0 for g in groups]
        ax.bar(x, p50, width, yerr=[np.zeros(len(groups)), upper], capsize=3, label=device)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=30, ha="right")
    ax.set_ylabel("latency p50 (ms), whisker: p90")
    ax.set_title("edgepack compare")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_plot(rows: Sequence[Row], path: Path) -> None:
    atomic_write(Path(path), _plot_png(rows))


def write_html(rows: Sequence[Row], path: Path, title: str) -> None:
    """One self-contained page: the table and the plot (embedded as a data: URI)."""
    image = base64.b64encode(_plot_png(rows)).decode()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in table_cells(r)) + "</tr>" for r in rows)
    atomic_write(Path(path), f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p><img alt="p50 latency per device and artifact, whiskers to p90" src="data:image/png;base64,{image}"></p>
</body></html>
""")
