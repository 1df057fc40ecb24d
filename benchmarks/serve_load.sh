#!/usr/bin/env bash
# Requests/s the server sustains on a bundle, with and without telemetry, measured with
# wrk (a real HTTP load tool: apt-get install wrk) over loopback.
#   benchmarks/serve_load.sh dist/digits-host [seconds] [connections]
set -euo pipefail
bundle=${1:?bundle directory}
seconds=${2:-15}
connections=${3:-8}
here=$(cd "$(dirname "$0")" && pwd)
runtime=${EDGEPACK_RUNTIME:-$here/../.venv/bin/edgepack-runtime}
python=$(dirname "$runtime")/python
body=$(mktemp) lua=$(mktemp) db=$(mktemp -d)
trap 'rm -rf "$body" "$lua" "$db"; kill "${pid:-}" 2>/dev/null || true' EXIT
# One golden input of the bundle as the JSON request body.
"$python" - "$bundle" > "$body" <<'PY'
import json, sys, edgepack_runtime
inputs, _ = edgepack_runtime.open_bundle(sys.argv[1]).golden()
print(json.dumps({"inputs": {k: v[0].tolist() for k, v in inputs.items()}}))
PY
cat > "$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$body", "r"); wrk.body = f:read("*a"); f:close()
LUA
for telemetry in 1 0; do
  port=$((18000 + RANDOM % 1000))
  EDGEPACK_TELEMETRY=$telemetry EDGEPACK_TELEMETRY_DB="$db/t.sqlite" \
    "$runtime" serve "$bundle" --port "$port" --max-concurrency 64 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.2; done
  wrk -t1 -c1 -d2s -s "$lua" "http://127.0.0.1:$port/v1/predict" >/dev/null  # warm-up
  echo "== telemetry=$telemetry, $connections connections, ${seconds}s"
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$lua" "http://127.0.0.1:$port/v1/predict" \
    | grep -E "Requests/sec|Non-2xx|50%|90%|99%"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
