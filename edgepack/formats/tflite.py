"""TFLite: litert-torch export (no TensorFlow) and ai-edge-quantizer quantization."""

from __future__ import annotations

import contextlib
import io
import re
import logging
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from edgepack_runtime.backends import to_nhwc
from edgepack_runtime.backends.tflite import by_position, narrow
from edgepack_runtime.manifest import TensorSpec
from edgepack_runtime.parity import split_samples

from ..errors import BuildError
from ..targets import TargetProfile
from .errors import root_cause

# torchao (pulled in by litert-torch) logs warnings about optional GPU kernels at import.
logging.getLogger("torchao").setLevel(logging.ERROR)

EXTRA_HINT = "pip install 'edgepack[tflite]' (or run `make setup`)"
SIGNATURE = "serving_default"  # the one signature litert-torch writes
SENSITIVITY_SAMPLES = 8  # calibration samples for per-op sensitivity: a ranking, not a measurement
# How calibration merges per-sample activation ranges (ai_edge_quantizer.utils.qsv_utils).
RANGE_UPDATES = {"min_max": "min_max_update", "moving_average": "moving_average_update"}


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise BuildError(f"TFLite needs the tflite extra, which is not installed ({exc}); {EXTRA_HINT}") from None


class ChannelsLast(torch.nn.Module):
    """Takes 4-D inputs as NHWC and returns 4-D outputs as NHWC, for apps feeding HWC frames."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        out = self.module(*(a.permute(0, 3, 1, 2) if a.dim() == 4 else a for a in args))
        flip = lambda t: t.permute(0, 2, 3, 1) if t.dim() == 4 else t  # noqa: E731
        return tuple(flip(t) for t in out) if isinstance(out, (tuple, list)) else flip(out)


def _native(value: np.ndarray, layout: str) -> np.ndarray:
    """`value` in the artifact's input layout (the runtime transposes the same way)."""
    return to_nhwc(value) if layout == "nhwc" else value


