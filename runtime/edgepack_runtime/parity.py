"""Compare a model's outputs with reference outputs, and measure top-1 accuracy.

The packager validates artifacts with these functions at build time and
`edgepack-runtime verify` repeats the same check on the device: what was validated
is what ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

__all__ = ["SelfTest", "split_samples", "run_samples", "max_abs_diff", "top1_accuracy", "self_test", "parity_samples",
           "INTEGER_PRECISIONS"]

# Precisions whose activations are quantized with ranges calibrated on real data.
INTEGER_PRECISIONS = ("int8",)

RunFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def split_samples(inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Stacked samples ([N, *input_shape] per input) → N feeds of one sample each."""
    count = len(next(iter(inputs.values())))
    return [{k: v[i] for k, v in inputs.items()} for i in range(count)]


def run_samples(run: RunFn, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed stacked samples one at a time; stack the outputs."""
    collected: dict[str, list[np.ndarray]] = {}
    for feed in split_samples(inputs):
        for name, value in run(feed).items():
            collected.setdefault(name, []).append(np.asarray(value))
    return {name: np.stack(values) for name, values in collected.items()}


def max_abs_diff(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """Largest absolute difference over every output element."""
    return max(
        float(np.max(np.abs(outputs[name].astype(np.float64) - ref.astype(np.float64))))
        for name, ref in reference.items()
    )


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Percent of samples whose arg-max over the last axis equals the label."""
    predicted = logits.reshape(len(labels), -1).argmax(axis=1)
    return float(np.mean(predicted == labels) * 100.0)


def parity_samples(precision: str, inputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                   real_samples: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The golden samples an artifact of `precision` is compared on (see manifest.Golden)."""
    if precision in INTEGER_PRECISIONS and real_samples > 0:
        return ({k: v[:real_samples] for k, v in inputs.items()},
                {k: v[:real_samples] for k, v in reference.items()})
    return dict(inputs), dict(reference)


@dataclass(frozen=True)
class SelfTest:
    artifact: str
    passed: bool
    max_abs_diff: float
    tolerance: float
    samples: int


def self_test(model) -> SelfTest:
    """Run the bundle's golden inputs through `model` and compare with PyTorch's outputs
    using the tolerance recorded for this artifact at build time."""
    inputs, reference = parity_samples(model.artifact.precision, *model.bundle.golden(),
                                       model.bundle.manifest.golden.real_samples)
    outputs = run_samples(model.run, inputs)
    diff = max_abs_diff(outputs, reference)
    validation = model.artifact.validation
    tolerance = validation.tolerance if validation else 0.0
    return SelfTest(
        artifact=model.artifact.name,
        passed=diff <= tolerance,
        max_abs_diff=diff,
        tolerance=tolerance,
        samples=len(next(iter(inputs.values()))),
    )
