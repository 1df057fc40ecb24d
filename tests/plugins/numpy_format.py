"""A whole artifact format in one file, as docs/extending.md walks through: "numpy", an
MLP (Flatten, Linear, ReLU) saved as two files, an .npz of weights and a .layers.json
naming the layers, and run by numpy on the device. Its int8 keeps int8 weights and
calibrated activation ranges (run as int8 values scaled back to float), and keeps float the
ops its QuantPlan names: the export returns its op graph, and the build's search does the
rest.

Both halves live here because it is a test; a real plugin ships the packager half in one
distribution (entry point "edgepack.formats") and the backend in one the device installs
(entry point "edgepack_runtime.backends"). Registered in-process by `register()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.formats import MULTI_FILE, Exported, ExportFormat, OpGraph, QuantPlan, QuantResult, Recipe

NAME = "numpy"
INT8_LEVELS = 127  # symmetric int8: -127..127


# --- the packager half --------------------------------------------------------------------

@dataclass(frozen=True)
class NumpyInt8:
    """The profile's [numpy.int8] table: the ISA features its int8 relies on (numpy's: none)."""

    relies_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class NumpySettings:
    """The profile's [numpy] table."""

    precisions: tuple[str, ...]
    int8: NumpyInt8 = NumpyInt8()

    def check(self, where: str) -> None:
        pass  # nothing beyond its types and precisions


def _run(arrays: dict, layers: list, x: np.ndarray, seen=None) -> np.ndarray:  # both halves run it
    """The MLP on `x` (the batch first); `seen(i, x)` is told each linear layer's input."""
    for kind, i in layers:
        if kind in ("linear", "linear_int8") and seen is not None:
            seen(i, x)
        if kind == "linear":
            x = x @ arrays[f"w{i}"] + arrays[f"b{i}"]
        elif kind == "linear_int8":  # int8 activations and weights, scaled back to float
            step = arrays[f"as{i}"]
            x = np.clip(np.round(x / step), -INT8_LEVELS, INT8_LEVELS) * step
            x = x @ (arrays[f"q{i}"].astype(np.float32) * arrays[f"ws{i}"]) + arrays[f"b{i}"]
        elif kind == "relu":
            x = np.maximum(x, 0)
        else:
            x = x.reshape(len(x), -1)
    return x.astype(np.float32)


class NumpyFormat(ExportFormat):
    name = NAME
    capabilities = frozenset({MULTI_FILE})  # companions(): the .layers.json
    suffix = ".npz"
    precisions = ("fp32", "int8")
    settings_class = NumpySettings
    runtime_extra = ""  # numpy is already a dependency of edgepack-runtime
    emulation_wheels = ()

    def export(self, module, inputs, output_names, target, out: Path) -> Exported:
        import torch

        from edgepack.errors import BuildError

        layers, arrays = [], {}
        for i, layer in enumerate(module.modules()):
            if isinstance(layer, torch.nn.Sequential):
                continue
            if isinstance(layer, torch.nn.Linear):
                arrays[f"w{i}"] = layer.weight.detach().numpy().T.copy()
                arrays[f"b{i}"] = layer.bias.detach().numpy()
                layers.append(["linear", i])
            elif isinstance(layer, (torch.nn.ReLU, torch.nn.Flatten)):
                layers.append([type(layer).__name__.lower(), i])
            else:
                raise BuildError(f"the numpy format exports Linear, ReLU and Flatten only, not {type(layer).__name__}")
        with open(out, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez(f, **arrays)
        self.companions(out)[0].write_text(json.dumps(layers))
        # The op graph: each layer reads the tensor the one before it wrote.
        return Exported(out, OpGraph.of((f"{kind}{i}", [f"t{n}"], [f"t{n + 1}"], kind == "linear")
                                        for n, (kind, i) in enumerate(layers)))

    def companions(self, path: Path) -> list[Path]:
        return [path.with_suffix(".layers.json")]

    def layout(self, target):
        return None

    def recipes(self, target, precision) -> list[Recipe]:
        return [Recipe()]

    def quantize(self, exported: Exported, out: Path, target, plan: QuantPlan, calibration) -> QuantResult:
        from edgepack.errors import BuildError

        if not (plan.precision.integer and plan.precision.calibrated):
            raise BuildError(f"the numpy format builds fp32 and int8, not {plan.precision.name}")
        with np.load(exported.path) as data:
            arrays = {k: data[k] for k in data.files}
        layers = json.loads(self.companions(exported.path)[0].read_text())
        (samples,) = calibration.values()
        ranges: dict[int, float] = {}
        _run(arrays, layers, samples.reshape(-1, *samples.shape[2:]),
             seen=lambda i, x: ranges.__setitem__(i, float(np.abs(x).max())))
        for n, (kind, i) in enumerate(layers):
            if kind == "linear" and f"{kind}{i}" not in plan.float_ops:
                weights = arrays.pop(f"w{i}")
                arrays[f"ws{i}"] = np.float32(max(float(np.abs(weights).max()), 1e-12) / INT8_LEVELS)
                arrays[f"q{i}"] = np.round(weights / arrays[f"ws{i}"]).astype(np.int8)
                arrays[f"as{i}"] = np.float32(max(ranges[i], 1e-12) / INT8_LEVELS)
                layers[n] = ["linear_int8", i]
        with open(out, "wb") as f:
            np.savez(f, **arrays)
        self.companions(out)[0].write_text(json.dumps(layers))
        assert exported.graph is not None  # this format's export always reads one
        return QuantResult("numpy", plan.recipe, exported.graph.in_order(plan.float_ops))

    def toolchain(self) -> dict[str, str]:
        return {"numpy": np.__version__}


# --- the runtime half ---------------------------------------------------------------------

SESSION_API = 1  # the version of edgepack_runtime.backends.Session this backend implements

def available() -> bool:
    return True


class NumpySession:
    backend = "numpy"
    backend_version = np.__version__
    delegate = None

    def __init__(self, path, threads: int, input_names, output_names):
        from edgepack_runtime.errors import BundleError

        try:
            with np.load(path, allow_pickle=False) as data:
                self._arrays = {k: data[k] for k in data.files}
            self._layers = json.loads(Path(path).with_suffix(".layers.json").read_text())
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{path} is not a numpy-format artifact ({exc}); rebuild the bundle") from None
        self.threads = threads
        (self._input,), (self._output,) = input_names, output_names

    def native_dtypes(self):
        return {}

    def quantization(self):
        return {}

    def fixed_shapes(self):
        return None

    def run(self, feeds, raw: bool = False):
        return {self._output: _run(self._arrays, self._layers, feeds[self._input].astype(np.float32))}


def open_session(path, threads, input_names, output_names) -> NumpySession:
    return NumpySession(path, threads, input_names, output_names)


def register() -> None:
    from edgepack.formats import register as register_format
    from edgepack_runtime.backends import register_backend

    register_format(NumpyFormat())
    register_backend(NAME, __name__)
