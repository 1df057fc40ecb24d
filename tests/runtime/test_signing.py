"""Signed bundles (issue #14): the OpenSSF model-signing format, a trust policy, and a
tampered bundle (model and golden swapped, every hash regenerated) refused. Interop: the
real `model_signing` library (in its own venv: its sigstore client conflicts with the
packager's converters) verifies edgepack's signatures, and edgepack verifies its."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgepack_runtime
from edgepack_runtime.files import user_dir
from edgepack_runtime.signature import SignatureError, sign_bundle
from edgepack_runtime.store import install

from .test_serve import CLI

MODEL_SIGNING = "model-signing==1.1.1"


def _keys(where: Path, name: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = where / f"{name}.pem", where / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def signed(digits_bundle, tmp_path, monkeypatch):
    bundle = Path(shutil.copytree(digits_bundle, tmp_path / "bundle"))
    private, public = _keys(tmp_path, "release")
    sign_bundle(bundle, private)
    monkeypatch.setenv("EDGEPACK_TRUSTED_KEYS", str(public))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return bundle, private, public


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def swap_model_and_golden(bundle: Path) -> None:
    """What an attacker who controls the transfer does: a model of their own in (here the
    ONNX model with its last layer's weights negated), golden outputs recomputed from it and
    every hash in the manifest regenerated, so that integrity and the self-test both pass."""
    import onnx
    import onnxruntime
    from onnx import numpy_helper

    path = bundle / "model.fp32.onnx"
    model = onnx.load(path)
    weights = [t for t in model.graph.initializer if len(t.dims) == 2][-1]
    weights.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weights), weights.name))
    onnx.save(model, path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with np.load(bundle / "golden.npz") as data:
        golden = {k: data[k] for k in data.files}
    golden["outputs/output"] = np.stack([session.run(None, {"image": x})[0] for x in golden["inputs/image"]])
    np.savez(bundle / "golden.npz", **golden)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["name"] == "onnx-fp32"]
    art = manifest["artifacts"][0]
    art["sha256"], art["size_bytes"] = _sha256(path), path.stat().st_size
    art["files"] = [{"path": path.name, "sha256": art["sha256"], "size_bytes": art["size_bytes"]}]
    manifest["golden"]["sha256"] = _sha256(bundle / "golden.npz")
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_a_signed_bundle_loads_and_a_tampered_one_is_refused(signed, tmp_path):
    bundle, _, public = signed
    with edgepack_runtime.load(bundle, artifact="onnx-fp32") as model:
        assert model.run({"image": model.bundle.golden()[0]["image"][0]})
    ok = subprocess.run([CLI, "verify", bundle, "--artifact", "onnx-fp32"], capture_output=True, text=True)
    assert ok.returncode == 0 and f"signature: verified, signed by {public}" in ok.stdout
    swap_model_and_golden(bundle)
    unsigned_check = subprocess.run([CLI, "verify", bundle], capture_output=True, text=True,
                                    env={**os.environ, "EDGEPACK_TRUSTED_KEYS": ""})
    # No trusted key says who signed, but the signed file list still says what was signed (issue 21).
    assert unsigned_check.returncode == 1 and len(unsigned_check.stderr.strip().splitlines()) == 1
    assert "does not match the files: modified after signing" in unsigned_check.stderr
    refused = subprocess.run([CLI, "verify", bundle], capture_output=True, text=True)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert ("does not match the files: modified after signing (golden.npz, manifest.json, model.fp32.onnx)"
            in refused.stderr)
    with pytest.raises(SignatureError, match="modified after signing"):
        edgepack_runtime.load(bundle)
    store = install(bundle, tmp_path / "store")
    assert not store.verified and not store.active and "modified after signing" in store.reason


def test_the_trust_policy(signed, digits_bundle, tmp_path, monkeypatch):
    bundle, _, _ = signed
    _, stranger = _keys(tmp_path, "stranger")
    monkeypatch.setenv("EDGEPACK_TRUSTED_KEYS", str(stranger))
    with pytest.raises(SignatureError, match="none of the 1 trusted key"):
        edgepack_runtime.load(bundle)
    monkeypatch.delenv("EDGEPACK_TRUSTED_KEYS")
    with edgepack_runtime.load(bundle, artifact="onnx-fp32"):  # signed, nothing to check it with: loads
        pass
    unsigned = Path(shutil.copytree(digits_bundle, tmp_path / "unsigned"))
    assert not install(unsigned, tmp_path / "store", require_signature=True).verified
    config = tmp_path / "config" / "edgepack"
    config.mkdir(parents=True)
    (config / "trust.toml").write_text(f'require_signature = true\nkeys = ["{signed[2]}"]\n')
    with pytest.raises(SignatureError, match="not signed"):
        edgepack_runtime.load(unsigned)
    with edgepack_runtime.load(bundle, artifact="onnx-fp32") as model:
        assert model.artifact.name == "onnx-fp32"


def test_build_sign_and_the_cli(digits_data, tmp_path, signed):
    import edgepack

    _, private, public = signed
    result = edgepack.build(f"{Path(__file__).parents[2] / 'examples' / 'digits' / 'model.py'}:create",
                            tmp_path / "built", "host", formats=["onnx"], precisions=["fp32"],
                            weights=digits_data / "weights.safetensors", calibration=digits_data / "calib.npz",
                            sign=private)
    assert (result.path / "bundle.sig").is_file()
    with edgepack_runtime.load(result.path):
        pass
    bad = subprocess.run([Path(sys.executable).parent / "edgepack", "sign", result.path, "--key", public],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "not a PEM private key" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="session")
def model_signing_python() -> Path:
    """A venv holding the real OpenSSF `model_signing` (cached between runs)."""
    venv = user_dir("cache", "edgepack") / "test-venvs" / MODEL_SIGNING.replace("==", "-")
    python = venv / "bin" / "python"
    if not (venv / "ready").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", MODEL_SIGNING, "pyopenssl"],
                       check=True)
        (venv / "ready").touch()
    return python


LIBRARY = """
import pathlib, sys
import model_signing
mode, bundle, key = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
if mode == "verify":
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key).verify(bundle, bundle / "bundle.sig")
else:
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=["bundle.sig"])
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(hashing).sign(
        bundle, bundle / "bundle.sig")
print("ok")
"""


@pytest.mark.slow
def test_signatures_interoperate_with_the_openssf_model_signing_library(signed, model_signing_python, tmp_path):
    bundle, private, public = signed
    (tmp_path / "library.py").write_text(LIBRARY)

    def library(mode: str, path: Path, key: Path) -> subprocess.CompletedProcess:
        return subprocess.run([model_signing_python, tmp_path / "library.py", mode, path, key], capture_output=True,
                              text=True)

    assert library("verify", bundle, public).stdout.strip() == "ok"  # edgepack signed, the library verifies
    theirs = Path(shutil.copytree(bundle, tmp_path / "theirs"))
    (theirs / "bundle.sig").unlink()
    assert library("sign", theirs, private).returncode == 0  # the library signs, edgepack verifies
    with edgepack_runtime.load(theirs, artifact="onnx-fp32") as model:
        assert np.isfinite(model.run({"image": model.bundle.golden()[0]["image"][0]})["output"]).all()
    swap_model_and_golden(theirs)
    with pytest.raises(SignatureError, match="modified after signing"):
        edgepack_runtime.load(theirs)
    swap_model_and_golden(bundle)
    assert library("verify", bundle, public).returncode != 0  # and the library refuses what edgepack refuses
