import json

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime import BundleError, InputError, IntegrityError
from edgepack_runtime.model import choose_artifact
from edgepack_runtime.parity import self_test


def test_load_exposes_inputs_outputs_and_artifact(digits_bundle):
    model = edgepack_runtime.load(digits_bundle)
    assert [s.describe() for s in model.inputs] == ["image:1x1x8x8:float32"]
    assert [s.describe() for s in model.outputs] == ["output:1x10:float32"]
    # Built on the host target: the default is the fastest accurate artifact measured then.
    latencies = {a.name: a.latency.p50_ms for a in model.bundle.manifest.artifacts}
    assert latencies[model.artifact.name] == min(latencies.values())
    assert model.threads >= 1 and model.backend.startswith(("onnxruntime ", "ai-edge-litert "))


def test_run_matches_the_golden_outputs(digits_bundle):
    bundle = edgepack_runtime.open_bundle(digits_bundle)
    inputs, reference = bundle.golden()
    model = edgepack_runtime.load(digits_bundle, artifact="onnx-fp32", threads=1)
    out = model.run({"image": inputs["image"][0]})
    np.testing.assert_allclose(out["output"], reference["output"][0], atol=1e-4)
    assert self_test(model).passed


@pytest.mark.parametrize("inputs, message", [
    ({"image": np.zeros((1, 1, 8, 8), np.float64)}, "input 'image' has dtype float64, expected float32"),
    ({"image": np.zeros((1, 8, 8), np.float32)}, "input 'image' has shape [1, 8, 8], expected [1, 1, 8, 8]"),
    ({}, "missing input(s) ['image']; this model takes image:1x1x8x8:float32"),
    ({"image": np.zeros((1, 1, 8, 8), np.float32), "extra": np.zeros(1)}, "unknown input(s) ['extra']"),
    ({"image": [[0.0]]}, "must be a numpy array"),
])
def test_wrong_inputs_name_the_input_and_what_was_expected(digits_bundle, inputs, message):
    model = edgepack_runtime.load(digits_bundle)
    with pytest.raises(InputError) as info:
        model.run(inputs)
    assert message in str(info.value)


def test_tampered_artifact_is_refused(bundle_copy):
    path = bundle_copy / "model.int8.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.int8.onnx does not match its sha256"):
        edgepack_runtime.load(bundle_copy, artifact="onnx-int8")
    edgepack_runtime.load(bundle_copy, artifact="onnx-fp32")  # the untouched artifact still loads


def test_missing_file_is_reported(bundle_copy):
    (bundle_copy / "golden.npz").unlink()
    with pytest.raises(IntegrityError, match="golden.npz is missing"):
        edgepack_runtime.open_bundle(bundle_copy).verify_integrity()


@pytest.mark.parametrize("evil", ["../outside.onnx", "/etc/passwd"])
def test_paths_escaping_the_bundle_are_refused(bundle_copy, evil):
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"][0]["path"] = evil
    manifest_path.write_text(json.dumps(manifest))
    (bundle_copy.parent / "outside.onnx").write_bytes((bundle_copy / "model.fp32.onnx").read_bytes())
    with pytest.raises(IntegrityError, match="points outside the bundle"):
        edgepack_runtime.load(bundle_copy, artifact=manifest["artifacts"][0]["name"])


def test_symlink_escaping_the_bundle_is_refused(bundle_copy):
    outside = bundle_copy.parent / "outside.onnx"
    outside.write_bytes((bundle_copy / "model.fp32.onnx").read_bytes())
    (bundle_copy / "model.fp32.onnx").unlink()
    (bundle_copy / "model.fp32.onnx").symlink_to(outside)
    with pytest.raises(IntegrityError, match="points outside the bundle"):
        edgepack_runtime.load(bundle_copy, artifact="onnx-fp32")


@pytest.mark.parametrize("where", ["initializer", "constant node", "function attribute default"])
@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "inside.bin"])
def test_onnx_external_data_is_refused_before_onnxruntime_reads_it(bundle_copy, where, location):
    """An attacker who rewrites the model and its hashes still cannot make the runtime read a
    file by naming it as ONNX external data (onnxruntime < 1.24 would follow "../")."""
    import onnx
    from onnx import TensorProto

    from edgepack_runtime.bundle import sha256_file

    (bundle_copy.parent / "secret.bin").write_bytes(b"\0" * 4096)
    (bundle_copy / "inside.bin").write_bytes(b"\0" * 4096)
    model = onnx.load(bundle_copy / "model.fp32.onnx")
    value = onnx.helper.make_tensor("c", TensorProto.FLOAT, [4], [0.0] * 4)
    if where == "initializer":
        tensor = model.graph.initializer[0]
    elif where == "constant node":
        model.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["c_out"], value=value))
        tensor = model.graph.node[0].attribute[0].t
    else:  # a local function whose Constant takes the function attribute's default value
        constant = onnx.helper.make_node("Constant", [], ["y"])
        constant.attribute.append(onnx.AttributeProto(name="value", ref_attr_name="value",
                                                      type=onnx.AttributeProto.TENSOR))
        default = onnx.helper.make_attribute("value", value)
        model.functions.append(onnx.helper.make_function("local", "F", [], ["y"], [constant],
                                                         [onnx.helper.make_opsetid("", 18)],
                                                         attribute_protos=[default]))
        model.opset_import.append(onnx.helper.make_opsetid("local", 1))
        model.graph.node.insert(0, onnx.helper.make_node("F", [], ["f_out"], domain="local"))
        tensor = model.functions[0].attribute_proto[0].t
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "16"}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    file = bundle_copy / "model.fp32.onnx"
    file.write_bytes(model.SerializeToString())
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    art = next(a for a in manifest["artifacts"] if a["name"] == "onnx-fp32")
    art["sha256"], art["size_bytes"] = sha256_file(file), file.stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="ONNX external data"):
        edgepack_runtime.load(bundle_copy, artifact="onnx-fp32")


