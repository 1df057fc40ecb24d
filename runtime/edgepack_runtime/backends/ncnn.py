"""ncnn artifacts: a `.param` graph, its `.bin` weights and the build's `.ncnn.json` runtime
options, run on ncnn's CPU path (Vulkan off: the devices we target have no usable GPU).

ncnn's Mat holds one sample (CHW, no batch axis), so a batch runs one sample at a time and
the results are stacked back. Any input size the graph's layers take runs as is (pnnx
exports dynamic dims, and convolutions never had fixed sizes), so `fixed_shapes()` is None.

Options, from the artifact's `.ncnn.json` unless overridden by the environment:
- fp16 (`EDGEPACK_NCNN_FP16=0|1`): fp16 storage and packing (weights and activations
  kept in fp16). Off for fp32 artifacts, which then compute in fp32 on every CPU; ncnn's
  own default is on, which on a Pi 5 would run fp16 on an artifact validated in fp32.
- fp16 arithmetic (`EDGEPACK_NCNN_FP16_ARITHMETIC=0|1`), with fp16 on: also compute in
  fp16 where the CPU can (ARMv8.2 asimdhp). The artifact says whether (its profile's
  `fp16_arithmetic`): on an emulated Cortex-A76 it cost MobileNetV2 6 % top-1 agreement.
- light mode (`EDGEPACK_NCNN_LIGHTMODE=0|1`): free each intermediate blob after its last
  reader (lower peak memory).

Threads wait passively (`OMP_WAIT_POLICY=PASSIVE` for the OpenMP runtime ncnn's wheel
bundles, unless the environment sets OMP_WAIT_POLICY or GOMP_SPINCOUNT): with libgomp's
default spinning, a MobileNetV2 at 2 threads took 1,091 ms per call on a 2-core host busy
with other work, 11.3 ms passive (10.5 ms at 1 thread); a device also runs its camera and
app threads. A dedicated board may gain a little with OMP_WAIT_POLICY=ACTIVE.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError, BundleError, InferenceError, InputError, mapped

__all__ = ["NcnnSession", "open_session", "available", "import_ncnn", "passive_openmp", "weights_path",
           "options_path", "WEIGHTS_SUFFIX", "OPTIONS_SUFFIX", "FP16_ENV", "FP16_ARITHMETIC_ENV", "LIGHTMODE_ENV",
           "OMP_ENV", "OMP_USER_KNOBS"]

WEIGHTS_SUFFIX = ".bin"
OPTIONS_SUFFIX = ".ncnn.json"
FP16_ENV = "EDGEPACK_NCNN_FP16"
FP16_ARITHMETIC_ENV = "EDGEPACK_NCNN_FP16_ARITHMETIC"
LIGHTMODE_ENV = "EDGEPACK_NCNN_LIGHTMODE"
# libgomp reads these once, when ncnn's bundled copy loads: set before the first `import ncnn`.
OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
OMP_USER_KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_SWITCH = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}
# pnnx names the graph's inputs in0, in1, … and its outputs out0, out1, … in positional order.
_POSITION = re.compile(r"(\d+)$")


def weights_path(param: Path) -> Path:
    """The `.bin` that goes with a `.param`: `model.fp16.param` -> `model.fp16.bin`."""
    return Path(param).with_suffix(WEIGHTS_SUFFIX)


def options_path(param: Path) -> Path:
    """The runtime options the build chose: `model.fp16.param` -> `model.fp16.ncnn.json`."""
    return Path(param).with_suffix(OPTIONS_SUFFIX)


def passive_openmp() -> None:
    """Make OpenMP threads wait passively unless the environment chose already. Effective
    only before the process loads its first libgomp: a process that imports torch first gets
    torch's (loaded RTLD_GLOBAL, so ncnn's OpenMP calls go to it too)."""
    if not any(knob in os.environ for knob in OMP_USER_KNOBS):
        os.environ.update(OMP_ENV)


def import_ncnn() -> Any:  # the ncnn module
    """The ncnn module, its OpenMP threads set to wait passively unless the user chose."""
    passive_openmp()
    import ncnn

    return ncnn


def available() -> bool:
    return importlib.util.find_spec("ncnn") is not None


def _switch(env: str, default: bool) -> bool:
    value = os.environ.get(env, "").strip().lower()
    if not value:
        return default
    if value not in _SWITCH:
        raise InputError(f"{env}={value!r} is neither on nor off; set it to 1 or 0, or unset it")
    return _SWITCH[value]


def _options(param: Path) -> dict[str, Any]:
    """The artifact's options; a pair of files without one (made by hand) runs in fp32."""
    path = options_path(param)
    if not path.is_file():
        return {"fp16": False, "fp16_arithmetic": False, "lightmode": True}
    with mapped(BundleError, f"{path} is not an ncnn options file", "rebuild the bundle",
                catch=(OSError, ValueError, KeyError, TypeError)):
        options = json.loads(path.read_text())
        return {"fp16": bool(options["fp16"]), "fp16_arithmetic": bool(options.get("fp16_arithmetic", False)),
                "lightmode": bool(options.get("lightmode", True))}


