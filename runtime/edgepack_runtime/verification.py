"""A bundle's on-device check: every file's sha256, then each artifact's golden self-test.
`edgepack-runtime verify` prints it; the bundle store runs it before activating a version."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .backends import backend_available
from .bundle import Bundle
from .errors import BackendUnavailableError
from .manifest import Artifact
from .model import load
from .parity import self_test

__all__ = ["verify_bundle", "self_test_row"]


def self_test_row(bundle: Bundle, art: Artifact, verified: bool = False) -> dict[str, Any]:
    """One artifact's golden self-test on this device, as a plain dict (verify's table and JSON).
    `verified`: the bundle's files and signature were just checked (not hashed again)."""
    row = {"artifact": art.name, "result": "skipped", "reason": None, "cosine": None, "min_cosine": None,
           "max_abs_diff": None, "tolerance": None, "samples": None, "own_cosine": None, "own_min_cosine": None,
           "own_max_abs_diff": None, "own_tolerance": None, "same_kernels": None}
    if art.status != "ok":
        return {**row, "result": "not in bundle", "reason": f"not in the bundle ({art.status})"}
    if not backend_available(art.format):
        return {**row, "reason": f"skipped: no {art.format} backend installed"}
    try:
        model = load(bundle, artifact=art.name, verified=verified)
    except BackendUnavailableError as exc:  # installed but unusable, e.g. tflite-runtime with numpy 2
        return {**row, "reason": f"skipped: {exc}"}
    result = self_test(model)

    # NaN outputs are what verify exists to catch; JSON has no NaN: null.
    def finite(x: Optional[float]) -> Optional[float]:
        return x if x is None or np.isfinite(x) else None

    return {**row, "result": "passed" if result.passed else "failed", "cosine": finite(result.cosine),
            "min_cosine": result.min_cosine, "max_abs_diff": finite(result.max_abs_diff),
            "tolerance": result.tolerance, "samples": result.samples,
            # vs the artifact's own outputs on the build host (bundles since 2.3)
            "own_cosine": finite(result.own_cosine), "own_min_cosine": result.own_min_cosine,
            "own_max_abs_diff": finite(result.own_max_abs_diff), "own_tolerance": result.own_tolerance,
            "same_kernels": result.same_kernels}


def verify_bundle(bundle: Bundle, artifact: Optional[str] = None, require_signature: bool = False) -> dict[str, Any]:
    """Integrity and the trust policy (raise IntegrityError / SignatureError), then the
    self-test of each artifact (or the one named).
    `passed`: at least one artifact tested here, none failed."""
    from .signature import check_signature

    bundle.verify_integrity()
    signature = check_signature(bundle, require=require_signature)
    files = 1 + len(bundle.manifest.data_files()) + sum(len(a.all_files()) for a in bundle.manifest.artifacts
                                                         if a.status == "ok")
    chosen = [bundle.manifest.artifact(artifact)] if artifact else list(bundle.manifest.artifacts)
    results = [self_test_row(bundle, art, verified=True) for art in chosen]  # each file hashed once, above
    tested = [r for r in results if r["result"] in ("passed", "failed")]
    return {"bundle": bundle.manifest.name, "integrity": {"files": files, "ok": True}, "signature": signature,
            "results": results,
            "tested": len(tested), "failed": sum(r["result"] == "failed" for r in tested),
            "passed": bool(tested) and all(r["result"] == "passed" for r in tested)}
