"""Check artifacts against PyTorch through the runtime's own backends.

Parity: max |artifact − PyTorch| over the golden inputs must stay within
`atol + rtol · max|PyTorch|` for the artifact's precision. Accuracy: top-1 on
labelled eval data for PyTorch and each artifact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from edgepack_runtime.backends import open_session
from edgepack_runtime.hostinfo import HostInfo
from edgepack_runtime.manifest import Accuracy, TensorSpec, Validation
from edgepack_runtime.parity import max_abs_diff, parity_samples, run_samples, top1_accuracy

from .errors import ModelSourceError
from .targets import TargetProfile

__all__ = ["TOLERANCES", "References", "torch_references", "tolerance_for", "validate_artifact"]

# (atol, rtol) per precision. fp32 differs from PyTorch only by kernel summation
# order. int8 keeps ~256 levels per tensor: an error of a few percent of the output
# range is normal, a larger one means a broken graph or a bad preset.
# fp16 weights carry ~3 significant digits. dynamic-int8 quantizes activations per
# inference, about as coarse as static int8.
TOLERANCES = {"fp32": (1e-4, 1e-4), "fp16": (1e-3, 1e-2), "int8": (0.05, 0.1), "dynamic-int8": (0.05, 0.1)}


def torch_outputs(module: torch.nn.Module, specs: Sequence[TensorSpec],
                  samples: dict[str, np.ndarray]) -> tuple[tuple[TensorSpec, ...], dict[str, np.ndarray]]:
    """PyTorch's outputs on `samples`, one sample at a time, with the output specs.

    Outputs are named `output` (one tensor) or `output_0`, `output_1`, … (a tuple).
    """
    def run(feed):
        with torch.no_grad():
            result = module(*(torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in specs))
        if isinstance(result, torch.Tensor):
            return {"output": result.numpy()}
        if isinstance(result, (tuple, list)) and all(isinstance(r, torch.Tensor) for r in result):
            return {f"output_{i}": r.numpy() for i, r in enumerate(result)}
        raise ModelSourceError(
            f"the model returned {type(result).__name__}; edgepack exports models that return a tensor or a tuple of tensors"
        )

    outputs = run_samples(run, samples)
    specs_out = tuple(TensorSpec(name=n, shape=tuple(v.shape[1:]), dtype=str(v.dtype)) for n, v in outputs.items())
    return specs_out, outputs


@dataclass(frozen=True)
class References:
    """What every artifact is checked against: PyTorch's outputs on the golden inputs
    (the first `real_samples` from calibration data) and, with eval data, its top-1."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    golden_inputs: dict[str, np.ndarray]
    golden_outputs: dict[str, np.ndarray]
    real_samples: int
    evaluation: Optional[tuple[dict[str, np.ndarray], np.ndarray]] = None  # (inputs, labels)
    top1: Optional[float] = None


def torch_references(module: torch.nn.Module, specs: tuple[TensorSpec, ...], golden: dict[str, np.ndarray],
                     real_samples: int, evaluation=None) -> References:
    output_specs, golden_outputs = torch_outputs(module, specs, golden)
    top1 = None
    if evaluation is not None:
        _, eval_outputs = torch_outputs(module, specs, evaluation[0])
        top1 = top1_accuracy(next(iter(eval_outputs.values())), evaluation[1])
    return References(specs, output_specs, golden, golden_outputs, real_samples, evaluation, top1)


def tolerance_for(precision: str, reference: dict[str, np.ndarray]) -> float:
    atol, rtol = TOLERANCES[precision]
    scale = max(float(np.max(np.abs(v))) for v in reference.values())
    return atol + rtol * scale


def validate_artifact(fmt: str, precision: str, path, layout: Optional[str], target: TargetProfile,
                      host: HostInfo, refs: References) -> tuple[Validation, Optional[Accuracy]]:
    """Run one artifact on the golden inputs (and eval data) with the runtime backend."""
    threads = max(1, min(target.threads, os.cpu_count() or 1))
    session = open_session(fmt, path, threads, [s.name for s in refs.inputs], [s.name for s in refs.outputs], layout)
    golden_inputs, reference = parity_samples(precision, refs.golden_inputs, refs.golden_outputs, refs.real_samples)
    diff = max_abs_diff(run_samples(session.run, golden_inputs), reference)
    tolerance = tolerance_for(precision, reference)
    matches = target.matches_host(host, fmt, precision)
    validation = Validation(
        passed=diff <= tolerance,
        max_abs_diff=diff,
        tolerance=tolerance,
        samples=len(next(iter(golden_inputs.values()))),
        backend=f"{session.backend} {session.backend_version}",
        host={"arch": host.arch, "cpu": host.cpu, "isa": list(host.isa)},
        host_matches_target=matches,
    )
    accuracy = None
    if refs.evaluation is not None:
        inputs, labels = refs.evaluation
        logits = next(iter(run_samples(session.run, inputs).values()))
        accuracy = Accuracy(
            top1=top1_accuracy(logits, labels),
            reference_top1=refs.top1,
            samples=len(labels),
            indicative=not matches,
        )
    return validation, accuracy
