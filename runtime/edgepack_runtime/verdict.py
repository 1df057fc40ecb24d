"""One artifact's outputs on the golden inputs, judged: the one verdict of every check.

The build judges each artifact against PyTorch (the manifest's `artifacts[].validation`),
the device repeats that and adds the artifact's own outputs on the build host
(`self_test`, `edgepack-runtime verify`), and `edgepack verify --emulate` runs the
device's self-test on an emulated ISA (the guest answers with `to_dict()`, the host reads
it with `from_dict()`). Each fills the figures it measures; the others stay None.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .typed import Problem, did_you_mean, from_data

__all__ = ["Verdict", "PASSED", "FAILED", "SKIPPED", "NOT_IN_BUNDLE", "RESULTS", "RECORD", "RECORD_REQUIRED",
           "record_fields", "figure_text"]

PASSED, FAILED = "passed", "failed"
SKIPPED = "skipped"  # not tested here: no backend for its format
NOT_IN_BUNDLE = "not in bundle"  # the build failed or left it out
RESULTS = (PASSED, FAILED, SKIPPED, NOT_IN_BUNDLE)


@dataclass(frozen=True)
class Verdict:
    """Whether one artifact's outputs stay within the bounds the build fixed for it, on the
    machine that ran it, with the figures that decided it."""

    artifact: str
    result: str  # RESULTS: passed or failed when it ran, else why it did not
    reason: Optional[str] = None  # why it was not tested here (skipped, not in bundle)
    # Against PyTorch's outputs: the largest error within `tolerance` (a floor plus a fraction
    # of the outputs' range, fixed at build time) and the mean cosine at least `min_cosine`
    # (schema 2; None in schema-1 bundles: range only).
    cosine: Optional[float] = None
    min_cosine: Optional[float] = None
    max_abs_diff: Optional[float] = None
    tolerance: Optional[float] = None
    samples: Optional[int] = None
    # Against the artifact's own outputs on the build host (parity.SAME_KERNELS or
    # OTHER_KERNELS, as `same_kernels` says): far tighter than PyTorch's int8 bounds, so a
    # device whose kernels compute the artifact differently fails here even when it stays
    # within them. On the device, bundles since 2.3; None at build time.
    own_cosine: Optional[float] = None
    own_min_cosine: Optional[float] = None
    own_max_abs_diff: Optional[float] = None
    own_tolerance: Optional[float] = None
    same_kernels: Optional[bool] = None  # this machine runs the build host's kernels
    sqnr_db: Optional[float] = None  # signal-to-quantization-noise ratio vs PyTorch
    # Schema 2.1, at build time: the other sizes of the dynamic dims checked too (e.g.
    # "seq=1"); the bounds and `cosine` (the lowest of the sizes' means) cover them.
    sizes: tuple[str, ...] = ()
    backend: Optional[str] = None  # what ran it: "onnxruntime 1.19.2"
    host: Optional[dict[str, Any]] = None  # the build host: arch, cpu, isa (None on the device itself)
    host_matches_target: Optional[bool] = None  # the build host runs the target's kernels
    # Under emulation: the largest difference from this machine's outputs of the same
    # artifact, and the fidelity to PyTorch on eval samples (integer artifacts, with eval
    # data), as manifest.json holds an Accuracy.
    diff_vs_host: Optional[float] = None
    accuracy: Optional[dict[str, Any]] = None
    error: Optional[str] = None  # why it failed without figures: it did not run (under emulation)

    @property
    def passed(self) -> bool:
        return self.result == PASSED

    @property
    def tested(self) -> bool:
        """It ran here (or failed to): passed or failed, not skipped."""
        return self.result in (PASSED, FAILED)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (verify --json, the emulated report, the emulator guest's answer): every
        field, and `passed`. A figure that is not finite is null: JSON has no NaN, and NaN
        outputs are what the self-test exists to catch (`result` says failed)."""
        data = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"artifact": data.pop("artifact"), "result": data.pop("result"), "passed": self.passed, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        """The verdict `to_dict()` wrote (raises typed.Problem on anything else)."""
        fields = {k: v for k, v in data.items() if k != "passed"}  # derived from `result`
        verdict: Verdict = from_data(cls, fields, "verdict", check=_check_result)
        return verdict

    def to_record(self) -> dict[str, Any]:
        """The build's verdict as the manifest records it (artifacts[].validation, RECORD)."""
        data = dataclasses.asdict(self)
        data["passed"] = self.passed
        return {key: data[key] for key in RECORD}


# What manifests record of the build's verdict, as every schema so far spelled it: the
# artifact's name is the artifact's own, `passed` (true/false) stands for `result` (the
# build judges every artifact it keeps), and the figures the build does not measure are
# the device's. A manifest that records `validation` has the first seven (schema 1), never null.
RECORD = ("passed", "max_abs_diff", "tolerance", "samples", "backend", "host", "host_matches_target",
          "cosine", "min_cosine", "sqnr_db", "sizes")
RECORD_REQUIRED = RECORD[:7]


def record_fields(record: Any, artifact: Any, where: str, tolerate_unknown: bool) -> Any:
    """The Verdict fields of a manifest's `record` (Verdict.to_record's inverse), for
    typed.from_data to check and build; a record that is not a table, as it is (from_data
    refuses it). Unknown keys raise typed.Problem, or are dropped with `tolerate_unknown`
    (a newer minor's additions)."""
    if not isinstance(record, dict):
        return record
    unknown = [k for k in record if k not in RECORD]
    if unknown and not tolerate_unknown:
        raise Problem(where, f"has unknown key {str(unknown[0])[:40]!r}; {did_you_mean(unknown[0], RECORD)}".rstrip())
    missing = [k for k in RECORD_REQUIRED if k not in record]
    if missing:
        raise Problem(where, f"is missing {', '.join(missing)}")
    empty = next((k for k in RECORD_REQUIRED if record[k] is None), None)
    if empty is not None:  # the build measures these for every artifact it judges
        raise Problem(f"{where}.{empty}", "must not be null")
    if not isinstance(record["passed"], bool):
        raise Problem(f"{where}.passed", f"must be true or false, not {type(record['passed']).__name__}")
    figures = {k: v for k, v in record.items() if k in RECORD and k != "passed"}
    return {"artifact": artifact if isinstance(artifact, str) else "",
            "result": PASSED if record["passed"] else FAILED, **figures}


def figure_text(value: Optional[float], spec: str) -> str:
    """A verdict's figure for a table: "nan" where it is not a number (to_dict's null)."""
    return "nan" if value is None else format(value, spec)


def _check_result(obj: Any, where: str) -> None:
    if isinstance(obj, Verdict) and obj.result not in RESULTS:
        raise Problem(f"{where}.result", f"is {obj.result[:20]!r}, not one of {', '.join(RESULTS)}")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple):
        return list(value)
    return value
