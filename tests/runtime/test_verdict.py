"""One verdict type for the build's validation, the device's self-test, `verify`'s rows and
the emulator guest's answer: its JSON reads back as it was, and the manifest records the
build's verdict exactly as every schema so far spelled it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

import edgepack_runtime
from edgepack_runtime.errors import BundleError
from edgepack_runtime.manifest import SCHEMA_VERSION, Manifest
from edgepack_runtime.parity import self_test
from edgepack_runtime.verdict import FAILED, NOT_IN_BUNDLE, PASSED, RECORD, Verdict
from edgepack_runtime.verification import verify_bundle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# The keys `edgepack-runtime verify --json` has printed per artifact since schema 2.3.
VERIFY_ROW_KEYS = {"artifact", "result", "reason", "cosine", "min_cosine", "max_abs_diff", "tolerance", "samples",
                   "own_cosine", "own_min_cosine", "own_max_abs_diff", "own_tolerance", "same_kernels"}
# The keys of the emulated report's rows (manifest.emulated.results), as `edgepack build --json` shows them.
EMULATED_ROW_KEYS = {"artifact", "passed", "max_abs_diff", "tolerance", "diff_vs_host", "backend", "error",
                     "accuracy", "own_cosine", "own_min_cosine"}


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.iterdir()))
def test_an_earlier_manifest_is_written_back_with_every_recorded_figure(fixture):
    text = (FIXTURES / fixture / "manifest.json").read_text()
    before = json.loads(text)["artifacts"]
    after = json.loads(Manifest.from_json(text).to_json())["artifacts"]
    assert any(old.get("validation") for old in before)
    for old, new in zip(before, after, strict=True):
        recorded, written = old.get("validation"), new["validation"]
        if recorded is None:
            assert written is None, old["name"]
            continue
        assert set(written) == set(RECORD), old["name"]  # the keys every reader of this schema knows
        assert {k: written[k] for k in recorded} == recorded, old["name"]  # nothing lost or changed
        assert all(written[k] in (None, []) for k in set(written) - set(recorded)), old["name"]


def test_a_built_bundles_verdicts_read_back_as_the_build_judged_them(digits_bundle):
    manifest = edgepack_runtime.open_bundle(digits_bundle).manifest
    for art in manifest.artifacts:
        verdict = art.validation
        assert verdict is not None and verdict.artifact == art.name and verdict.result == PASSED
        assert verdict.host is not None and verdict.backend and verdict.cosine >= verdict.min_cosine
        assert Manifest.from_json(manifest.to_json()).artifact(art.name).validation == verdict


def test_the_self_tests_json_reads_back_as_the_same_verdict(digits_bundle):
    """What the emulator guest prints and the host reads."""
    for art in edgepack_runtime.open_bundle(digits_bundle).manifest.artifacts:
        verdict = self_test(edgepack_runtime.load(digits_bundle, artifact=art.name))
        assert verdict.passed and verdict.backend and verdict.own_cosine is not None, verdict
        read = Verdict.from_dict(json.loads(json.dumps(verdict.to_dict(), allow_nan=False)))
        assert read == verdict
        assert VERIFY_ROW_KEYS | EMULATED_ROW_KEYS <= set(verdict.to_dict())


def test_figures_that_are_not_numbers_are_null_in_json_and_the_result_says_failed():
    verdict = Verdict("onnx-int8", FAILED, cosine=math.nan, max_abs_diff=math.inf, tolerance=0.1, samples=4)
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data["cosine"] is None and data["max_abs_diff"] is None and data["tolerance"] == 0.1
    assert data["passed"] is False and data["result"] == "failed"
    assert Verdict.from_dict(data) == dataclasses.replace(verdict, cosine=None, max_abs_diff=None)


def test_a_verdict_with_an_unknown_result_is_refused():
    with pytest.raises(ValueError, match="result"):
        Verdict.from_dict({**Verdict("onnx-fp32", PASSED).to_dict(), "result": "fine"})


def test_verify_reports_a_verdict_per_artifact_and_integrity_without_an_ok_that_cannot_be_false(digits_bundle):
    report = verify_bundle(edgepack_runtime.open_bundle(digits_bundle))
    assert report["integrity"] == {"files": 1 + sum(len(a.all_files()) for a in
                                                    edgepack_runtime.open_bundle(digits_bundle).manifest.artifacts)}
    assert all(isinstance(v, Verdict) and v.passed for v in report["results"])
    assert report["passed"] and report["tested"] == len(report["results"]) and report["failed"] == 0


def test_an_artifact_left_out_of_the_bundle_is_reported_not_tested(bundle_copy):
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    left = manifest["artifacts"][-1]
    (bundle_copy / left["path"]).unlink()
    manifest["artifacts"][-1] = {"name": left["name"], "format": left["format"], "precision": left["precision"],
                                 "status": "failed", "error": "left out by this test"}
    path.write_text(json.dumps(manifest))
    report = verify_bundle(edgepack_runtime.open_bundle(bundle_copy))
    verdict = next(v for v in report["results"] if v.artifact == left["name"])
    assert verdict.result == NOT_IN_BUNDLE and not verdict.tested and "not in the bundle" in verdict.reason
    assert report["passed"] and report["tested"] == len(report["results"]) - 1


def _with_validation(bundle: Path, version: str, **changes) -> Path:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["schema_version"] = version
    manifest["artifacts"][0]["validation"].update(changes)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


@pytest.mark.parametrize("changes, problem", [
    ({"passed": "yes"}, "validation.passed must be true or false"),
    ({"own_cosine": 0.5}, "unknown key 'own_cosine'"),  # the device's figure: never recorded
    ({"result": "passed"}, "unknown key 'result'"),
    ({"max_abs_diff": None}, "validation.max_abs_diff must not be null"),
])
def test_a_damaged_validation_record_is_refused_with_where_it_is(bundle_copy, changes, problem):
    bundle = _with_validation(bundle_copy, SCHEMA_VERSION, **changes)
    with pytest.raises(BundleError, match=problem):
        _ = edgepack_runtime.open_bundle(bundle).manifest


def test_a_newer_minors_validation_keys_are_ignored(bundle_copy):
    major, minor = SCHEMA_VERSION.split(".")
    bundle = _with_validation(bundle_copy, f"{major}.{int(minor) + 1}", a_key_from_the_future=1)
    assert edgepack_runtime.open_bundle(bundle).manifest.artifacts[0].validation.passed
