"""TFLite artifacts on LiteRT (`ai-edge-litert`), or `tflite-runtime` on older Pi OS images.

Threads are always set explicitly: LiteRT defaults to one thread, which made
published Pi numbers twice too slow. Integer model inputs/outputs are transparent:
`run` quantizes float inputs and dequantizes outputs with each tensor's scale and
zero point; `run(..., raw=True)` passes the integer tensors through.
"""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError, BundleError, InputError, mapped

# Every tflite-runtime release up to 2.14 (the last one) was built against numpy 1.x.
TFLITE_RUNTIME_NUMPY2 = (2, 15)
# litert-torch names positional inputs args_0, args_1, … and outputs output_0, output_1, …
_POSITION = re.compile(r"_(\d+)$")


def available() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime"))


def _interpreter() -> tuple[Any, str, str]:
    """(Interpreter class, backend name, version), preferring ai-edge-litert."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert", metadata.version("ai-edge-litert")
    except ImportError:
        pass
    if importlib.util.find_spec("tflite_runtime") is None:
        raise BackendUnavailableError(
            "no TFLite interpreter is installed; TFLite artifacts need one: pip install 'edgepack-runtime[tflite]'"
        )
    version = metadata.version("tflite-runtime")
    release = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if release < TFLITE_RUNTIME_NUMPY2 and int(np.__version__.split(".")[0]) >= 2:
        # Its import "succeeds" with a banner, then the first model load dies inside the C++ wrapper.
        raise BackendUnavailableError(
            f"tflite-runtime {version} was built for numpy 1.x and cannot run with numpy "
            f"{np.__version__}; pip install 'numpy<2', or install ai-edge-litert instead "
            "(pip install 'edgepack-runtime[tflite]')"
        )
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError as exc:
        raise BackendUnavailableError(f"tflite-runtime {version} cannot be imported ({exc}); reinstall it") from exc
    return Interpreter, "tflite-runtime", version


def by_position(names: Sequence[str], wanted: Sequence[str], what: str, path: Path) -> dict[str, str]:
    """Map the signature's tensor names to the manifest's names, in positional order."""
    if set(names) == set(wanted):
        return {n: n for n in names}
    found = [_POSITION.search(n) for n in names]
    positions = [int(p.group(1)) for p in found if p is not None]
    if len(names) != len(wanted) or len(positions) != len(names):
        raise BundleError(
            f"{path}: its {what} {sorted(names)} do not match the manifest's {list(wanted)}; rebuild the bundle"
        )
    ordered = [n for _, n in sorted(zip(positions, names))]
    return dict(zip(ordered, wanted))


def _is_quantized(detail: dict[str, Any]) -> bool:
    return np.dtype(detail["dtype"]).kind in "iu" and detail["quantization"][0] != 0


def _quantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """round(x / scale) + zero_point, saturated: in place on one float copy (large images
    are a few hundred µs of numpy; fewer passes and allocations halve it)."""
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    info = np.iinfo(dtype)
    q = value / np.float32(scale)
    np.rint(q, out=q)
    q += zero_point
    np.clip(q, info.min, info.max, out=q)
    return q.astype(dtype)


def _dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    out = value.astype(np.float32)
    out -= zero_point
    out *= np.float32(scale)
    return out


def narrow(name: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`value` as the integer dtype the artifact takes, if every value fits (else InputError)."""
    if value.dtype == dtype:
        return value
    info = np.iinfo(dtype)
    if value.size and (value.min() < info.min or value.max() > info.max):
        raise InputError(f"input {name!r} holds values in [{value.min()}, {value.max()}], beyond the {dtype} this "
                         f"artifact takes (its converter narrowed {value.dtype}); use the ONNX artifact or smaller ids")
    return value.astype(dtype)


