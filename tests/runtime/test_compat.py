"""Bundles written by earlier releases keep loading, verifying and running (issue #11).

tests/fixtures/digits-schema1 was written by this repository's first release (commit
daa8841: ONNX only, manifest schema 1, absolute parity tolerances), with that commit's own
code. Never regenerate it: it is the contract with bundles already on devices."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

import edgepack_runtime
from edgepack_runtime.parity import self_test

from .test_serve import CLI

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "digits-schema1"


def test_a_first_release_bundle_loads_verifies_and_runs(tmp_path):
    bundle = Path(shutil.copytree(FIXTURE, tmp_path / "digits-schema1"))
    manifest = edgepack_runtime.open_bundle(bundle).manifest
    assert manifest.schema_version == 1
    assert [a.name for a in manifest.artifacts] == ["onnx-fp32", "onnx-int8"]
    for art in manifest.artifacts:
        model = edgepack_runtime.load(bundle, artifact=art.name)
        assert self_test(model).passed, art.name
        inputs, reference = model.bundle.golden()
        out = model.run({k: v[0] for k, v in inputs.items()})["output"]
        assert out.shape == reference["output"][0].shape and np.argmax(out) == np.argmax(reference["output"][0])
    verify = subprocess.run([CLI, "verify", bundle], capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert edgepack_runtime.load(bundle).artifact.name in {"onnx-fp32", "onnx-int8"}  # a default is chosen