def _by_position(blobs: Sequence[str], wanted: Sequence[str], what: str, path: Path) -> list[tuple[str, str]]:
    """(manifest name, blob name) pairs: pnnx's in0/out0 … in positional order."""
    found = [_POSITION.search(b) for b in blobs]
    positions = {b: int(p.group(1)) for b, p in zip(blobs, found) if p is not None}
    if len(blobs) != len(wanted) or len(positions) != len(blobs):
        raise BundleError(f"{path}: its {what} {list(blobs)} do not match the manifest's {list(wanted)}; "
                          "rebuild the bundle")
    ordered = sorted(blobs, key=lambda b: positions[b])
    return list(zip(wanted, ordered))


class NcnnSession:
    """A loaded ncnn artifact. `delegate` says what was asked for: "cpu-fp16" (fp16 storage
    and arithmetic, the latter where the CPU has it), "cpu-fp16-storage" (fp16 storage,
    fp32 arithmetic) or "cpu-fp32"."""

    backend = "ncnn"

    def __init__(self, path: Path, threads: int, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        try:
            ncnn = import_ncnn()
        except ImportError as exc:
            raise BackendUnavailableError(f"ncnn cannot be imported ({exc}); ncnn artifacts need it: "
                                          "pip install 'edgepack-runtime[ncnn]'") from exc
        self._ncnn = ncnn
        options = _options(Path(path))
        fp16 = _switch(FP16_ENV, options["fp16"])
        arithmetic = fp16 and _switch(FP16_ARITHMETIC_ENV, options["fp16_arithmetic"])
        self._net = net = ncnn.Net()
        # Options are read when the graph loads: all of them before load_param.
        net.opt.num_threads = threads
        net.opt.use_vulkan_compute = False
        net.opt.lightmode = _switch(LIGHTMODE_ENV, options["lightmode"])
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = fp16
        net.opt.use_fp16_arithmetic = arithmetic
        net.opt.use_bf16_storage = False  # bf16 is another precision than the one validated
        if net.load_param(str(path)) != 0 or net.load_model(str(weights_path(path))) != 0:
            raise BundleError(f"ncnn could not load {path} and its {WEIGHTS_SUFFIX} (damaged, or made by a newer "
                              "pnnx than this ncnn reads); rebuild the bundle or upgrade ncnn")
        self._inputs = _by_position(net.input_names(), input_names, "inputs", path)
        self._outputs = _by_position(net.output_names(), output_names, "outputs", path)
        self.backend_version = metadata.version("ncnn")
        self.delegate = "cpu-fp16" if arithmetic else "cpu-fp16-storage" if fp16 else "cpu-fp32"
        self.threads = threads

    def native_dtypes(self) -> dict[str, np.dtype]:
        return {}

    def quantization(self) -> dict[str, tuple[float, int]]:
        return {}

    def fixed_shapes(self) -> None:
        return None

    def run(self, feeds: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
        ncnn = self._ncnn
        batches = {len(feeds[name]) for name, _ in self._inputs}
        if len(batches) != 1:
            raise InputError(f"the inputs have different batch sizes {sorted(batches)}; give them one batch size")
        results: dict[str, list[np.ndarray]] = {name: [] for name, _ in self._outputs}
        for i in range(batches.pop()):
            extractor = self._net.create_extractor()
            for name, blob in self._inputs:
                extractor.input(blob, ncnn.Mat(np.ascontiguousarray(feeds[name][i], dtype=np.float32)))
            for name, blob in self._outputs:
                status, mat = extractor.extract(blob)
                if status != 0:
                    raise InferenceError(f"ncnn failed computing output {name!r} (status {status}); the input "
                                         "shape may be one this graph cannot take: use the manifest's shape")
                results[name].append(np.array(mat, dtype=np.float32))  # a copy: the Mat dies with the extractor
        return {name: np.stack(values) for name, values in results.items()}


def open_session(path: Path, threads: int, input_names: Sequence[str], output_names: Sequence[str]) -> NcnnSession:
    return NcnnSession(path, threads, input_names, output_names)
