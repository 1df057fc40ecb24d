"""Bundles written by earlier releases keep loading, verifying and running (issue #11).

tests/fixtures/digits-schema1 was written by this repository's first release (commit
daa8841: ONNX only, manifest schema 1, absolute parity tolerances), digits-schema2 by the
last release before versions became MAJOR.MINOR (commit 08d91dd: ONNX and TFLite, fp32 and
int8, schema 2), digits-schema2.4 and detector-schema2.4 by commit 9d6a68a (schema 2.4:
labels, a letterbox and detections, int8 recorded in the old spelling), each with that
commit's own code. Never regenerate them: they are the
contract with bundles already on devices."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime.errors import BundleError
from edgepack_runtime.manifest import SCHEMA_VERSION
from edgepack_runtime.parity import self_test

from .test_serve import CLI

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RELEASES = {"digits-schema1": ("1.0", ["onnx-fp32", "onnx-int8"]),
            "digits-schema2": ("2.0", ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]),
            # Built by 9d6a68a (schema 2.4, before the typed quantization record and the task
            # registry): a classifier with labels and int8 tables in the old spelling, and a
            # detector taking raw images through a letterbox and answering with detections.
            "digits-schema2.4": ("2.4", ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]),
            "detector-schema2.4": ("2.4", ["onnx-fp32"])}


@pytest.mark.parametrize("fixture", sorted(RELEASES))
def test_an_earlier_release_bundle_loads_verifies_and_runs(fixture, tmp_path):
    bundle = Path(shutil.copytree(FIXTURES / fixture, tmp_path / fixture))
    manifest = edgepack_runtime.open_bundle(bundle).manifest
    version, names = RELEASES[fixture]
    assert manifest.schema_version == version
    assert [a.name for a in manifest.artifacts] == names
    for art in manifest.artifacts:
        model = edgepack_runtime.load(bundle, artifact=art.name)
        assert self_test(model).passed, art.name
        inputs, reference = model.bundle.golden()
        out = model.run({k: v[0] for k, v in inputs.items()})["output"]
        assert out.shape == reference["output"][0].shape and np.argmax(out) == np.argmax(reference["output"][0])
    verify = subprocess.run([CLI, "verify", bundle], capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert edgepack_runtime.load(bundle).artifact.name in names  # a default is chosen


def test_quantization_tables_before_2_5_read_as_one_record():
    """Before 2.5 the recipe was spread over the quantization table and what stayed float was
    spelt as recipe keys (float_tail, float_prefix) or groups (float_layers)."""
    from edgepack_runtime.manifest import Manifest

    manifest = edgepack_runtime.open_bundle(FIXTURES / "digits-schema2").manifest
    onnx, tflite = (manifest.artifact(name).quantization for name in ("onnx-int8", "tflite-int8"))
    assert onnx.tool == "onnxruntime.quantization.quantize_static" and onnx.recipe["calibrate_method"] == "minmax"
    assert onnx.relies_on == ("avx512_vnni",) and onnx.float_ops == () and onnx.search[0]["chosen"]
    assert tflite.recipe == {"precision": "int8", "recipe": "static_wi8_ai8", "range_update": "min_max"}
    data = json.loads((FIXTURES / "digits-schema2" / "manifest.json").read_text())
    data["schema_version"] = "2.4"
    data["artifacts"][1]["quantization"].update(float_tail=True, float_prefix=0.25,
                                                float_layers=[["conv1", "relu1"], ["fc"]])
    read = Manifest.from_dict(data).artifact("onnx-int8").quantization
    assert read.float_ops == ("conv1", "relu1", "fc") and "float_layers" not in read.recipe
    assert read.recipe["float_tail"] is True and read.recipe["float_prefix"] == 0.25  # they named no ops
    assert Manifest.from_json(Manifest.from_dict(data).to_json()).artifact("onnx-int8").quantization == read


def _with_version(tmp_path, version: str, **extra) -> Path:
    """digits-schema2 as a bundle of `version` would write it (its quantization tables in the
    2.5 shape), with a key from the future added to an artifact."""
    from edgepack_runtime.manifest import _quantization_before_2_5

    bundle = Path(shutil.copytree(FIXTURES / "digits-schema2", tmp_path / "future"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(schema_version=version, artifacts=[_quantization_before_2_5(a) for a in manifest["artifacts"]],
                    **extra)
    manifest["artifacts"][0]["a_key_from_the_future"] = {"nested": [1, 2]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_a_newer_minor_loads_and_its_new_keys_are_ignored(tmp_path):
    major, minor = SCHEMA_VERSION.split(".")
    bundle = _with_version(tmp_path, f"{major}.{int(minor) + 1}", signed_by="someone")
    model = edgepack_runtime.load(bundle, artifact="onnx-fp32")
    assert model.bundle.manifest.schema_version == f"{major}.{int(minor) + 1}"
    inputs, _ = model.bundle.golden()
    assert model.run({k: v[0] for k, v in inputs.items()})["output"].shape == (1, 10)


def test_within_a_known_minor_unknown_keys_are_damage(tmp_path):
    with pytest.raises(BundleError, match="unknown key"):
        _ = edgepack_runtime.open_bundle(_with_version(tmp_path, SCHEMA_VERSION)).manifest  # reading it raises


def test_a_newer_major_is_refused_with_one_line(tmp_path):
    major = int(SCHEMA_VERSION.split(".")[0]) + 1
    bundle = _with_version(tmp_path, f"{major}.0")
    verify = subprocess.run([CLI, "verify", bundle], capture_output=True, text=True, timeout=300)
    assert verify.returncode != 0
    lines = [line for line in verify.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"schema_version {major}.0 is newer" in lines[0] and "upgrade" in lines[0], verify.stderr


def test_the_published_json_schema_is_the_one_the_reader_implies():
    """docs/manifest.schema.json is generated from the dataclasses; regenerate it with
    `python -m edgepack_runtime.manifest_schema > docs/manifest.schema.json`."""
    from edgepack_runtime.manifest_schema import manifest_schema

    published = json.loads((FIXTURES.parents[1] / "docs" / "manifest.schema.json").read_text())
    assert published == manifest_schema()
    artifact_keys = set(published["$defs"]["Artifact"]["properties"])
    for fixture in RELEASES:  # every key earlier releases wrote is still described
        manifest = json.loads((FIXTURES / fixture / "manifest.json").read_text())
        assert set(manifest) <= set(published["$defs"]["Manifest"]["properties"])
        assert all(set(a) <= artifact_keys for a in manifest["artifacts"])


def test_answers_of_a_2_4_bundle_read_through_todays_tasks():
    """A classifier's labels and a detector's boxes, as the bundles built before the task
    registry declared them, still come out of predict()."""
    from ..conftest import DETECTOR_LABELS, detector_scene

    digits = edgepack_runtime.load(FIXTURES / "digits-schema2.4", artifact="onnx-int8")
    assert digits.bundle.manifest.artifact("onnx-int8").quantization.float_ops == ()
    inputs, reference = digits.bundle.golden()
    answer = digits.predict_tensors({k: v[0] for k, v in inputs.items()})
    assert answer.top is not None and answer.top[0][0] == f"digit {int(np.argmax(reference['output'][0]))}"
    detector = edgepack_runtime.load(FIXTURES / "detector-schema2.4")
    found = detector.predict(detector_scene())
    assert found.detections and {d[0] for d in found.detections} <= set(DETECTOR_LABELS)
