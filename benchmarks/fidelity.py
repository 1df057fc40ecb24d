"""int8 fidelity of the real ImageNet MobileNetV2 example, per target (a measurement, not a test).

For each target: `edgepack build` of examples/mobilenet_v2 with the full photo set (32
calibration views of 8 photos, 60 eval views of 5 others), the budget cosine ≥ 0.99 and
top-1 agreement ≥ `--min-agreement` (85 %), and `--allow-partial`, with
`--verify-emulated` where this host does not run the target's integer kernels (aarch64
targets; x86-64/avx2 on a VNNI host), then one markdown row per artifact: its status,
cosine and top-1 agreement with PyTorch, where that was measured, size, build stages.
With `--bench`, the bundles whose kernels this host runs are benchmarked in the same run
(`edgepack-runtime bench --artifact all --threads 1,2`) and each int8 artifact's p50 is
given as a speed-up over the same format's fp32.

    python examples/mobilenet_v2/prepare.py
    python benchmarks/fidelity.py --targets host,x86-64/avx2,raspberry-pi/4b,raspberry-pi/5 --bench -o results/fidelity
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mobilenet_v2"
BIN = Path(sys.executable).parent


def build(target: str, data: Path, out: Path, emulate: bool, min_agreement: float) -> tuple[dict, float]:
    argv = [BIN / "edgepack", "build", f"{EXAMPLE / 'model.py'}:create", "--target", target,
            "--weights", data / "mobilenet_v2-b0353104.pth", "--calibration", data / "calib.npz",
            "--eval", data / "eval.npz", "--min-agreement", str(min_agreement), "--allow-partial", "-o", out]
    if emulate:
        argv.append("--verify-emulated")
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"build for {target} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads((out / "manifest.json").read_text()), seconds


def needs_emulation(target: str) -> bool:
    """Whether this host runs other int8 kernels than the target and qemu can run the target's."""
    from edgepack.targets import load_target
    from edgepack_runtime.hostinfo import host_info

    profile = load_target(target)
    return bool(profile.emulation_cpu) and not all(profile.matches_host(host_info(), f, "int8")
                                                   for f in profile.formats)


def bench(bundle: Path, out: Path) -> dict[tuple[str, int], float]:
    subprocess.run([BIN / "edgepack-runtime", "bench", bundle, "--artifact", "all", "--threads", "1,2",
                    "-o", out], check=True, capture_output=True)
    result = json.loads(out.read_text())
    return {(r["artifact"], r["threads"]): r["latency_ms"]["p50"] for r in result["results"]}


def rows(target: str, manifest: dict, p50: dict) -> list[str]:
    out = []
    for a in manifest["artifacts"]:
        acc = a.get("accuracy") or {}
        cos = f"{acc['cosine']:.4f}" if acc.get("cosine") is not None else "-"
        agree = f"{acc['top1_agreement']:.1f} %" if acc.get("top1_agreement") is not None else "-"
        where = acc.get("measured_on", "-") + (" (indicative)" if acc.get("indicative") else "")
        speed = "-"
        fp32 = f"{a['format']}-fp32"
        if a["precision"] != "fp32" and (a["name"], 1) in p50 and (fp32, 1) in p50:
            speed = " / ".join(f"{p50[(fp32, t)] / p50[(a['name'], t)]:.2f}× @{t}t" for t in (1, 2)
                               if (a["name"], t) in p50 and (fp32, t) in p50)
        size = f"{a['size_bytes'] / 2**20:.1f} MiB" if a.get("size_bytes") else "-"
        chosen = next((t for t in (a.get("quantization") or {}).get("search", []) if t.get("chosen")), None)
        recipe = "-" if not chosen else ", ".join(
            [f"{k}={v}" for k, v in chosen["recipe"].items()
             if k in ("calibrate_method", "percentile", "bias_correction", "range_update")]
            + [f"float {k}={v}" for k, v in chosen.get("keeps_float", {}).items()])
        out.append(f"| {target} | {a['name']} | {a['status']} | {cos} | {agree} | {where} | {size} | {speed} "
                   f"| {recipe} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="host,x86-64/avx2,raspberry-pi/4b,raspberry-pi/5")
    parser.add_argument("--data", type=Path, default=EXAMPLE / "artifacts", help="prepare.py's output folder")
    parser.add_argument("--bench", action="store_true", help="benchmark bundles whose kernels this host runs")
    parser.add_argument("--min-agreement", type=float, default=85.0, help="top-1 agreement budget, percent")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "results" / "fidelity")
    args = parser.parse_args()
    table = ["| target | artifact | status | cosine | top-1 agreement | measured on | size "
             "| int8 speed-up vs fp32 (p50) | recipe |",
             "|---|---|---|---|---|---|---|---|---|"]
    timings = []
    for target in args.targets.split(","):
        out = args.out / target.replace("/", "-")
        manifest, seconds = build(target, args.data, out, needs_emulation(target), args.min_agreement)
        matches = all(a["validation"]["host_matches_target"] for a in manifest["artifacts"] if a["status"] == "ok")
        p50 = bench(out, args.out / f"{target.replace('/', '-')}.bench.json") if args.bench and matches else {}
        table += rows(target, manifest, p50)
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in manifest["build"]["seconds"].items())
        timings.append(f"- {target}: {seconds:.0f} s wall ({stages})")
        print(table[-1], file=sys.stderr, flush=True)
    print("\n".join(table))
    print("\nbuild times:\n" + "\n".join(timings))


if __name__ == "__main__":
    main()