@contextlib.contextmanager
def _quiet():
    """litert-torch and ai-edge-quantizer print progress reports and bars; failures
    still arrive as exceptions."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class TfliteFormat:
    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "int8", "dynamic-int8", "fp16")

    def layout(self, target: TargetProfile) -> str | None:
        return "nhwc" if target.tflite.layout == "nhwc" else None

    def export(self, module, inputs: tuple[TensorSpec, ...], output_names, target: TargetProfile, out: Path) -> None:
        with _quiet():  # its import prints torchao's optional-kernel load failures
            litert_torch = _require("litert_torch")
        layout = target.tflite.layout
        wrapped = ChannelsLast(module) if layout == "nhwc" else module
        args = tuple(
            torch.from_numpy(_native(np.zeros(s.shape, dtype=s.dtype), layout)) for s in inputs
        )
        try:
            with _quiet():
                converted = litert_torch.convert(wrapped.eval(), args)
                converted.export(str(out))
        except Exception as exc:
            raise BuildError(
                f"litert-torch could not convert the model: {root_cause(exc)} (replace that op or construct, "
                "or leave tflite out with --formats onnx)"
            ) from None

    def recipes(self, target: TargetProfile, precision: str) -> list[dict]:
        # Static int8 searches the profile's recipes; the other precisions have no knobs.
        return target.tflite.int8.recipes() if precision == "int8" else [{}]

    def quantize(self, fp32: Path, out: Path, target: TargetProfile, precision: str,
                 calibration: dict[str, np.ndarray], recipe: dict) -> dict:
        _require("ai_edge_quantizer")
        with _quiet():
            from ai_edge_quantizer import algorithm_manager, calibrator, qtyping, quantizer, recipe_manager
            from ai_edge_quantizer import recipe as recipes
            from ai_edge_quantizer.utils import qsv_utils

        try:
            qt = quantizer.Quantizer(str(fp32))
            settings: dict = {"tool": "ai_edge_quantizer", "precision": precision}
            calibration_result = None
            if precision == "int8":
                name = recipe["recipe"]
                if not hasattr(recipes, name):
                    raise BuildError(f"target {target.id}: ai-edge-quantizer has no recipe {name!r}; fix [tflite.int8]")
                manager = recipe_manager.RecipeManager()
                manager.load_quantization_recipe(getattr(recipes, name)())
                float_layers = [list(group) for group in recipe.get("float_layers", ())]
                for group in float_layers:  # mixed precision: these ops keep float weights and activations
                    for output in group:
                        manager.add_quantization_config(re.escape(output), qtyping.TFLOperationName.ALL_SUPPORTED,
                                                        algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
                chosen = manager.get_quantization_recipe()
                qt.load_quantization_recipe(chosen)
                settings.update(recipe=name, range_update=recipe["range_update"],
                                relies_on=list(target.tflite.int8.relies_on))
                if float_layers:
                    settings["float_layers"] = float_layers
                # Quantizer.calibrate always uses the moving average; to choose the range
                # update, drive the (public) Calibrator with the same recipe ourselves.
                update = getattr(qsv_utils, RANGE_UPDATES[recipe["range_update"]])
                with _quiet():
                    calib = calibrator.Calibrator(str(fp32), qsv_update_func=update)
                    calib.calibrate({SIGNATURE: self._feeds(fp32, calibration, target)}, manager)
                calibration_result = calib.get_model_qsvs()
            elif precision == "dynamic-int8":
                # int8 weights, activations quantized on the fly: no calibration needed.
                qt.load_quantization_recipe(recipes.dynamic_wi8_afp32())
                settings.update(recipe="dynamic_wi8_afp32")
            elif precision == "fp16":
                # Weights stored as fp16 (half the size); compute stays float.
                qt.add_weight_only_config(
                    regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                    algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
                )
                settings.update(recipe="weight_only float16 (FLOAT_CASTING)")
            else:
                raise BuildError(f"TFLite has no {precision!r} precision; use fp32, fp16, int8 or dynamic-int8")
            with _quiet():
                result = qt.quantize(calibration_result, enable_progress_report=False)
            result.export_model(str(out), overwrite=True)
        except BuildError:
            raise
        except Exception as exc:
            raise BuildError(f"ai-edge-quantizer failed ({precision}): {root_cause(exc)}") from None
        return settings

    def sensitive_layers(self, fp32: Path, quantized: Path, calibration, target: TargetProfile) -> list[list[str]]:
        """Weighted ops ranked by how much accuracy they lose on their own, most first: the
        drop in SNR vs the float model between an op's input and its output, from
        ai-edge-quantizer's model validator on calibration samples. Each entry names the
        op's output tensor (how ai-edge-quantizer scopes per-op overrides)."""
        with _quiet():
            from ai_edge_quantizer import model_validator
            from ai_edge_quantizer.utils import tfl_flatbuffer_utils, validation_utils

        feeds = self._feeds(fp32, {k: v[:SENSITIVITY_SAMPLES] for k, v in calibration.items()}, target)
        with _quiet():
            results = model_validator.compare_model(
                fp32.read_bytes(), quantized.read_bytes(), {SIGNATURE: feeds},
                [validation_utils.ValidationErrorMetric.SNR], compare_fns=None, use_xnnpack=True,
                num_threads=target.threads).get_all_tensor_results()
        snr_db = {name: 10 * np.log10(max(r["snr"], 1e-12)) for name, r in results.items() if "snr" in r}
        graph = tfl_flatbuffer_utils.read_model(str(fp32)).subgraphs[0]
        names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in graph.tensors]
        drops = []
        for op in graph.operators:
            if len(op.inputs) < 2 or not len(op.outputs):  # weighted ops: activation + weights (+ bias)
                continue
            source, output = names[op.inputs[0]], names[op.outputs[0]]
            if source in snr_db and output in snr_db:
                drops.append((snr_db[source] - snr_db[output], [output]))
        drops.sort(key=lambda d: -d[0])
        return [group for _, group in drops]

    @staticmethod
    def _feeds(fp32: Path, calibration: dict[str, np.ndarray], target: TargetProfile) -> list[dict]:
        """Calibration samples keyed by the signature's input names (mapped to ours the way the
        runtime maps them), in the artifact's layout."""
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(fp32)).get_signature_runner(SIGNATURE).get_input_details()
        names = by_position(list(details), list(calibration), "inputs", fp32)  # signature name -> input name
        # Integer inputs the converter narrowed (int64 -> int32) get the artifact's dtype, as at run time.
        dtypes = {sig: np.dtype(d["dtype"]) for sig, d in details.items() if np.dtype(d["dtype"]).kind in "iu"}
        return [{sig: _native(narrow(name, feed[name], dtypes[sig]) if sig in dtypes else feed[name],
                              target.tflite.layout) for sig, name in names.items()}
                for feed in split_samples(calibration)]

    def count_macs(self, fp32: Path) -> int | None:
        return None  # counted on the ONNX graph when that format is built

    def toolchain(self) -> dict[str, str]:
        versions = {}
        for dist in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return versions
