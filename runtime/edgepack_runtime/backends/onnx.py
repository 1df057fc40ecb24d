"""ONNX artifacts on onnxruntime's CPU execution provider."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError, BundleError, mapped
from .onnx_external import external_data_reference

# Name the provider explicitly: onnxruntime warns and may pick another one otherwise.
PROVIDERS = ["CPUExecutionProvider"]
FATAL_ONLY = 4  # onnxruntime's log severities: 0 verbose … 3 error, 4 fatal


def available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxSession:
    backend = "onnxruntime"
    delegate = PROVIDERS[0]

    def __init__(self, path: Path, threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                f"onnxruntime cannot be imported ({exc}); ONNX artifacts need it: "
                "pip install 'edgepack-runtime[onnx]'"
            ) from exc
        try:
            external = external_data_reference(path)
        except ValueError as exc:
            raise BundleError(f"{path} is damaged ({exc}); rebuild the bundle") from exc
        if external:
            raise BundleError(f"{path} keeps tensor {external!r} in another file (ONNX external data): edgepack "
                              "writes every ONNX artifact as one file, so nothing outside it is read; "
                              "rebuild the bundle")
        options = ort.SessionOptions()
        # Parse it as ONNX whatever its name: onnxruntime would read a ".ort" path as its
        # flatbuffer format, which the walk above does not understand.
        options.add_session_config_entry("session.load_model_format", "ONNX")
        options.intra_op_num_threads = threads
        # One graph, run sequentially: inter-op threads only add scheduling noise on small CPUs.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Failures reach the caller as one typed error (Model.run); onnxruntime's own log line
        # on stderr would only repeat it, in colour.
        options.log_severity_level = FATAL_ONLY
        # onnxruntime raises its own untyped errors.
        with mapped(BundleError, f"onnxruntime could not load {path}",
                    "the file may be damaged or need a newer onnxruntime"):
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=PROVIDERS)
        self.backend_version = ort.__version__
        self.threads = threads
        self._output_names = [o.name for o in self._session.get_outputs()]

    def native_dtypes(self) -> dict[str, np.dtype]:
        return {}  # the graph takes the manifest's dtypes, also when quantized (QDQ)

    def quantization(self) -> dict[str, tuple[float, int]]:
        return {}  # QDQ graphs quantize inside: inputs and outputs stay float

    def fixed_shapes(self) -> None:
        return None  # dynamic dims are dynamic axes of the graph: any size in range runs

    def run(self, feeds: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
        # ONNX graphs (incl. QDQ int8) take and return the manifest's dtypes: raw changes nothing.
        return dict(zip(self._output_names, self._session.run(self._output_names, feeds)))


def open_session(path: Path, threads: int, input_names: Sequence[str], output_names: Sequence[str]) -> OnnxSession:
    # Names were fixed at export time (input_names/output_names): nothing to map.
    return OnnxSession(path, threads)
