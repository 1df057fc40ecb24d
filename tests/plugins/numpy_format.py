"""A whole artifact format in one file, as docs/extending.md walks through: "numpy", an
MLP (Flatten, Linear, ReLU) saved as two files, an .npz of weights and a .layers.json
naming the layers, and run by numpy on the device.

Both halves live here because it is a test; a real plugin ships the packager half in one
distribution (entry point "edgepack.formats") and the backend in one the device installs
(entry point "edgepack_runtime.backends"). Registered in-process by `register()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.formats import MULTI_FILE, ExportFormat

NAME = "numpy"


# --- the packager half --------------------------------------------------------------------

@dataclass(frozen=True)
class NumpySettings:
    """The profile's [numpy] table."""

    precisions: tuple[str, ...]

    def check(self, where: str) -> None:
        pass  # nothing beyond its types and precisions


class NumpyFormat(ExportFormat):
    name = NAME
    capabilities = frozenset({MULTI_FILE})  # companions(): the .layers.json
    suffix = ".npz"
    precisions = ("fp32",)
    settings_class = NumpySettings
    runtime_extra = ""  # numpy is already a dependency of edgepack-runtime
    emulation_wheels = ()

    def export(self, module, inputs, output_names, target, out: Path) -> None:
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

    def companions(self, path: Path) -> list[Path]:
        return [path.with_suffix(".layers.json")]

    def layout(self, target):
        return None

    def recipes(self, target, precision: str) -> list[dict]:
        return [{}]

    def quantize(self, fp32, out, target, precision, calibration, recipe) -> dict:
        from edgepack.errors import BuildError

        raise BuildError("the numpy format builds fp32 only")

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
        x = feeds[self._input].astype(np.float32)
        for kind, i in self._layers:
            if kind == "linear":
                x = x @ self._arrays[f"w{i}"] + self._arrays[f"b{i}"]
            elif kind == "relu":
                x = np.maximum(x, 0)
            else:
                x = x.reshape(len(x), -1)
        return {self._output: x}


def open_session(path, threads, input_names, output_names) -> NumpySession:
    return NumpySession(path, threads, input_names, output_names)


def register() -> None:
    from edgepack.formats import register as register_format
    from edgepack_runtime.backends import register_backend

    register_format(NumpyFormat())
    register_backend(NAME, __name__)
