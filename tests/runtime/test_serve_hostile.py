"""Hostile requests against a real uvicorn server: each gets the right 4xx in bounded memory."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgepack_runtime.bundle import sha256_file
from edgepack_runtime.serve import HEADER_TIMEOUT_S

from .test_serve import CLI, Server, golden


@pytest.fixture(scope="module")
def guarded(digits_bundle, tmp_path_factory):
    srv = Server(digits_bundle, tmp_path_factory.mktemp("hostile"), "--artifact", "onnx-fp32", "--max-concurrency", "2")
    yield srv
    srv.stop()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _raw(port: int, request: bytes, read_timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(request)
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return reply
            reply += chunk
            if b"\r\n\r\n" in reply and reply.rstrip().endswith(b"}"):
                return reply


def test_an_npz_zip_bomb_is_refused_before_it_inflates(guarded):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, image=np.zeros((4096, 4096), np.float32))  # 64 MiB inflated
    body = buffer.getvalue()
    assert len(body) < 200_000
    before = _rss_mb(guarded.proc.pid)
    for _ in range(5):
        status, reply, _ = guarded.request("POST", "/v1/predict", body, {"content-type": "application/x-npz"})
        assert status == 422 and "larger arrays than this model's inputs" in json.loads(reply)["detail"]
    assert _rss_mb(guarded.proc.pid) - before < 50  # the bomb never inflated


@pytest.mark.slow  # waits out the server's timeouts
def test_slow_clients_do_not_hold_the_inference_slots(guarded, digits_bundle):
    """More slow senders than slots: a normal client is still served, the slow ones get 408."""
    replies = []

    def trickle():
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=60) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n")
            try:
                for _ in range(30):
                    s.sendall(b" ")
                    time.sleep(1.0)
            except OSError:
                pass  # the server gave up on us: what we want
            replies.append(s.recv(4096))

    slow = [threading.Thread(target=trickle) for _ in range(6)]
    for t in slow:
        t.start()
    time.sleep(2.0)
    assert guarded.predict(golden(digits_bundle)[0])[0] == 200
    for t in slow:
        t.join(timeout=60)
    assert len(replies) == 6 and all(r.startswith(b"HTTP/1.1 408") for r in replies)


def _dribble_until_closed(s: socket.socket, chunks) -> bool:
    """Send one chunk a second; True as soon as the server closes the connection."""
    for chunk in chunks:
        try:
            s.sendall(chunk)
            s.settimeout(1.0)
            if s.recv(4096) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


@pytest.mark.slow  # waits out the server's timeouts
def test_a_client_trickling_its_headers_is_cut_off(guarded, digits_bundle):
    """nginx's client_header_timeout: headers that never finish do not hold a socket forever."""
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=60) as s:
        start = time.monotonic()
        s.sendall(b"POST /v1/predict HTTP/1.1\r\n")
        # one more header line every second, never the blank line
        closed = _dribble_until_closed(s, (b"X-Slow-%d: 1\r\n" % i for i in range(40)))
        waited = time.monotonic() - start
    assert closed and waited >= HEADER_TIMEOUT_S * 0.9, waited  # closed by the deadline, not before
    assert guarded.predict(golden(digits_bundle)[0])[0] == 200


@pytest.mark.slow  # waits out the server's timeouts
def test_the_rest_of_a_refused_body_cannot_hold_the_connection(guarded):
    """A 415 goes out before the body is read; dribbling that body afterwards must not keep
    the socket open past the header deadline."""
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=60) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 1000\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 415")
        assert _dribble_until_closed(s, (b"x" for _ in range(40)))


def test_an_oversized_chunked_body_gets_413(guarded):
    chunk = b"0" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40)) + b"0\r\n\r\n"
    reply = _raw(guarded.port, b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


@pytest.mark.parametrize("path", ["/v1/model", "/v1/predict", "/metrics"])
def test_a_foreign_host_name_is_refused_on_a_tokenless_server(guarded, path):
    status, body, _ = guarded.request("POST" if path == "/v1/predict" else "GET", path,
                                      b"{}" if "predict" in path else None,
                                      {"host": "attacker.example", "content-type": "application/json"})
    assert status == 421 and "localhost only" in json.loads(body)["detail"]
    assert guarded.request("GET", "/v1/model", headers={"host": "localhost:8080"})[0] == 200


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_bodies_a_web_page_can_send_without_preflight_are_refused(guarded, digits_bundle, kind):
    body = json.dumps({"inputs": {"image": golden(digits_bundle)[0].tolist()}}).encode()
    status, reply, _ = guarded.request("POST", "/v1/predict", body, {"content-type": kind})
    assert status == 415 and "application/json" in json.loads(reply)["detail"]


@pytest.mark.parametrize("body", [b'{"inputs": {"image": ' + b"[" * 3000 + b"]" * 3000 + b"}}",
                                  b'{"inputs": {"image": [[[[' + b"9" * 400 + b"]]]]}}",
                                  b'{"inputs": {"image": [[[[NaN, 1, 2, 3, 4, 5, 6, 7]]]]}}'])
def test_absurd_json_is_a_422_not_a_500(guarded, body):
    status, reply, _ = guarded.request("POST", "/v1/predict", body, {"content-type": "application/json"})
    assert status == 422, reply


def test_metrics_labels_are_routes_bounded_and_unforgeable(guarded):
    forged = "/x%22%7D%201%0Aedgepack_forged_total%7Bevil%3D%22"  # "} 1\nedgepack_forged_total{evil="
    for i in range(300):
        guarded.get(f"/nope-{i}")
    guarded.get(forged)
    status, body, _ = guarded.get("/metrics")
    text = body.decode()
    assert status == 200 and "edgepack_forged_total" not in text and "nope-" not in text
    paths = {line.split('path="')[1].split('"')[0] for line in text.splitlines() if 'path="' in line}
    assert paths <= {"/v1/predict", "/v1/model", "/healthz", "/metrics", "/openapi.json", "/docs", "other"}


def _broken_bundle(bundle: Path) -> Path:
    """The bundle with onnx-fp32 replaced by a graph that loads but cannot run (a Reshape to
    an impossible shape), its hash updated: what a damaged or miscompiled file looks like."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["output"])], "broken",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [3, 7])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(bundle / "model.fp32.onnx"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["name"] == "onnx-fp32":
            art["sha256"] = sha256_file(bundle / "model.fp32.onnx")
            art["size_bytes"] = (bundle / "model.fp32.onnx").stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_a_backend_failure_is_one_line_in_run_verify_and_serve(bundle_copy, tmp_path):
    broken = _broken_bundle(bundle_copy)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    env = {"EDGEPACK_TELEMETRY": "0", "PATH": "/usr/bin:/bin"}
    for argv in (["run", broken, "--artifact", "onnx-fp32", "--input", f"image={tmp_path / 'x.npy'}"],
                 ["serve", broken, "--artifact", "onnx-fp32", "--port", "1"]):
        proc = subprocess.run([CLI, *map(str, argv)], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "onnxruntime" in proc.stderr and "failed running onnx-fp32" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
