"""Mutated model files (ONNX and TFLite, hashes updated as an attacker would): each loads
and runs or fails with one typed error; nothing crashes the process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

CASES_PER_FORMAT = 500

# Runs in a child process: a segfault in a backend is a failed test naming the case, not a dead suite.
FUZZ = textwrap.dedent("""
    import json, shutil, sys
    from pathlib import Path
    import numpy as np
    import edgepack_runtime
    from edgepack_runtime.bundle import sha256_file
    from edgepack_runtime.errors import EdgepackError

    source, work, artifact, cases = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    manifest = json.loads((source / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["name"] == artifact)
    original = (source / art["path"]).read_bytes()
    rng = np.random.default_rng(20261129)
    outcomes = {"ran": 0, "refused": 0}
    for case in range(cases):
        data = bytearray(original)
        how = case % 4
        if how == 0:  # flip bytes
            for i in rng.integers(0, len(data), size=int(rng.integers(1, 16))):
                data[i] ^= int(rng.integers(1, 256))
        elif how == 1:  # truncate
            data = data[: int(rng.integers(0, len(data)))]
        elif how == 2:  # overwrite a run with random bytes
            at = int(rng.integers(0, len(data)))
            data[at:at + 64] = rng.integers(0, 256, size=len(data[at:at + 64]), dtype=np.uint8).tobytes()
        else:  # small integers in the header and tables: offsets, sizes, counts
            for i in rng.integers(0, min(len(data), 4096), size=8):
                data[i] = int(rng.integers(0, 256))
        target = work / art["path"]
        target.write_bytes(bytes(data))
        art["sha256"], art["size_bytes"] = sha256_file(target), len(data)
        (work / "manifest.json").write_text(json.dumps(manifest))
        print(case, flush=True)  # the last number printed names the case that crashed, if one does
        try:
            model = edgepack_runtime.load(work, artifact=artifact, threads=1)
            inputs, _ = model.bundle.golden()
            model.run({k: v[0] for k, v in inputs.items()})
            outcomes["ran"] += 1
        except EdgepackError as exc:
            assert str(exc) and "\\n" not in str(exc), repr(exc)
            outcomes["refused"] += 1
    print(json.dumps(outcomes))
""")


@pytest.mark.slow
@pytest.mark.parametrize("artifact", ["onnx-int8", "tflite-int8"])
def test_mutated_model_files_never_crash_or_leak_a_raw_error(digits_bundle, tmp_path, artifact):
    work = tmp_path / "bundle"
    shutil.copytree(digits_bundle, work)
    proc = subprocess.run([sys.executable, "-c", FUZZ, str(digits_bundle), str(work), artifact, str(CASES_PER_FORMAT)],
                          capture_output=True, text=True, timeout=1200,
                          env={"EDGEPACK_TELEMETRY": "0", "PATH": "/usr/bin:/bin"})
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "nothing"
    assert proc.returncode == 0, f"crashed or raised after case {last}: {proc.stderr[-2000:]}"
    outcomes = json.loads(last)
    assert outcomes["ran"] + outcomes["refused"] == CASES_PER_FORMAT
    assert outcomes["refused"] > 0  # the mutations do reach the backends' checks