class _Signature:
    """One signature of the file: its runner and how its tensors map to the manifest's."""

    def __init__(self, runner: Any, input_names: Sequence[str], output_names: Sequence[str], path: Path) -> None:
        self.runner = runner
        self.inputs = runner.get_input_details()
        self.outputs = runner.get_output_details()
        # manifest name -> signature name (inputs), signature name -> manifest name (outputs)
        self.input_names = {v: k for k, v in by_position(list(self.inputs), input_names, "inputs", path).items()}
        self.output_names = by_position(list(self.outputs), output_names, "outputs", path)
        # Per call: which tensors need (de)quantizing. Float models: none, a plain rename.
        self.quantized_inputs = {n for n, sig in self.input_names.items() if _is_quantized(self.inputs[sig])}
        self.quantized_outputs = {sig for sig in self.output_names if _is_quantized(self.outputs[sig])}
        # Integer inputs the converter narrowed (litert-torch turns int64 into int32): fed the
        # manifest's dtype, converted here when every value fits.
        self.narrowed = {n: np.dtype(self.inputs[sig]["dtype"]) for n, sig in self.input_names.items()
                         if np.dtype(self.inputs[sig]["dtype"]).kind in "iu" and n not in self.quantized_inputs}
        self.shapes = {n: tuple(int(d) for d in self.inputs[sig]["shape"]) for n, sig in self.input_names.items()}

    def run(self, feeds: Mapping[str, np.ndarray], raw: bool) -> dict[str, np.ndarray]:
        names, inputs = self.input_names, self.inputs
        if self.narrowed and not raw:
            feeds = {name: narrow(name, value, self.narrowed[name]) if name in self.narrowed else value
                     for name, value in feeds.items()}
        if raw or not self.quantized_inputs:
            converted = {names[name]: value for name, value in feeds.items()}
        else:
            converted = {names[name]: _quantize(value, inputs[names[name]]) if name in self.quantized_inputs
                         else value for name, value in feeds.items()}
        results = self.runner(**converted)
        if raw or not self.quantized_outputs:
            return {self.output_names[sig]: value for sig, value in results.items()}
        return {self.output_names[sig]: _dequantize(value, self.outputs[sig]) if sig in self.quantized_outputs
                else value for sig, value in results.items()}


class LiteRTSession:
    """A TFLite file on LiteRT. A model with dynamic dims is built as one signature per
    fixed size (TFLite kernels want static shapes; the weights are shared in the file):
    `fixed_shapes()` lists them and `run` takes feeds of exactly one of those shapes."""

    delegate = "xnnpack"  # LiteRT's default CPU delegate

    def __init__(self, path: Path, threads: int, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        interpreter_class, self.backend, self.backend_version = _interpreter()
        # LiteRT raises its own untyped errors on damaged files.
        with mapped(BundleError, f"LiteRT could not load {path}", "the file may be damaged"):
            self._interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            keys = list(self._interpreter.get_signature_list())
            signatures = [_Signature(self._interpreter.get_signature_runner(k), input_names, output_names, path)
                          for k in keys]
        if not signatures:
            raise BundleError(f"{path} has no signature to run; rebuild the bundle")
        self.threads = threads
        # Smallest first: the size a call is padded to is the first that holds it.
        signatures.sort(key=lambda sig: sum(int(np.prod(s)) for s in sig.shapes.values()))
        self._by_shape = {tuple(sig.shapes[n] for n in input_names): sig for sig in signatures}
        self._input_order = list(input_names)
        self._largest = signatures[-1]
        self._only = signatures[0] if len(signatures) == 1 else None

    def fixed_shapes(self) -> list[dict[str, tuple[int, ...]]] | None:
        """The input shapes of each signature, smallest first; None for a one-signature file
        (which takes the manifest's shapes)."""
        return None if self._only else [sig.shapes for sig in self._by_shape.values()]

    def native_dtypes(self) -> dict[str, np.dtype]:
        sig = self._largest
        return {name: np.dtype(sig.inputs[s]["dtype"]) for name, s in sig.input_names.items()}

    def quantization(self) -> dict[str, tuple[float, int]]:
        sig = self._largest  # a file with several sizes: each signature may have its own scales
        details = {name: sig.inputs[s] for name, s in sig.input_names.items()}
        details.update({name: sig.outputs[s] for s, name in sig.output_names.items()})
        return {name: tuple(d["quantization"]) for name, d in details.items() if _is_quantized(d)}

    def run(self, feeds: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
        if self._only is not None:
            return self._only.run(feeds, raw)
        key = tuple(tuple(feeds[n].shape) for n in self._input_order)
        if key not in self._by_shape:
            sizes = ", ".join(str(list(k)) for k in self._by_shape)
            raise InputError(f"this artifact runs inputs of shapes {sizes} only, got {list(key)}")
        return self._by_shape[key].run(feeds, raw)


def open_session(path: Path, threads: int, input_names: Sequence[str], output_names: Sequence[str]) -> LiteRTSession:
    return LiteRTSession(path, threads, input_names, output_names)
