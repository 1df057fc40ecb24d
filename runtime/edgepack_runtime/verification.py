"""A bundle's on-device check: every file's sha256, then each artifact's golden self-test.
`edgepack-runtime verify` prints it; the bundle store runs it before activating a version."""

from __future__ import annotations

from typing import Any, Optional

from .backends import backend_available
from .bundle import Bundle
from .errors import BackendUnavailableError
from .manifest import Artifact
from .model import load
from .parity import self_test
from .verdict import NOT_IN_BUNDLE, SKIPPED, Verdict

__all__ = ["verify_bundle", "artifact_verdict"]


def artifact_verdict(bundle: Bundle, art: Artifact, verified: bool = False) -> Verdict:
    """One artifact's golden self-test on this device (skipped where no backend runs it).
    `verified`: the bundle's files and signature were just checked (not hashed again)."""
    if art.status != "ok":
        return Verdict(art.name, NOT_IN_BUNDLE, reason=f"not in the bundle ({art.status})")
    if not backend_available(art.format):
        return Verdict(art.name, SKIPPED, reason=f"skipped: no {art.format} backend installed")
    try:
        model = load(bundle, artifact=art.name, verified=verified)
    except BackendUnavailableError as exc:  # installed but unusable, e.g. tflite-runtime with numpy 2
        return Verdict(art.name, SKIPPED, reason=f"skipped: {exc}")
    return self_test(model)


def verify_bundle(bundle: Bundle, artifact: Optional[str] = None, require_signature: bool = False) -> dict[str, Any]:
    """Integrity and the trust policy (raise IntegrityError / SignatureError), then the
    self-test of each artifact (or the one named): `results`, a Verdict each.
    `passed`: at least one artifact tested here, none failed."""
    from .signature import check_signature

    bundle.verify_integrity()
    signature = check_signature(bundle, require=require_signature)
    files = 1 + len(bundle.manifest.data_files()) + sum(len(a.all_files()) for a in bundle.manifest.artifacts
                                                         if a.status == "ok")
    chosen = [bundle.manifest.artifact(artifact)] if artifact else list(bundle.manifest.artifacts)
    results = [artifact_verdict(bundle, art, verified=True) for art in chosen]  # each file hashed once, above
    tested = [r for r in results if r.tested]
    # `integrity` has no "ok": a bundle whose files do not match raised above, so it could never be false.
    return {"bundle": bundle.manifest.name, "integrity": {"files": files}, "signature": signature,
            "results": results,
            "tested": len(tested), "failed": sum(not r.passed for r in tested),
            "passed": bool(tested) and all(r.passed for r in tested)}