def test_links_inside_the_bundle_are_refused(bundle_copy, tmp_path):
    """A symlinked manifest or a hard-linked model could make a server read files from
    elsewhere on the device, even with matching hashes."""
    import os
    import shutil

    outside = tmp_path / "elsewhere.onnx"
    os.link(bundle_copy / "model.fp32.onnx", outside)
    with pytest.raises(IntegrityError, match="model.fp32.onnx is a hard link"):
        edgepack_runtime.load(bundle_copy, artifact="onnx-fp32")
    outside.unlink()
    assert edgepack_runtime.load(bundle_copy, artifact="onnx-fp32")
    shutil.move(bundle_copy / "manifest.json", tmp_path / "manifest.json")
    (bundle_copy / "manifest.json").symlink_to(tmp_path / "manifest.json")
    with pytest.raises(IntegrityError, match="manifest.json is a symbolic link"):
        edgepack_runtime.open_bundle(bundle_copy)


def test_newer_schema_and_damaged_manifest_are_refused(bundle_copy):
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(BundleError, match="upgrade edgepack-runtime"):
        edgepack_runtime.open_bundle(bundle_copy)
    manifest_path.write_text(json.dumps({**manifest, "surprise": 1}))
    with pytest.raises(BundleError, match=r"has unknown key 'surprise'"):
        edgepack_runtime.open_bundle(bundle_copy)
    manifest_path.write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        edgepack_runtime.open_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not an edgepack bundle"):
        edgepack_runtime.load(tmp_path)


def test_unknown_artifact_lists_the_known_ones(digits_bundle):
    with pytest.raises(BundleError, match="no artifact 'tflite-int4'; its artifacts are: onnx-fp32, onnx-int8, tflite"):
        edgepack_runtime.load(digits_bundle, artifact="tflite-int4")


def test_choice_follows_target_preference_and_skips_failed_validation(bundle_copy):
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for art in manifest["artifacts"]:
        art["latency"] = None  # no build-time latency on the target's kernels: the profile's order decides
    manifest_path.write_text(json.dumps(manifest))
    assert choose_artifact(edgepack_runtime.open_bundle(bundle_copy)).name == "onnx-int8"
    manifest["target"]["prefer"] = ["fp32", "int8"]
    manifest_path.write_text(json.dumps(manifest))
    assert choose_artifact(edgepack_runtime.open_bundle(bundle_copy)).name == "onnx-fp32"
    manifest["target"]["formats"] = ["tflite", "onnx"]  # ties within a precision: the formats order
    manifest_path.write_text(json.dumps(manifest))
    assert choose_artifact(edgepack_runtime.open_bundle(bundle_copy)).name == "tflite-fp32"
    artifacts = {a["name"]: a for a in manifest["artifacts"]}
    artifacts["tflite-fp32"]["validation"]["passed"] = False
    manifest_path.write_text(json.dumps(manifest))
    assert choose_artifact(edgepack_runtime.open_bundle(bundle_copy)).name == "onnx-fp32"
    # an artifact that missed the accuracy budget is not picked either
    artifacts["onnx-fp32"]["accuracy"]["within_budget"] = False
    manifest_path.write_text(json.dumps(manifest))
    assert choose_artifact(edgepack_runtime.open_bundle(bundle_copy)).name == "tflite-int8"
    # nor is an integer artifact whose accuracy was only measured off its target's ISA
    artifacts["tflite-int8"]["accuracy"]["indicative"] = True
    manifest_path.write_text(json.dumps(manifest))
    assert choose_artifact(edgepack_runtime.open_bundle(bundle_copy)).name == "onnx-int8"
    for art in manifest["artifacts"]:
        art["validation"]["passed"] = False
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no artifact that passed validation and its accuracy checks"):
        choose_artifact(edgepack_runtime.open_bundle(bundle_copy))


def test_a_model_closes_as_a_context_manager(digits_bundle):
    from edgepack_runtime import InferenceError

    with edgepack_runtime.load(digits_bundle, artifact="onnx-fp32") as model:
        inputs, _ = model.bundle.golden()
        feed = {k: v[0] for k, v in inputs.items()}
        assert model.run(feed)["output"].shape == (1, 10)
    with pytest.raises(InferenceError, match="was closed; load the bundle again"):
        model.run(feed)
