"""TFLite: litert-torch export (no TensorFlow) and ai-edge-quantizer quantization."""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgepack_runtime.backends import to_nhwc
from edgepack_runtime.backends.tflite import by_position, narrow
from edgepack_runtime.dims import tile_to
from edgepack_runtime.manifest import TensorSpec
from edgepack_runtime.parity import split_samples
from edgepack_runtime.precision import Precision

from ..errors import BuildError, TargetError, did_you_mean
from . import ATTENTION, MIXED_PRECISION, ExportFormat, check_recipes
from .contract import Exported, OpGraph, QuantPlan, QuantResult, Recipe
from .errors import root_cause
from .output import converter_output

if TYPE_CHECKING:  # torch and the converters are imported where used: `edgepack targets` reads this module
    from ..targets import TargetProfile


@dataclass(frozen=True)
class TfliteInt8:
    """ai-edge-quantizer preset for full-integer int8."""

    recipe: str  # "static_wi8_ai8"
    range_update: str  # "min_max" or "moving_average": how calibration merges sample ranges
    relies_on: tuple[str, ...]
    search: tuple[dict, ...] = ()  # more recipes for the accuracy-driven search, as in OnnxInt8

    def recipes(self) -> list[dict]:
        base = {"recipe": self.recipe, "range_update": self.range_update}
        return [base] + [{**base, **override} for override in self.search]


CHOICES = {"range_update": ("min_max", "moving_average")}
LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True)
class TfliteSettings:
    """A target profile's [tflite] table."""

    precisions: tuple[str, ...]
    layout: str  # input layout of the artifact: "nchw" (as PyTorch) or "nhwc"
    int8: TfliteInt8

    def check(self, where: str) -> None:
        if self.layout not in LAYOUTS:
            raise TargetError(f"unknown layout in {where} {self.layout!r}; {did_you_mean(self.layout, LAYOUTS)}"
                              f"supported: {', '.join(LAYOUTS)}")
        check_recipes(self.int8, CHOICES, where)

EXTRA_HINT = "pip install 'edgepack[tflite]' (or run `make setup`)"
# TFLite's names of the ops with learned weights (the op graph's `weighted`).
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL")
CONCATENATION = "CONCATENATION"
# Recent calibrations (quantize), by _calibration_key: float variants of a recipe reuse them.
# A search alternates two recipes, and cross-fitting four folds' samples: room for all.
_CALIBRATIONS: dict[str, dict] = {}
CALIBRATIONS_KEPT = 16
SENSITIVITY_SAMPLES = 8  # calibration samples for per-op sensitivity: a ranking, not a measurement
# How calibration merges per-sample activation ranges (ai_edge_quantizer.utils.qsv_utils).
RANGE_UPDATES = {"min_max": "min_max_update", "moving_average": "moving_average_update"}


def _calibration_key(fp32: Path, calibration: dict[str, np.ndarray], recipe: str, range_update: str) -> str:
    key = hashlib.sha256(fp32.read_bytes())
    for name in sorted(calibration):
        key.update(name.encode() + np.ascontiguousarray(calibration[name]).tobytes())
    return f"{key.hexdigest()} {recipe} {range_update}"


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise BuildError(f"TFLite needs the tflite extra, which is not installed ({exc}); {EXTRA_HINT}") from None


# Sizes a dynamic dim is built at for TFLite: its maximum and halvings of it, down to its
# minimum; fewer when several dims multiply the signatures.
SIZES_PER_DIM = {1: 4, 2: 3}
SIZES_FEWEST = 2


