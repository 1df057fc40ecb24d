"""The device's self-test holds each artifact to its own outputs on the build host, not only
to PyTorch's: int8's PyTorch bounds (cosine ≥ 0.95) pass a device whose kernels compute the
artifact differently; the artifact's own outputs do not."""

from __future__ import annotations

import numpy as np

import edgepack_runtime
from edgepack_runtime.parity import OTHER_KERNELS, SAME_KERNELS, self_test


def _perturbed(model, scale: float, seed: int = 0):
    """`model.run` as a device with other kernels would compute it: each output moved by
    noise of `scale` times its spread."""
    run, rng = model.run, np.random.default_rng(seed)

    def run_differently(feeds):
        return {k: (v + rng.standard_normal(v.shape).astype(v.dtype) * scale * float(np.std(v)))
                for k, v in run(feeds).items()}

    model.run = run_differently
    return model


def test_an_artifact_is_held_to_its_own_outputs_on_the_build_host(digits_bundle):
    bundle = edgepack_runtime.open_bundle(digits_bundle)
    for art in bundle.manifest.artifacts:
        own = bundle.own_outputs(art.name)
        assert own is not None and set(own) == {s.name for s in bundle.manifest.outputs}, art.name
        result = self_test(edgepack_runtime.load(digits_bundle, artifact=art.name))
        assert result.passed and result.same_kernels, (art.name, result)  # built here: the same kernels
        assert result.own_cosine >= SAME_KERNELS.min_cosine and result.own_max_abs_diff <= result.own_tolerance


def test_a_device_that_computes_the_artifact_differently_fails_verify(digits_bundle):
    """Outputs moved by 20 % of their spread: within int8's PyTorch bounds, far outside
    what other kernels were measured to do (OTHER_KERNELS)."""
    model = _perturbed(edgepack_runtime.load(digits_bundle, artifact="onnx-int8"), scale=0.2)
    result = self_test(model)
    # PyTorch's check alone passes.
    assert result.cosine >= result.min_cosine and result.max_abs_diff <= result.tolerance
    assert result.own_cosine < OTHER_KERNELS.min_cosine or result.own_max_abs_diff > result.own_tolerance
    assert not result.passed
