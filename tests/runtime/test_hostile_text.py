"""Untrusted text on the terminal (issue 21): every string from a bundle, a device, a file
name or a model prints as written, never read as rich markup, through every command of both
CLIs; and a property test over the manifest schema: markup and hostile paths in any string
field end in a clean result or one error line, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack_runtime.cli import main as runtime_cli

BIN = Path(sys.executable).parent
MARKUP = ("x[/]y", "[bold", "[red]x[/]", "[link=https://example.com]x[/link]", "a\\", "[/red]")
# A hostile path for a path field: a loop, a name past NAME_MAX, outside the bundle, a device file.
HOSTILE_PATHS = ("loop", "x" * 300, "d/" * 3000, "../../../../etc/passwd", "/etc/passwd", "/dev/zero", "", ".", "\x00")
# The property test's size: CI runs this many; `EDGEPACK_FUZZ_CASES=1200 pytest ...` for a long run.
CASES = int(os.environ.get("EDGEPACK_FUZZ_CASES", "60"))


def _run(*argv, env=None):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400", **(env or {})})
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def _rehash(bundle: Path, manifest: dict) -> None:
    """Write `manifest`, keeping every hash true: what an attacker (or a careless edit) does."""
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _markup_everywhere(bundle: Path, text: str) -> dict:
    """`text` in every free-text field of the manifest (names, target, dates, toolchain,
    where measured, errors): the fields that are not hashes, paths or tensor names."""
    m = json.loads((bundle / "manifest.json").read_text())
    m["name"] = f"n{text}"
    m["created"] = f"c{text}"
    m["target"] = {**m["target"], "id": f"t{text}", "description": f"d{text}", "name": f"t{text}"}
    m["toolchain"] = {f"k{text}": f"v{text}" for _ in range(1)} | m["toolchain"]
    for art in m["artifacts"]:
        if art.get("validation"):
            art["validation"]["host"] = {**art["validation"].get("host", {}), "arch": f"a{text}", "cpu": f"c{text}"}
        if art.get("accuracy"):
            art["accuracy"]["measured_on"] = f"m{text}"
        if art.get("latency"):
            art["latency"]["host"] = f"h{text}"
    _rehash(bundle, m)
    return m


@pytest.mark.parametrize("text", MARKUP[:3])
def test_markup_in_every_manifest_field_and_file_name_prints_as_written(digits_bundle, tmp_path, text):
    name = text.replace("/", "")  # markup that can be a file name: "[bold", "[red]x[]"
    bundle = tmp_path / f"b{name}"  # markup in the bundle's own directory name
    shutil.copytree(digits_bundle, bundle)
    _markup_everywhere(bundle, text)
    rt = BIN / "edgepack-runtime"
    env = {"EDGEPACK_TELEMETRY_DB": str(tmp_path / "t.sqlite"), "EDGEPACK_DEVICE_NAME": f"dev{text}"}

    info = _run(rt, "info", bundle, env=env)
    assert info.returncode == 0, info.stderr
    for field in ("n", "t", "c"):
        assert f"{field}{text}" in info.stdout
    verify = _run(rt, "verify", bundle, "--artifact", "onnx-fp32", env=env)
    assert verify.returncode == 0 and f"n{text}" in verify.stdout, verify.stderr

    x = tmp_path / f"in{name}.npy"  # markup in file names given on the command line
    np.save(x, np.zeros((1, 1, 8, 8), np.float32))
    run = _run(rt, "run", bundle, "--artifact", "onnx-fp32", "--input", f"image={x}", env=env)
    assert run.returncode == 0, run.stderr
    out = tmp_path / f"out{name}.npz"
    written = _run(rt, "run", bundle, "--artifact", "onnx-fp32", "--input", f"image={x}", "-o", out, env=env)
    assert written.returncode == 0 and str(out) in written.stdout.replace("\n", ""), written.stderr

    result = tmp_path / f"bench{name}.json"
    bench = _run(rt, "bench", bundle, "--artifact", "onnx-fp32", "--threads", "1", "--runs", "2", "--warmup", "0",
                 "--warmup-seconds", "0", "--min-seconds", "0", "-o", result, env=env)
    assert bench.returncode == 0 and f"dev{text}" in bench.stdout, bench.stderr

    summary = _run(rt, "telemetry", "summary", env=env)
    assert summary.returncode == 0 and f"n{text}" in summary.stdout, summary.stderr
    exported = _run(rt, "telemetry", "export", "--format", "prometheus", "-o", tmp_path / f"e{name}.prom", env=env)
    assert exported.returncode == 0, exported.stderr

    store = tmp_path / "store"  # the store refuses a name that cannot be a folder, in one line
    install = _run(rt, "install", bundle, "--store", store, env=env)
    assert install.returncode == 1 and len(install.stderr.strip().splitlines()) == 1, install.stderr

    compare = _run(BIN / "edgepack", "compare", result, "--html", tmp_path / f"r{name}.html", env=env)
    assert compare.returncode == 0 and f"dev{text}" in compare.stdout, compare.stderr


def test_markup_in_an_error_line_prints_as_written(tmp_path):
    missing = tmp_path / "[red]x[/]"
    proc = _run(BIN / "edgepack-runtime", "info", missing)
    assert proc.returncode == 1 and "[red]x[/]" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _string_fields(node, prefix=()):
    """Every (path to a string value) in a JSON document."""
    if isinstance(node, str):
        yield prefix
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _string_fields(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _string_fields(value, prefix + (i,))


HOSTILE_TEXT = st.sampled_from(MARKUP + HOSTILE_PATHS) | st.text(
    alphabet=st.sampled_from("[]/\\ab =#@\n\x1b"), max_size=24)


def _invoke(args) -> None:
    """One command in-process: a clean exit, or one error line and exit 1 or 2; no traceback."""
    result = CliRunner().invoke(runtime_cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{args[0]} raised {result.exception!r}"
    if result.exit_code != 0:
        assert result.exit_code in (1, 2), result.output
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1, result.stderr


@pytest.fixture(scope="module")
def schema_doc(digits_bundle):
    return json.loads((digits_bundle / "manifest.json").read_text())


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_markup_and_hostile_paths_in_any_string_field(digits_bundle, tmp_path_factory, schema_doc, data, monkeypatch):
    """Any string field of the schema (the next one added too: fields are found by walking
    the manifest) replaced by markup or a hostile path, through info, verify and run."""
    fields = list(_string_fields(schema_doc))
    chosen = data.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True))
    doc = json.loads(json.dumps(schema_doc))
    for path in chosen:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = data.draw(HOSTILE_TEXT)
    bundle = tmp_path_factory.mktemp("hostile")
    for name in os.listdir(digits_bundle):
        shutil.copy(digits_bundle / name, bundle / name)
    os.symlink("loop", bundle / "loop")  # a symbolic link loop, for fields that name a file
    (bundle / "manifest.json").write_text(json.dumps(doc))
    monkeypatch.setenv("EDGEPACK_TELEMETRY", "0")
    _invoke(["info", bundle])
    _invoke(["verify", bundle, "--artifact", "onnx-fp32"])
    np.save(bundle.parent / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    _invoke(["run", bundle, "--input", f"image={bundle.parent / 'x.npy'}"])