def _graph(fp32: Path):
    """(model, its first subgraph, each operator's builtin name as TFLite's schema spells it)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    builtin = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = tfl.read_model(str(fp32))
    graph = model.subgraphs[0]
    codes = model.operatorCodes
    return model, graph, [builtin.get(max(codes[op.opcodeIndex].builtinCode,
                                          codes[op.opcodeIndex].deprecatedBuiltinCode), "")
                          for op in graph.operators]


def _op_graph(fp32: Path) -> OpGraph:
    """The ops of the file's first signature, each named by its first output tensor (how
    ai-edge-quantizer scopes per-op overrides); ops without outputs have nothing to keep float."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    _, graph, names = _graph(fp32)
    name = lambda i: tfl.get_tensor_name(graph.tensors[i])  # noqa: E731
    return OpGraph.of((name(op.outputs[0]), [name(i) for i in op.inputs if i >= 0],
                       [name(i) for i in op.outputs if i >= 0], op_name in WEIGHTED_OPS)
                      for op_name, op in zip(names, graph.operators, strict=True)
                      if len(op.outputs) and op.outputs[0] >= 0)


def fixed_sizes(specs: tuple[TensorSpec, ...]) -> list[dict[str, int]]:
    """Every combination of the fixed sizes of the inputs' dynamic dims."""
    ranges = {d.name: (d.min, d.max) for s in specs for d in s.dynamic}
    per_dim = SIZES_PER_DIM.get(len(ranges), SIZES_FEWEST)
    options = {}
    for name, (low, high) in ranges.items():
        sizes = [high]
        while len(sizes) < per_dim and sizes[-1] > low:
            sizes.append(max(low, (sizes[-1] + 1) // 2))
        options[name] = sorted(set(sizes))
    combos: list[dict[str, int]] = [{}]
    for name, sizes in options.items():
        combos = [{**c, name: n} for c in combos for n in sizes]
    return combos


def signature_key(sizes: dict[str, int]) -> str:
    return "_".join(f"{name}_{n}" for name, n in sizes.items())


def _native(value: np.ndarray, layout: str) -> np.ndarray:
    """`value` in the artifact's input layout (the runtime transposes the same way)."""
    return to_nhwc(value) if layout == "nhwc" else value


class TfliteFormat(ExportFormat):
    name = "tflite"
    capabilities = frozenset({MIXED_PRECISION, ATTENTION})
    suffix = ".tflite"
    precisions = ("fp32", "int8", "dynamic-int8", "fp16")
    settings_class = TfliteSettings
    runtime_extra = "tflite"
    emulation_wheels = ("ai-edge-litert==2.1.6",)

    def export_key(self, target: "TargetProfile") -> object:
        return target.settings("tflite").layout  # the rest of the profile is for quantization

    def layout(self, target: "TargetProfile") -> str | None:
        return "nhwc" if target.settings("tflite").layout == "nhwc" else None

    def export(self, module, inputs: tuple[TensorSpec, ...], output_names, target: "TargetProfile",
               out: Path) -> Exported:
        with converter_output():  # its import prints torchao's optional-kernel load failures
            litert_torch = _require("litert_torch")
        layout = target.settings("tflite").layout
        import torch

        from .channels_last import ChannelsLast

        wrapped = (ChannelsLast(module) if layout == "nhwc" else module).eval()

        def args(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
            return tuple(torch.from_numpy(_native(np.zeros(s.shape_at(sizes), dtype=s.dtype), layout)) for s in inputs)

        try:
            with converter_output():
                if any(s.dynamic for s in inputs):
                    # TFLite kernels want static shapes (and litert-torch's dynamic shapes fail on
                    # common graphs, e.g. BERT's sliced position ids): one signature per fixed size,
                    # sharing the weights in one file; the runtime pads a call to the next size up.
                    converter = litert_torch
                    for sizes in fixed_sizes(inputs):
                        converter = converter.signature(signature_key(sizes), wrapped, args(sizes))
                    converted = converter.convert()
                else:
                    converted = litert_torch.convert(wrapped, args({}))
                converted.export(str(out))
        except Exception as exc:
            raise BuildError(
                f"litert-torch could not convert the model: {root_cause(exc)} (replace that op or construct, "
                "or leave tflite out with --formats onnx)"
            ) from exc
        try:
            graph = _op_graph(out)
        except ImportError:  # no ai-edge-quantizer: nothing of this file will be quantized, or kept float
            graph = None
        return Exported(out, graph)

    def recipes(self, target: "TargetProfile", precision: Precision) -> list[Recipe]:
        # Static int8 searches the profile's recipes; the other precisions have no knobs.
        if precision.calibrated:
            return [Recipe(recipe) for recipe in target.settings("tflite").int8.recipes()]
        return [Recipe()]

    def quantize(self, exported: Exported, out: Path, target: "TargetProfile", plan: QuantPlan,
                 calibration: dict[str, np.ndarray]) -> QuantResult:
        _require("ai_edge_quantizer")
        with converter_output():
            from ai_edge_quantizer import algorithm_manager, calibrator, qtyping, quantizer, recipe_manager
            from ai_edge_quantizer import recipe as recipes
            from ai_edge_quantizer.utils import qsv_utils

        precision, recipe, fp32 = plan.precision, plan.recipe, exported.path
        kept: tuple[str, ...] = ()
        try:
            qt = quantizer.Quantizer(str(fp32))
            applied = recipe
            calibration_result = None
            if precision.calibrated:
                name = recipe["recipe"]
                if not hasattr(recipes, name):
                    raise BuildError(f"target {target.id}: ai-edge-quantizer has no recipe {name!r}; fix [tflite.int8]")
                manager = recipe_manager.RecipeManager()
                manager.load_quantization_recipe(getattr(recipes, name)())
                # Per-op overrides are scoped by a regex over "output;output;…" of each op: an
                # op id is its first output, so "^id;" is that op and no other.
                kept = exported.graph.in_order(plan.float_ops) if exported.graph else tuple(sorted(plan.float_ops))
                for op_id in kept:  # these ops keep float weights and activations
                    manager.add_quantization_config(f"^{re.escape(op_id)};", qtyping.TFLOperationName.ALL_SUPPORTED,
                                                    algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
                qt.load_quantization_recipe(manager.get_quantization_recipe())
                # Quantizer.calibrate always uses the moving average; to choose the range
                # update, drive the (public) Calibrator ourselves. Calibration runs the float
                # model and skips the ops a recipe leaves float, so the whole-graph recipe's
                # ranges serve every float variant of it: calibrated once per graph, samples,
                # recipe and range update (a search tries a dozen variants of one recipe).
                key = _calibration_key(fp32, calibration, name, recipe["range_update"])
                if key not in _CALIBRATIONS:
                    whole = recipe_manager.RecipeManager()
                    whole.load_quantization_recipe(getattr(recipes, name)())
                    update = getattr(qsv_utils, RANGE_UPDATES[recipe["range_update"]])
                    with converter_output():
                        calib = calibrator.Calibrator(str(fp32), qsv_update_func=update)
                        calib.calibrate(self._feeds(fp32, calibration, target), whole)
                    if len(_CALIBRATIONS) >= CALIBRATIONS_KEPT:  # ranges are small; the oldest go first
                        del _CALIBRATIONS[next(iter(_CALIBRATIONS))]
                    _CALIBRATIONS[key] = calib.get_model_qsvs()
                calibration_result = copy.deepcopy(_CALIBRATIONS[key])  # the quantizer may annotate it
            elif precision.dynamic:
                # int8 weights, activations quantized on the fly: no calibration needed.
                qt.load_quantization_recipe(recipes.dynamic_wi8_afp32())
                applied = Recipe(recipe, recipe="dynamic_wi8_afp32")
            elif precision.weights == "float16":
                # Weights stored as fp16 (half the size); compute stays float.
                qt.add_weight_only_config(
                    regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                    algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
                )
                applied = Recipe(recipe, recipe="weight_only float16 (FLOAT_CASTING)")
            else:
                raise BuildError(f"TFLite has no {precision.name!r} precision; use {', '.join(self.precisions)}")
            with converter_output():
                result = qt.quantize(calibration_result, enable_progress_report=False)
            result.export_model(str(out), overwrite=True)
        except BuildError:
            raise
        except Exception as exc:
            raise BuildError(f"ai-edge-quantizer failed ({precision.name}): {root_cause(exc)}") from exc
        return QuantResult("ai_edge_quantizer", applied, kept)

    def sensitive_layers(self, fp32: Path, quantized: Path, calibration, target: "TargetProfile") -> list[list[str]]:
        """Weighted ops ranked by how much accuracy they lose on their own, most first: the
        drop in SNR vs the float model between an op's input and its output, from
        ai-edge-quantizer's model validator on calibration samples. Each entry names the
        op's output tensor (how ai-edge-quantizer scopes per-op overrides)."""
        with converter_output():
            from ai_edge_quantizer import model_validator
            from ai_edge_quantizer.utils import tfl_flatbuffer_utils, validation_utils

        feeds = self._feeds(fp32, {k: v[:SENSITIVITY_SAMPLES] for k, v in calibration.items()}, target)
        with converter_output():
            results = model_validator.compare_model(
                fp32.read_bytes(), quantized.read_bytes(), feeds,
                [validation_utils.ValidationErrorMetric.SNR], compare_fns=None, use_xnnpack=True,
                num_threads=target.threads).get_all_tensor_results()
        snr_db = {name: 10 * np.log10(max(r["snr"], 1e-12)) for name, r in results.items() if "snr" in r}
        model = tfl_flatbuffer_utils.read_model(str(fp32))
        graph = model.subgraphs[0]
        names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in graph.tensors]
        concats = {op.outputs[0] for i, op in enumerate(graph.operators) if len(op.outputs)
                   and tfl_flatbuffer_utils.get_op_name_by_index(model, 0, i) == CONCATENATION}
        drops = []
        for op in graph.operators:
            if len(op.inputs) < 2 or not len(op.outputs):  # weighted ops: activation + weights (+ bias)
                continue
            source, output = names[op.inputs[0]], names[op.outputs[0]]
            # As in onnx.py: a layer kept float keeps the concatenation feeding it float too.
            feeding = [source] if op.inputs[0] in concats else []
            if source in snr_db and output in snr_db:
                drops.append((snr_db[source] - snr_db[output], feeding + [output]))
        drops.sort(key=lambda d: -d[0])
        return [group for _, group in drops]

    @staticmethod
    def has_attention(fp32: Path) -> bool:
        """Whether the graph multiplies two activations (BATCH_MATMUL without a constant
        operand) and has a SOFTMAX: attention, which static int8 recipes for CNNs destroy."""
        model, graph, names = _graph(fp32)
        buffers = model.buffers

        def constant(i: int) -> bool:
            buffer = buffers[graph.tensors[i].buffer]
            return len(buffer.data if buffer.data is not None else ()) > 0 or getattr(buffer, "offset", 0) > 0

        return "SOFTMAX" in names and any(
            name == "BATCH_MATMUL" and not any(constant(i) for i in op.inputs if i >= 0)
            for name, op in zip(names, graph.operators, strict=True))

    @staticmethod
    def _feeds(fp32: Path, calibration: dict[str, np.ndarray], target: "TargetProfile") -> dict[str, list[dict]]:
        """Calibration samples for each signature of the file, keyed by its input names
        (mapped to ours the way the runtime maps them), in the artifact's layout, tiled or
        cut to the signature's size when the model has dynamic dims."""
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(fp32))
        feeds = {}
        for key in interpreter.get_signature_list():
            details = interpreter.get_signature_runner(key).get_input_details()
            names = by_position(list(details), list(calibration), "inputs", fp32)  # signature name -> input name
            # Integer inputs the converter narrowed (int64 -> int32) get the artifact's dtype, as at run time.
            dtypes = {sig: np.dtype(d["dtype"]) for sig, d in details.items() if np.dtype(d["dtype"]).kind in "iu"}
            feeds[key] = [
                {sig: tile_to(_native(narrow(name, feed[name], dtypes[sig]) if sig in dtypes else feed[name],
                                      target.settings("tflite").layout), tuple(details[sig]["shape"]))
                 for sig, name in names.items()}
                for feed in split_samples(calibration)]
        return feeds

    def toolchain(self) -> dict[str, str]:
        versions = {}
        for dist in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return versions
