"""A server following a bundle store's `current` link, switched while clients keep sending
(not a test: a measurement; tests/runtime/test_store.py checks the 0 failures).

Installs two versions of BUNDLE (the second a copy with a new manifest `created`) into a
fresh store, serves STORE/NAME/current on a loopback port with real uvicorn, runs CLIENTS
threads posting the bundle's golden inputs for the whole run, and meanwhile: installs
version 2 (the server switches), tries a damaged version 3 (refused by verification: no
switch), rolls back to version 1 (switches again). Reports requests sent, failed, and
latency p50/p99 overall and during the switch window (from the install of version 2 to
the server answering from version 1 again).

    python benchmarks/switch_under_load.py dist/mnv2-host --clients 4 --seconds 10 \
        --image examples/mobilenet_v2/artifacts/photos/grace_hopper.jpg
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

import edgepack_runtime
from edgepack_runtime.store import install, rollback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_version(bundle: Path, where: Path, created: str, damage: bool = False) -> Path:
    copy = Path(shutil.copytree(bundle, where))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["created"] = created
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if damage:  # a file truncated in transit
        art = next(a for a in manifest["artifacts"] if a["status"] == "ok")
        path = copy / art["path"]
        path.write_bytes(path.read_bytes()[:-64])
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="Load before and after the switches.")
    parser.add_argument("--image", type=Path, help="Post this JPEG (a bundle with image preprocessing) instead of "
                                                    "the golden tensors as JSON.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgepack-switch-"))
    store = work / "store"
    v1 = install(new_version(args.bundle, work / "v1", "2026-01-01T00:00:00+00:00"), store)
    v2_path = new_version(args.bundle, work / "v2", "2026-01-01T00:00:01+00:00")
    broken = new_version(args.bundle, work / "v3", "2026-01-01T00:00:02+00:00", damage=True)
    name = v1.name
    port = free_port()
    server = subprocess.Popen([Path(sys.executable).parent / "edgepack-runtime", "serve", store / name / "current",
                               "--port", str(port), "--max-concurrency", "64"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={"EDGEPACK_TELEMETRY": "0", **__import__("os").environ})
    if args.image:
        body, kind = args.image.read_bytes(), "image/jpeg"
    else:
        inputs = edgepack_runtime.open_bundle(args.bundle).golden()[0]
        body, kind = json.dumps({"inputs": {k: v[0].tolist() for k, v in inputs.items()}}).encode(), "application/json"

    def call(path: str, data: bytes | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers={"content-type": kind})
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError as err:
            return 0, str(err).encode()

    deadline = time.time() + 120
    while call("/healthz")[0] != 200:
        if time.time() > deadline or server.poll() is not None:
            raise SystemExit(f"server did not start: {server.stdout.read()}")
        time.sleep(0.2)
    records: list[tuple[float, float, int]] = []  # start, seconds, status
    stop = threading.Event()

    def client():
        while not stop.is_set():
            start = time.perf_counter()
            status, _ = call("/v1/predict", body)
            records.append((start, time.perf_counter() - start, status))

    def serving() -> str:
        return json.loads(call("/v1/model")[1])["bundle_sha256"][:12]

    def wait_for(version: str) -> None:
        while serving() != version:
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    time.sleep(args.seconds / 2)
    switch_start = time.perf_counter()
    v2 = install(v2_path, store)
    wait_for(v2.version)
    refused = install(broken, store)
    time.sleep(2)  # the server keeps v2: nothing to switch to
    still = serving()
    rollback(store, name)
    wait_for(v1.version)
    switch_end = time.perf_counter()
    time.sleep(args.seconds / 2)
    stop.set()
    for t in threads:
        t.join()
    server.send_signal(signal.SIGTERM)
    log = server.communicate(timeout=30)[0]
    shutil.rmtree(work, ignore_errors=True)

    def summary(rows) -> str:
        ms = np.array([r[1] for r in rows]) * 1e3
        failed = sum(r[2] != 200 for r in rows)
        return (f"{len(rows)} requests, {failed} failed, p50 {np.percentile(ms, 50):.2f} ms, "
                f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms")

    during = [r for r in records if switch_start <= r[0] <= switch_end]
    outside = [r for r in records if not switch_start <= r[0] <= switch_end]
    print(f"bundle {name}: v1 {v1.version}, v2 {v2.version}, v3 {refused.version} refused: {refused.reason}")
    print(f"served during the refused v3: {still} (v2 expected)")
    print(f"switch window {switch_end - switch_start:.2f} s (install v2 + verify, switch, refuse v3, rollback, switch)")
    print(f"all:                {summary(records)}")
    print(f"during the switches: {summary(during)}")
    print(f"outside them:        {summary(outside)}")
    print("server log:", " | ".join(line for line in log.splitlines() if "serving" in line))


if __name__ == "__main__":
    main()
