"""The inference server, through a real uvicorn process on a loopback port."""

import concurrent.futures
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import edgepack_runtime

from ..conftest import free_port

CLI = Path(sys.executable).parent / "edgepack-runtime"


class Server:
    def __init__(self, bundle, tmp_path, *args):
        self.port = free_port()
        self.db = tmp_path / f"telemetry-{self.port}.sqlite"
        env = {**os.environ, "EDGEPACK_TELEMETRY_DB": str(self.db)}
        env.pop("EDGEPACK_TELEMETRY", None)
        self.proc = subprocess.Popen([CLI, "serve", bundle, "--port", str(self.port), *map(str, args)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {self.proc.stderr.read()}")

    def request(self, method, path, body=None, headers=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read(), dict(err.headers)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def predict(self, x, headers=None):
        body = json.dumps({"inputs": {"image": x.tolist()}}).encode()
        return self.request("POST", "/v1/predict", body, {"content-type": "application/json", **(headers or {})})

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: uvicorn runs the shutdown (telemetry flush)
            self.proc.wait(timeout=30)


@pytest.fixture
def server(digits_bundle, tmp_path):
    srv = Server(digits_bundle, tmp_path, "--artifact", "onnx-fp32", "--max-concurrency", "64")
    yield srv
    srv.stop()


def golden(bundle):
    return edgepack_runtime.open_bundle(bundle).golden()[0]["image"]


def test_predict_json_and_npz(server, digits_bundle):
    x = golden(digits_bundle)[0]
    expected = edgepack_runtime.load(digits_bundle, artifact="onnx-fp32").run({"image": x})["output"]
    status, body, _ = server.predict(x)
    assert status == 200
    reply = json.loads(body)
    assert reply["artifact"] == "onnx-fp32"
    np.testing.assert_allclose(np.array(reply["outputs"]["output"], np.float32), expected, rtol=1e-6)
    buffer = io.BytesIO()
    np.savez(buffer, image=x)
    status, body, headers = server.request("POST", "/v1/predict", buffer.getvalue(),
                                           {"content-type": "application/x-npz", "accept": "application/x-npz"})
    assert status == 200 and headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(body)) as out:
        np.testing.assert_array_equal(out["output"], expected)
    status, body, _ = server.get("/v1/model")
    model = json.loads(body)
    assert model["artifact"] == "onnx-fp32" and model["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert model["backend"] == "onnxruntime" and model["threads"] >= 1
    spec = json.loads(server.get("/openapi.json")[1])
    content = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-npz"} <= set(content)


def test_wrong_inputs_get_422_with_the_runtime_message(server):
    status, body, _ = server.predict(np.zeros((1, 8, 8), np.float32))
    assert status == 422
    assert "input 'image' has shape [1, 8, 8], expected [1, 1, 8, 8]" in json.loads(body)["detail"]
    status, body, _ = server.request("POST", "/v1/predict", b'{"inputs": 3}', {"content-type": "application/json"})
    assert status == 422
    status, body, _ = server.request("POST", "/v1/predict", b"PK-not-npz", {"content-type": "application/x-npz"})
    assert status == 422 and "npz" in json.loads(body)["detail"]


def test_oversized_body_gets_413_before_it_is_read(server):
    # 4 MiB announced, 16 KiB sent: the answer comes without the server reading the rest.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 4194304\r\n\r\n" + b"0" * 16384)
        reply = b""
        while b"}" not in reply:  # headers and the JSON body may arrive in separate packets
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"larger than this model's inputs need" in reply
    # A body just over the limit, sent whole, is refused too; one within it is read.
    status, body, _ = server.request("POST", "/v1/predict", b" " * 70_000, {"content-type": "application/json"})
    assert status == 413


def test_token_is_required_when_configured(digits_bundle, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token-for-tests\n")
    srv = Server(digits_bundle, tmp_path, "--token-file", token)
    try:
        x = golden(digits_bundle)[0]
        assert srv.predict(x)[0] == 401
        assert srv.predict(x, {"authorization": "Bearer wrong"})[0] == 401
        assert srv.get("/metrics")[0] == 401
        assert srv.predict(x, {"authorization": "Bearer s3cret-token-for-tests"})[0] == 200
        assert srv.get("/healthz")[0] == 200  # liveness probes carry no secrets
    finally:
        srv.stop()


def test_non_loopback_bind_without_token_is_refused(digits_bundle):
    proc = subprocess.run([CLI, "serve", digits_bundle, "--host", "0.0.0.0"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "refusing to serve on 0.0.0.0 without a token" in proc.stderr  # usage
    assert "Traceback" not in proc.stderr


def test_saturation_gets_503_not_a_queue(digits_bundle, tmp_path):
    srv = Server(digits_bundle, tmp_path, "--max-concurrency", "1")
    try:
        x = golden(digits_bundle)[0]
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(lambda _: srv.predict(x)[0], range(256)))
        assert set(statuses) <= {200, 503}
        assert statuses.count(503) > 0 and statuses.count(200) > 0
    finally:
        srv.stop()


def test_metrics_and_a_burst_loses_no_telemetry(server, digits_bundle):
    images = golden(digits_bundle)
    n = 300
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: server.predict(images[i % len(images)])[0], range(n)))
    assert statuses == [200] * n
    status, body, _ = server.get("/metrics")
    text = body.decode()
    assert status == 200
    assert f'edgepack_requests_total{{path="/v1/predict",status="200"}} {n}' in text
    assert f"edgepack_predict_latency_seconds_count {n}" in text
    assert 'edgepack_predict_latency_seconds_bucket{le="+Inf"} ' + str(n) in text
    assert 'edgepack_input_drift_psi{input="image"}' in text
    assert "edgepack_telemetry_dropped_total 0" in text
    server.stop()  # SIGTERM: the server commits queued telemetry on shutdown
    conn = sqlite3.connect(server.db)
    assert conn.execute("SELECT COUNT(*) FROM events WHERE outcome = 'ok'").fetchone()[0] == n
    assert conn.execute("SELECT SUM(count) FROM minutes").fetchone()[0] == n


@pytest.fixture(scope="module")
def mobilenet_bundle(tmp_path_factory):
    """MobileNetV2 (random weights), ONNX fp32 only: an inference of several ms on any CPU."""
    import edgepack

    from ..conftest import ROOT

    out = tmp_path_factory.mktemp("mnv2") / "mnv2"
    return edgepack.build(f"{ROOT / 'examples' / 'mobilenet_v2' / 'model.py'}:create", out, "host",
                          formats=["onnx"], precisions=["fp32"]).path


@pytest.mark.slow
def test_an_inference_over_the_time_limit_gets_504_and_frees_its_slot(mobilenet_bundle, tmp_path):
    # 1 ms is far below one MobileNetV2 inference (~10 ms here, more on slower CPUs).
    srv = Server(mobilenet_bundle, tmp_path, "--timeout", "0.001", "--max-concurrency", "1", "--threads", "1")
    try:
        x = np.zeros((1, 3, 224, 224), np.float32)
        status, body, _ = srv.predict(x)
        assert status == 504 and "longer than 0.001 s" in json.loads(body)["detail"]
        time.sleep(1.0)  # the abandoned inference finishes and releases its slot
        status, _, _ = srv.predict(x)
        assert status == 504  # not 503: the one slot was given back
        assert srv.get("/healthz")[0] == 200
    finally:
        srv.stop()
