import json
import subprocess
import sys
import textwrap


def test_runtime_never_imports_torch_or_the_packager(digits_bundle):
    """Load and run a bundle in a fresh interpreter, then inspect sys.modules."""
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import edgepack_runtime
        model = edgepack_runtime.load({str(digits_bundle)!r})
        out = model.run({{"image": np.zeros((1, 1, 8, 8), np.float32)}})
        from edgepack_runtime.cli import main  # the CLI too
        print(json.dumps({{
            "outputs": list(out),
            "heavy": sorted(m for m in sys.modules
                            if m.split(".")[0] in ("torch", "edgepack", "onnx", "onnxscript", "safetensors")),
        }}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["outputs"] == ["output"]
    assert report["heavy"] == []


def test_runtime_distribution_depends_only_on_numpy_and_backend_extras():
    from importlib.metadata import requires

    required = [r for r in requires("edgepack-runtime") if "extra ==" not in r]
    names = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in required)
    assert names == ["click", "numpy"]  # tables print plain without rich (textui.py)
    extras = [r for r in requires("edgepack-runtime") if "extra ==" in r]
    assert any(r.startswith("rich") and 'extra == "rich"' in r for r in extras)
    assert any(r.startswith("onnxruntime") and 'extra == "onnx"' in r for r in extras)
    assert not any("torch" in r for r in requires("edgepack-runtime"))


def test_public_names_are_pinned():
    """The names users import: changing them is an API change, made on purpose here."""
    import edgepack
    import edgepack_runtime

    assert sorted(edgepack_runtime.__all__) == sorted([
        "load", "Model", "open_bundle", "Bundle", "Manifest", "Artifact", "TensorSpec", "self_test", "Verdict",
        "EdgepackError", "BundleError", "IntegrityError", "InputError", "InferenceError", "BackendUnavailableError",
        "__version__"])
    assert sorted(edgepack.__all__) == sorted([
        "build", "build_from", "BuildRequest", "BuildResult", "BuildFailed", "load_target", "target_ids",
        "TargetProfile", "EdgepackError", "__version__"])
    for package in (edgepack, edgepack_runtime):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
