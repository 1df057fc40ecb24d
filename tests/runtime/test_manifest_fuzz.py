"""Property-based fuzzing of the manifest and golden readers: every mutated bundle is
either read correctly or refused with one typed error, never a traceback."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import edgepack_runtime
from edgepack_runtime.errors import EdgepackError
from edgepack_runtime.model import candidates, choose_artifact, default_reason
from edgepack_runtime.report import artifacts_table

CASES = 1000
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**40) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    """Every (path to a value) in a JSON document."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def _mutate(doc, path, action, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent["extra_key"] = value
    else:
        parent[path[-1]] = value
    return doc


def _use(bundle_dir) -> None:
    """What `info`, `verify` and `load` do with a bundle."""
    bundle = edgepack_runtime.open_bundle(bundle_dir)
    Console(file=open("/dev/null", "w"), width=200).print(artifacts_table(bundle.manifest))
    try:
        choose_artifact(bundle)
        default_reason(bundle)
        candidates(bundle)
    except EdgepackError:
        pass
    bundle.verify_integrity()
    model = edgepack_runtime.load(bundle_dir)
    inputs, _ = bundle.golden()
    model.run({k: v[0] for k, v in inputs.items()})


@pytest.fixture(scope="module")
def original(digits_bundle):
    return json.loads((digits_bundle / "manifest.json").read_text())


@pytest.mark.slow  # hypothesis: hundreds of mutated manifests
@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_mutated_manifests_are_read_or_refused_with_one_typed_error(digits_bundle, tmp_path_factory, original, data):
    paths = list(_paths(original))
    path = data.draw(st.sampled_from(paths))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    value = data.draw(JSON_VALUES)
    if action == "delete" and not path:
        action = "replace"
    doc = _mutate(original, path, action, value)
    bundle = tmp_path_factory.mktemp("fuzz")
    for name in ("golden.npz",) + tuple(a["path"] for a in original["artifacts"] if a.get("path")):
        shutil.copy(digits_bundle / name, bundle / name)
    (bundle / "manifest.json").write_text(json.dumps(doc))
    try:
        _use(bundle)
    except EdgepackError as exc:
        assert "\n" not in str(exc) and str(exc)


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, '{"schema_version": ' + "9" * 5000 + "}",
                                  '{"schema_version": true}', '{"schema_version": 0}', '{"schema_version": -7}',
                                  "\x00" * 10, "null"])
def test_hostile_manifest_texts_are_one_clear_error(bundle_copy, text):
    (bundle_copy / "manifest.json").write_text(text)
    with pytest.raises(edgepack_runtime.BundleError):
        edgepack_runtime.open_bundle(bundle_copy)


def test_an_object_array_in_golden_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    np.savez(bundle_copy / "golden.npz", **{"inputs/image": np.array([object()] * 2, dtype=object)})
    from edgepack_runtime.bundle import sha256_file

    manifest["golden"]["sha256"] = sha256_file(bundle_copy / "golden.npz")
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(edgepack_runtime.BundleError):
        edgepack_runtime.open_bundle(bundle_copy).golden()
