"""Output-relative validation, the accuracy budget and the recipe search."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import edgepack
import edgepack_runtime
from edgepack.budget import Budget, measure
from edgepack.pipeline import BuildFailed
from edgepack.targets import load_target
from edgepack.validate import SPEED_TIE, clearly_faster, torch_references, validate_artifact
from edgepack_runtime.hostinfo import HostInfo, host_info
from edgepack_runtime.manifest import TensorSpec
from edgepack_runtime.model import choose_artifact
from edgepack_runtime.parity import fidelity, max_abs_diff

TINY_SCALE = 1e-20  # outputs around 1e-20: any absolute tolerance passes them


class _Scaled(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(x) * TINY_SCALE


def test_fidelity_scales_with_the_outputs():
    ref = {"output": np.random.default_rng(0).standard_normal((8, 10)) * TINY_SCALE}
    same = fidelity({"output": ref["output"] * (1 + 1e-6)}, ref)
    assert same.cosine > 0.9999 and same.top1_agreement == 100.0 and same.max_rel_error < 1e-5
    wrong = fidelity({"output": -ref["output"]}, ref)
    assert wrong.cosine < -0.99 and wrong.top1_agreement < 50 and wrong.sqnr_db < 0


def test_fidelity_treats_each_samples_outputs_as_one_row():
    """Computed a sample at a time (a detector's evaluation set in float64 is GBs), as if
    every output of a sample were one row: its cosine, the SQNR over all, the worst error
    relative to the reference's range, and the arg-max of the first output."""
    rng = np.random.default_rng(3)
    ref = {"boxes": rng.standard_normal((6, 3)), "scores": rng.standard_normal((6, 2, 4)).astype(np.float32)}
    out = {"boxes": ref["boxes"] + rng.standard_normal((6, 3)), "scores": -ref["scores"]}
    rows = [np.concatenate([v.reshape(6, -1).astype(np.float64) for v in d.values()], axis=1) for d in (out, ref)]
    noise = rows[0] - rows[1]
    cosines = np.sum(rows[0] * rows[1], axis=1) / np.linalg.norm(rows[0], axis=1) / np.linalg.norm(rows[1], axis=1)
    got = fidelity(out, ref)
    assert got.cosine == pytest.approx(cosines.mean()) and got.cosine_min == pytest.approx(cosines.min())
    assert got.sqnr_db == pytest.approx(10 * np.log10(np.sum(rows[1] ** 2) / np.sum(noise ** 2)))
    assert got.max_rel_error == pytest.approx(np.abs(noise).max() / (rows[1].max() - rows[1].min()))
    assert got.top1_agreement == pytest.approx(100 * np.mean(out["boxes"].argmax(1) == ref["boxes"].argmax(1)))
    assert got.samples == 6 and max_abs_diff(out, ref) == pytest.approx(np.abs(noise).max())


def test_a_broken_artifact_of_a_tiny_output_model_fails(tmp_path):
    """A model whose outputs are ~1e-20 with an artifact of other weights: its error (~1e-20)
    is far below any absolute tolerance, the old check passed it; cosine catches it."""
    spec = (TensorSpec("x", (1, 16), "float32"),)
    samples = {"x": np.random.default_rng(1).standard_normal((16, 1, 16)).astype(np.float32)}
    right, wrong = _Scaled(seed=0).eval(), _Scaled(seed=1).eval()
    refs = torch_references(right, spec, samples, 16, ({"x": samples["x"][:8]}, None, "eval"))
    budget = Budget(max_top1_drop=1.0, min_cosine=0.99)
    profile, host = load_target("host"), host_info()
    for module, should_pass in ((right, True), (wrong, False)):
        path = tmp_path / f"{should_pass}.onnx"
        torch.onnx.export(module, (torch.zeros(1, 16),), dynamo=True, input_names=["x"],
                          output_names=["output"]).save(str(path), external_data=False)
        for precision in ("fp32", "int8"):
            validation, accuracy, _ = validate_artifact("onnx", precision, path, None, profile, host, refs, budget)
            assert validation.max_abs_diff < 1e-18  # "passes" any absolute tolerance
            assert validation.passed is should_pass, (precision, validation)
            assert accuracy.within_budget is should_pass


def test_the_budget_judges_each_task_by_its_own_figures():
    from edgepack_runtime.manifest import Accuracy, DetectionSettings, Postprocessing

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((40, 10)).astype(np.float32)
    swapped = logits.copy()
    swapped[:8] = -swapped[:8]  # 8 of 40 answers change; the logits' direction mostly holds
    classify = Budget(max_top1_drop=1.0, min_cosine=0.99, min_agreement=85.0, task="classify")
    accuracy = measure({"output": swapped}, {"output": logits}, classify, labels=None, reference_top1=None,
                       data="eval", measured_on="here", indicative=False)
    agreement = accuracy.metric("top1_agreement")
    assert agreement.value == 80.0 and agreement.low < 80.0 < agreement.high and agreement.samples == 40
    assert not accuracy.within_budget and "needs ≥ 85%" in agreement.describe()
    assert Budget(max_top1_drop=1.0, min_cosine=0.99, min_agreement=75.0, task="classify").met(accuracy)
    # A model with two outputs, one large and one small: the small one destroyed, the whole
    # output's cosine still near 1; the generic task judges each output on its own.
    big = rng.uniform(100, 600, (10, 4, 50)).astype(np.float32)
    small = rng.uniform(0, 1, (10, 3, 50)).astype(np.float32)
    generic = Budget(max_top1_drop=1.0, min_cosine=0.99)
    judged = measure({"output_0": big, "output_1": np.zeros_like(small)}, {"output_0": big, "output_1": small},
                     generic, labels=None, reference_top1=None, data="eval", measured_on="here", indicative=False)
    assert judged.cosine > 0.99 and not judged.within_budget
    assert [m.name for m in judged.metrics] == ["cosine:output_0", "cosine:output_1"]
    # A detector: scores zeroed, boxes intact.
    head = np.concatenate([big, small * 0.9 + 0.1], axis=1)[:, None]  # [N, 1, 4 + 3, 50]
    dead = head.copy()
    dead[:, :, 4:] = 0
    detect = Budget(max_top1_drop=1.0, min_cosine=0.99, task="detect",
                    answer=Postprocessing(output="output", kind="detections", detection=DetectionSettings()))
    judged = measure({"output": dead}, {"output": head}, detect, labels=None, reference_top1=None, data="eval",
                     measured_on="here", indicative=False)
    assert judged.cosine > 0.99 and judged.metric("f1").value == 0.0 and not judged.within_budget
    same = measure({"output": head}, {"output": head}, detect, labels=None, reference_top1=None, data="eval",
                   measured_on="here", indicative=False)
    assert same.metric("f1").value == 1.0 and same.metric("map50").value == 1.0 and same.within_budget
    # Labels: top-1 points lost count whatever the task.
    assert not classify.met(Accuracy(samples=10, indicative=False, cosine=0.995, top1=80.0, reference_top1=82.0))


def test_avx2_int8_on_a_vnni_host_is_not_the_targets_kernels():
    avx2 = load_target("x86-64/avx2")
    vnni_host = HostInfo("x86_64", "Xeon", 2, ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"))
    avx2_host = HostInfo("x86_64", "Haswell", 4, ("avx", "avx2", "fma"))
    assert not avx2.matches_host(vnni_host, "onnx", "int8")  # VNNI kernels would run, not AVX2's
    assert avx2.matches_host(vnni_host, "onnx", "fp32")
    assert avx2.matches_host(avx2_host, "onnx", "int8")
    assert load_target("x86-64/avx512-vnni").matches_host(vnni_host, "onnx", "int8")


def test_search_keeps_the_fastest_within_budget_and_records_the_trail(digits_bundle):
    manifest = edgepack_runtime.open_bundle(digits_bundle).manifest
    int8 = manifest.artifact("onnx-int8")
    trail = int8.quantization.search
    assert len(trail) >= 1 and sum(t["chosen"] for t in trail) == 1
    chosen = next(t for t in trail if t["chosen"])
    assert chosen["within_budget"] and chosen["p50_ms"] > 0
    contenders = [t for t in trail if t["within_budget"]]
    fastest = min(t["p50_ms"] for t in contenders)
    for t in contenders:  # a more faithful contender (closeness.py) lost only by being clearly slower
        assert t["answer_error"] >= chosen["answer_error"] or t["p50_ms"] > fastest * (1 + SPEED_TIE), t
    assert int8.accuracy.within_budget and int8.accuracy.cosine >= manifest.min_cosine
    # each half of the 360 eval digits chose a candidate that the other half confirmed
    assert chosen["selection"]["samples"] == 360 and int8.accuracy.split == "confirmation"
    assert int8.accuracy.samples == 360
    assert chosen["confirmation"]["value"] == int8.accuracy.metric("top1_agreement").value
    assert sorted(h for t in trail for h in t.get("chosen_by", ())) == ["even", "odd"]


def test_a_speed_up_must_beat_the_noise_of_interleaved_rounds():
    def latency(*rounds):
        return {"p50_ms": float(np.median(rounds)), "rounds_ms": list(rounds)}

    same = latency(1.0, 1.1, 0.9, 1.0, 1.2, 0.9, 1.0, 1.1)
    assert not clearly_faster(same, same)
    # A lower median, but it lost half the rounds.
    assert not clearly_faster(latency(0.5, 0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0), same)
    assert not clearly_faster(latency(*(0.95 * t for t in same["rounds_ms"])), same)  # within SPEED_TIE
    assert clearly_faster(latency(0.6, 0.7, 0.6, 0.65, 1.3, 0.6, 0.7, 0.6), same)  # one noisy round is forgiven
    assert not clearly_faster(same, latency(0.6, 0.7, 0.6, 0.65, 1.3, 0.6, 0.7, 0.6))


def test_default_is_the_fastest_accurate_artifact_measured_at_build(digits_bundle):
    bundle = edgepack_runtime.open_bundle(digits_bundle)
    measured = [a for a in bundle.manifest.artifacts if a.latency and a.latency.matches_target]
    assert len(measured) == len(bundle.manifest.artifacts)  # the host target: every kernel is this host's
    assert choose_artifact(bundle).name == min(measured, key=lambda a: a.latency.p50_ms).name


@pytest.mark.slow  # a whole int8 search that fails, mixed precision included
def test_a_budget_that_cannot_be_met_names_the_closest_candidate(build_digits, tmp_path):
    with pytest.raises(BuildFailed, match=r"onnx-int8 misses the accuracy budget on 360 eval confirmation samples: "
                                          r"cos 0\.9\d+ \[.*n=360\] \(needs ≥ 0\.999999\)") as failed:
        build_digits("host", name="impossible", formats=["onnx"], precisions=["fp32", "int8"], task="generic",
                     min_cosine=0.999999)
    assert failed.value.result.path is None


def test_allow_partial_leaves_out_what_misses_the_budget(build_digits):
    result = build_digits("host", name="partial", formats=["onnx"], precisions=["fp32", "int8"], task="generic",
                          min_cosine=0.999999, allow_partial=True)
    int8 = result.manifest.artifact("onnx-int8")
    assert int8.status == "rejected" and "misses the accuracy budget" in int8.error
    assert not (result.path / "model.int8.onnx").exists()
    assert json.loads((result.path / "manifest.json").read_text())["artifacts"][1]["status"] == "rejected"
    assert edgepack_runtime.load(result.path).artifact.name == "onnx-fp32"


def test_a_plain_build_leaves_out_the_profiles_precisions_that_miss(build_digits):
    """No --precisions: what the profile chose and misses is left out, the build ships the
    rest and says why; --strict makes those precisions required again."""
    result = build_digits("host", name="plain", formats=["onnx"], task="generic", min_cosine=0.999999)
    int8 = result.manifest.artifact("onnx-int8")
    assert result.path is not None and int8.status == "rejected" and "closest of" in int8.error
    assert result.manifest.artifact("onnx-fp32").status == "ok"
    with pytest.raises(BuildFailed, match="onnx-int8 misses the accuracy budget"):
        build_digits("host", name="strict", formats=["onnx"], task="generic", min_cosine=0.999999, strict=True)


def test_without_eval_int8_is_judged_cross_fitted_on_the_calibration_samples(tiny_model, tmp_path):
    """Each of the 16 calibration samples is judged by the recipe calibrated without its fold
    (4 folds); the choice made on folds 0 and 2 is confirmed on 1 and 3 and the other way
    round, and the artifact that ships is calibrated on all 16."""
    result = edgepack.build(f"{tiny_model}:create", tmp_path / "b", "host", formats=["onnx"],
                            calibration=tiny_model.parent / "calib.npz")
    int8 = result.manifest.artifact("onnx-int8")
    assert int8.accuracy.data == "cross-fitted calibration" and int8.accuracy.split == "confirmation"
    assert int8.accuracy.samples == 16 and int8.quantization.calibration_samples == 16
    chosen = next(t for t in int8.quantization.search if t.get("chosen"))
    assert chosen["selection"]["samples"] == 16 and chosen["confirmation"]["samples"] == 16
    assert result.manifest.artifact("onnx-fp32").accuracy.samples == 16  # nothing was chosen on them


def test_prefer_accuracy_ships_the_most_faithful_candidate(build_digits):
    """--prefer accuracy: of the candidates within budget, the lowest answer error ships,
    whatever its speed; its figures are still the halves' crossed-over confirmation."""
    result = build_digits("host", name="faithful", formats=["onnx"], precisions=["fp32", "int8"], prefer="accuracy")
    int8 = result.manifest.artifact("onnx-int8")
    trail = [t for t in int8.quantization.search if "recipe" in t]
    chosen = next(t for t in trail if t["chosen"])
    assert chosen["answer_error"] == min(t["answer_error"] for t in trail if t["within_budget"])
    assert int8.accuracy.split == "confirmation" and int8.status == "ok"
