"""ONNX: torch.onnx (dynamo) export and onnxruntime static int8 quantization."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import inspect
import logging
import math
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgepack_runtime.manifest import TensorSpec
from edgepack_runtime.precision import Precision

from ..errors import BuildError
from . import ATTENTION, MIXED_PRECISION, ExportFormat, check_recipes
from .contract import Exported, OpGraph, QuantPlan, QuantResult, Recipe
from .errors import root_cause
from .output import converter_output

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch and onnx are imported where used: `edgepack targets` reads this module
    from ..targets import TargetProfile


@dataclass(frozen=True)
class OnnxInt8:
    """onnxruntime static quantization preset (see the profile's comments for why)."""

    quant_format: str  # "qdq" or "qoperator"
    activation_type: str  # "int8" or "uint8"
    weight_type: str
    per_channel: bool
    reduce_range: bool
    calibrate_method: str  # "minmax", "entropy" or "percentile"
    relies_on: tuple[str, ...]  # ISA features whose kernels this preset's numbers depend on
    percentile: float = 99.999  # calibrate_method "percentile": share of each activation's values kept in range
    bias_correction: bool = False  # fold NNCF's bias correction into the float model before quantizing
    # More recipes for the accuracy-driven search, each a table overriding fields above;
    # the build keeps the fastest recipe within the accuracy budget (see docs/quantization.md).
    search: tuple[dict, ...] = ()

    def recipes(self) -> list[dict]:
        """This preset, then each `search` entry applied over it, as quantize settings."""
        base = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("search", "relies_on")}
        return [base] + [{**base, **override} for override in self.search]


# Allowed values of preset fields, checked when a profile loads (not deep in a converter).
CHOICES = {"quant_format": ("qdq", "qoperator"), "activation_type": ("int8", "uint8"),
           "weight_type": ("int8", "uint8"), "calibrate_method": ("minmax", "entropy", "percentile")}


@dataclass(frozen=True)
class OnnxSettings:
    """A target profile's [onnx] table."""

    opset: int
    precisions: tuple[str, ...]
    int8: OnnxInt8

    def check(self, where: str) -> None:
        check_recipes(self.int8, CHOICES, where)


CALIBRATION_MEMORY = 2 << 30  # bytes of intermediate tensors the calibrator may hold at once
SENSITIVITY_SAMPLES = 16  # calibration samples for per-layer sensitivity: a ranking, not a measurement
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
ACTIVATIONS = ("Relu", "Clip")


def _op_graph(model_path: Path) -> OpGraph:
    """The exported graph's nodes, by name (what nodes_to_exclude takes)."""
    import onnx

    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    return OpGraph.of((n.name or f"{n.op_type}#{i}", n.input, n.output, n.op_type in WEIGHTED_OPS)
                      for i, n in enumerate(nodes))


def _excluded(prepared: Path, graph: OpGraph | None, float_ops: frozenset[str]) -> list[str]:
    """The nodes of the prepared graph that stay float, by name, in graph order: those the
    plan names (preparation renames no node it keeps) and those it made of them (a fusion's
    new node writes the output of the last node it replaced)."""
    import onnx

    if not float_ops:
        return []
    outputs = {name for op in (graph or ()) if op.id in float_ops for name in op.outputs}
    nodes = onnx.load(str(prepared), load_external_data=False).graph.node
    return [n.name for n in nodes if n.name in float_ops or not outputs.isdisjoint(n.output)]


@functools.cache
def _ranges_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="edgepack-ranges-")  # removed when the process ends


def _calibration_key(prepared: Path, calibration: dict[str, np.ndarray], method: str) -> str:
    """What a calibration's collected statistics depend on: the graph, the samples, the method."""
    key = hashlib.sha256(prepared.read_bytes())
    for name in sorted(calibration):
        key.update(name.encode() + np.ascontiguousarray(calibration[name]).tobytes())
    key.update(method.encode())
    return key.hexdigest()


def _ranges_cache(prepared: Path, calibration: dict[str, np.ndarray], recipe: Mapping[str, Any],
                  key: str | None = None) -> dict:
    """quantize_static's calibration cache for this graph, these samples and this method
    at the recipe's percentile: the candidates of a search differ in what they keep
    float, not in the ranges, and calibrating a 640x640 detector takes longer than
    quantizing it. {} with an onnxruntime whose quantize_static takes no
    calibration_cache_path (older releases)."""
    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return {}
    key = key or _calibration_key(prepared, calibration, recipe["calibrate_method"])
    return {"calibration_cache_path": str(Path(_ranges_dir().name) / f"{key}-{recipe['percentile']}.json")}

_FULL_CORRECTION_FAILED: set[str] = set()  # fp32 graphs (by digest) NNCF's full bias correction could not cut


def _bias_corrected(fp32: Path, calibration) -> Path:
    """`fp32` with NNCF's bias correction folded into its float biases (written next to it).

    NNCF measures, layer by layer on the calibration samples, the shift that int8 rounding
    adds to each channel's mean output and subtracts it from the bias. Its own QDQ graph
    keeps activations and residual adds in float, which onnxruntime cannot fuse into integer
    kernels (measured 3.5x slower than fp32 on MobileNetV2), so only the corrected biases
    are taken; onnxruntime then quantizes the corrected model with the target's preset."""
    from onnx import numpy_helper

    # One NNCF run per graph and set of samples, shared by every recipe that asks for it and
    # by every target of a multi-target build (each has its own copy of the same export);
    # named by the samples too, so a cross-fitted fold's correction never saw its fold.
    digest = hashlib.sha256(fp32.read_bytes())
    graph = digest.hexdigest()
    for name in sorted(calibration):
        digest.update(name.encode() + np.ascontiguousarray(calibration[name]).tobytes())
    out = Path(_ranges_dir().name) / f"bias-corrected-{digest.hexdigest()[:24]}.onnx"
    if out.exists():
        return out
    try:
        import nncf
    except ImportError as exc:
        raise BuildError(f"bias correction needs nncf, which is not installed ({exc}); pip install nncf") from None
    import onnx

    model = onnx.load(str(fp32))
    with converter_output():
        samples = list(_Reader(calibration))
        corrected = None
        if graph not in _FULL_CORRECTION_FAILED:
            try:
                corrected = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                                          fast_bias_correction=False)
            except Exception as exc:  # NNCF's full correction cuts subgraphs out, which some graphs defeat
                # (U^2-Net-p: KeyError on a node it renamed); its fast correction measures
                # each layer in place and still removes the mean shift.
                log.info(f"NNCF's bias correction failed ({root_cause(exc)}); using its fast bias correction")
                _FULL_CORRECTION_FAILED.add(graph)  # the graph's other folds and recipes go straight to it
        if corrected is None:
            corrected = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                                      fast_bias_correction=True)
    biases = {init.name: init for init in corrected.graph.initializer}
    by_node = {n.name: n for n in corrected.graph.node if n.op_type in WEIGHTED_OPS}
    floats = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        twin = by_node.get(node.name)
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 3 or twin is None or len(twin.input) < 3:
            continue
        if node.input[2] in floats and twin.input[2] in biases:
            floats[node.input[2]].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(biases[twin.input[2]]).astype(np.float32), node.input[2]))
    onnx.save(model, str(out))
    return out


class _Reader:
    """Feeds calibration samples one at a time, as onnxruntime's calibrator expects (within
    the range `set_range` gives, for its strided collection)."""

    def __init__(self, calibration: dict[str, np.ndarray]):
        self._count = len(next(iter(calibration.values())))
        self._data = calibration
        self._i, self._end = 0, self._count

    def __len__(self) -> int:
        return self._count

    def set_range(self, start_index: int, end_index: int) -> None:
        self._i, self._end = start_index, min(end_index, self._count)

    def get_next(self):
        if self._i >= self._end:
            return None
        feed = {name: values[self._i] for name, values in self._data.items()}
        self._i += 1
        return feed

    def rewind(self):
        self._i, self._end = 0, self._count

    def __iter__(self):  # qdq_loss_debug and nncf.Dataset iterate
        self.rewind()
        return iter(self.get_next, None)


def _streamed_sqnr(fp32: Path, quantized: Path, reader: "_Reader", wanted: set[str]) -> dict[str, dict[str, float]]:
    """qdq_loss_debug's float-vs-quantized SQNR ("xmodel_err") of the `wanted` activations,
    summed sample by sample. qdq_loss_debug.collect_activations keeps every intermediate
    tensor of every sample of both models until it compares them: 16 samples of a 640x640
    detector took 13 GB. The squared norms add up over samples, so one sample at a time
    gives the same figure (in float64) holding only one sample's wanted tensors."""
    import onnxruntime
    from onnxruntime.quantization import qdq_loss_debug
    from onnxruntime.quantization.qdq_loss_debug import _TENSOR_SAVE_POSTFIX as SAVED

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # as collect_activations
    # Every tensor is an output here, so the memory arena grows to hold all of them and keeps
    # that peak: U^2-Net-p's two augmented sessions held 4.1 GB, 2.3 GB without the arena
    # (the same figures, the same time).
    options.enable_cpu_mem_arena = False
    with tempfile.TemporaryDirectory(prefix="edgepack-sensitivity-") as tmp:
        sessions = []
        for model, augmented in ((fp32, Path(tmp) / "float.onnx"), (quantized, Path(tmp) / "quant.onnx")):
            qdq_loss_debug.modify_model_output_intermediate_tensors(str(model), str(augmented))
            sessions.append(onnxruntime.InferenceSession(str(augmented), sess_options=options,
                                                         providers=["CPUExecutionProvider"]))
    saved = [{o.name[:-len(SAVED)] for o in s.get_outputs() if o.name.endswith(SAVED)} for s in sessions]
    # qdq_loss_debug's own pairing (which quantized tensor holds an activation after its QDQ), on names.
    matching = qdq_loss_debug.create_activation_matching({n: [n] for n in saved[1]}, {n: [n] for n in saved[0]})
    pairs = {name: m["post_qdq"][0] for name, m in matching.items() if name in wanted and m.get("float")}
    names = list(pairs)
    signal, noise = np.zeros(len(names)), np.zeros(len(names))
    for feed in reader:
        floats = sessions[0].run([n + SAVED for n in names], feed)
        quants = sessions[1].run([pairs[n] + SAVED for n in names], feed)
        for i, (f, q) in enumerate(zip(floats, quants, strict=True)):
            f = f.astype(np.float64)
            signal[i] += f @ f
            f -= q
            noise[i] += f @ f
    eps = float(np.finfo(np.float64).eps)
    return {n: {"xmodel_err": 20 * math.log10(max(math.sqrt(s), eps) / max(math.sqrt(d), eps))}
            for n, s, d in zip(names, signal, noise, strict=True)}


# Histograms a percentile calibration collected, by graph, samples and method: the
# percentile only reads them, so the search's percentile recipes share one collection.
_HISTOGRAMS: dict[tuple, object] = {}
HISTOGRAMS_KEPT = 8  # the latest collections (a cross-fitted search makes one per fold)
# Held while onnxruntime's calibrator factory is swapped: two quantizations in one process
# (a library user's threads) must not see each other's factory.
_FACTORY_LOCK = threading.Lock()


@contextlib.contextmanager
def _shared_histograms(key: str | None):
    """While quantize_static runs: a histogram calibrator whose histograms for `key` were
    collected before computes its ranges from those, collecting nothing (on a 640x640
    detector 50 of a percentile recipe's 59 s are collection, 43 of them np.histogram);
    one that collects keeps them for the next. None: as onnxruntime does."""
    import importlib

    # The module, not its function; untyped, as onnxruntime is.
    ort_quantize: Any = importlib.import_module("onnxruntime.quantization.quantize")

    create = ort_quantize.create_calibrator
    made = []

    def shared(*args, **kwargs):
        calibrator = create(*args, **kwargs)
        if key is None or not hasattr(calibrator, "collector") or not hasattr(calibrator, "percentile"):
            return calibrator
        kept = (key, calibrator.symmetric, calibrator.num_bins)
        stored = _HISTOGRAMS.get(kept)
        if stored is not None:
            collector = copy.copy(stored)  # compute_percentile only reads histogram_dict
            collector.percentile = calibrator.percentile
            calibrator.collector = collector
            calibrator.collect_data = lambda data_reader: None
        else:
            made.append((kept, calibrator))
        return calibrator

    with _FACTORY_LOCK:
        ort_quantize.create_calibrator = shared
        try:
            yield
        finally:
            ort_quantize.create_calibrator = create
    for kept, calibrator in made:  # only a finished collection (an exception skips this)
        if calibrator.collector is not None:
            _HISTOGRAMS[kept] = calibrator.collector
            while len(_HISTOGRAMS) > HISTOGRAMS_KEPT:
                del _HISTOGRAMS[next(iter(_HISTOGRAMS))]


def _calibration_stride(prepared: Path, samples: int) -> int | None:
    """Samples per round of range collection, or None for all at once. onnxruntime's
    calibrators keep every intermediate tensor of every sample until they compute ranges:
    a 640x640 detector's ~0.3 GB a sample made 36 samples take 11 GB. Rounds (its
    CalibStridedMinMax, which divides the samples evenly) bound that to CALIBRATION_MEMORY."""
    import onnx

    graph = onnx.load(str(prepared), load_external_data=False).graph
    per_sample = 0
    for info in graph.value_info:
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and all(d.HasField("dim_value") for d in dims):
            per_sample += int(np.prod([d.dim_value for d in dims])) * 4
    fits = max(1, CALIBRATION_MEMORY // max(per_sample, 1))
    if fits >= samples:
        return None
    return max(d for d in range(1, fits + 1) if samples % d == 0)


def _prepared(source: Path, out: Path) -> Path:
    """Shape inference and graph optimisation, as onnxruntime recommends before quantizing
    (better fusion, fewer unquantized ops). Its symbolic shape inference fails on some
    graphs (an Expand in BERT's attention mask); ONNX's own shape inference then does."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, out = source.resolve(), out.resolve()
    # A failed symbolic inference saves sym_shape_infer_temp.onnx and its weights into the
    # working directory: keep those in a directory of our own.
    with tempfile.TemporaryDirectory(prefix="edgepack-shapes-") as scratch, contextlib.chdir(scratch):
        try:
            with converter_output():
                quant_pre_process(str(source), str(out))
        except Exception:
            with converter_output():
                quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
    return out


class OnnxFormat(ExportFormat):
    name = "onnx"
    capabilities = frozenset({MIXED_PRECISION, ATTENTION})
    suffix = ".onnx"
    precisions = ("fp32", "int8", "dynamic-int8")
    settings_class = OnnxSettings
    runtime_extra = "onnx"
    # The last onnxruntime with a cp311 aarch64 wheel for numpy<2 (Debian 12's Python).
    emulation_wheels = ("onnxruntime==1.19.2",)

    def export(self, module, inputs: tuple[TensorSpec, ...], output_names, target: "TargetProfile",
               out: Path) -> Exported:
        import torch

        # Dynamic dims become dynamic axes, one torch Dim per name so shared dims stay equal.
        # Traced at 2 where the example size is 1: torch.export fixes a size-1 axis as static.
        dims = {d.name: torch.export.Dim(d.name, min=d.min, max=d.max) for s in inputs for d in s.dynamic}
        sized = {d.name: (max(2, s.shape[d.axis]) if d.max >= 2 else 1) for s in inputs for d in s.dynamic}
        args = tuple(torch.zeros(s.shape_at(sized), dtype=getattr(torch, s.dtype)) for s in inputs)
        dynamic_shapes = tuple({d.axis: dims[d.name] for d in s.dynamic} or None for s in inputs) if dims else None
        try:
            with converter_output():
                program = torch.onnx.export(
                    module, args, dynamo=True, opset_version=target.settings("onnx").opset, verbose=False,
                    input_names=[s.name for s in inputs], output_names=output_names, dynamic_shapes=dynamic_shapes,
                )
        except Exception as exc:
            raise BuildError(
                f"torch.onnx.export failed: {root_cause(exc)} (rewrite that part of the model with "
                "ops ONNX supports, or leave the format out with --formats)"
            ) from exc
        if program is None:  # (dynamo=True returns the program)
            raise BuildError("torch.onnx.export returned no program; leave the format out with --formats")
        # One self-contained file: a bundle must not depend on a stray .onnx.data.
        program.save(str(out), external_data=False)
        return Exported(out, _op_graph(out))

    def export_key(self, target: "TargetProfile") -> object:
        return target.settings("onnx").opset  # the rest of the profile is for quantization

    def layout(self, target: "TargetProfile") -> str | None:
        return None  # the export keeps PyTorch's layout

    def recipes(self, target: "TargetProfile", precision: Precision) -> list[Recipe]:
        if precision.dynamic:
            # Weights only: no ranges to search. The ISA's concerns stay those of the int8
            # preset (u8 x s8 saturation without VNNI: reduce_range).
            int8 = target.settings("onnx").int8
            return [Recipe(per_channel=int8.per_channel, reduce_range=int8.reduce_range, weight_type="int8")]
        return [Recipe(recipe) for recipe in target.settings("onnx").int8.recipes()]

    def quantize(self, exported: Exported, out: Path, target: "TargetProfile", plan: QuantPlan,
                 calibration) -> QuantResult:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        precision, recipe, fp32 = plan.precision, plan.recipe, exported.path
        types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        if not precision.integer:
            raise BuildError(f"ONNX has no {precision.name!r} precision; use {', '.join(self.precisions)}")
        if precision.dynamic:
            # onnxruntime's recommendation for transformers: int8 weights, activations
            # quantized per inference (MatMulInteger / DynamicQuantizeLinear).
            with tempfile.TemporaryDirectory(prefix="edgepack-quant-") as tmp:
                try:
                    prepared = _prepared(fp32, Path(tmp) / "prepared.onnx")
                    excluded = _excluded(prepared, exported.graph, plan.float_ops)
                    with converter_output():
                        quantize_dynamic(str(prepared), str(out), per_channel=recipe["per_channel"],
                                         reduce_range=recipe["reduce_range"], weight_type=types[recipe["weight_type"]],
                                         nodes_to_exclude=excluded, use_external_data_format=False)
                except Exception as exc:
                    raise BuildError(f"onnxruntime dynamic quantization failed: {root_cause(exc)}") from exc
            return QuantResult("onnxruntime.quantization.quantize_dynamic", recipe, tuple(excluded))
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
        # Values were checked when the profile loaded (CHOICES).
        kwargs = dict(
            quant_format=formats[recipe["quant_format"]],
            activation_type=types[recipe["activation_type"]],
            weight_type=types[recipe["weight_type"]],
            per_channel=recipe["per_channel"],
            reduce_range=recipe["reduce_range"],
            calibrate_method=methods[recipe["calibrate_method"]],
            extra_options={"CalibPercentile": recipe["percentile"]},
        )
        with tempfile.TemporaryDirectory(prefix="edgepack-quant-") as tmp:
            source, prepared = fp32, Path(tmp) / "prepared.onnx"
            try:
                if recipe["bias_correction"]:
                    source = _bias_corrected(fp32, calibration)
                prepared = _prepared(source, prepared)
                excluded = _excluded(prepared, exported.graph, plan.float_ops)
                stride = _calibration_stride(prepared, len(next(iter(calibration.values()))))
                if stride:
                    kwargs["extra_options"] = {**kwargs["extra_options"], "CalibStridedMinMax": stride}
                key = _calibration_key(prepared, calibration, recipe["calibrate_method"])
                cache = _ranges_cache(prepared, calibration, recipe, key)
                histograms = key if recipe["calibrate_method"] == "percentile" else None
                with converter_output(), _shared_histograms(histograms):  # the histogram calibrators print progress
                    quantize_static(str(prepared), str(out), _Reader(calibration), nodes_to_exclude=excluded,
                                    use_external_data_format=False, **kwargs, **cache)
            except BuildError:
                raise
            except Exception as exc:
                raise BuildError(f"onnxruntime quantization failed: {root_cause(exc)}") from exc
        return QuantResult("onnxruntime.quantization.quantize_static", recipe, tuple(excluded))

    def has_attention(self, fp32: Path) -> bool:
        """Whether the graph multiplies two activations and has a Softmax (attention): static
        int8 recipes made for CNNs destroy such models (MiniLM: cosine 0.39), dynamic int8 holds."""
        import onnx

        graph = onnx.load(str(fp32), load_external_data=False).graph
        constants = ({i.name for i in graph.initializer}
                     | {o for n in graph.node if n.op_type == "Constant" for o in n.output})
        ops = {n.op_type for n in graph.node}
        return "Softmax" in ops and any(n.op_type == "MatMul" and not constants & set(n.input) for n in graph.node)

    def sensitive_layers(self, fp32: Path, quantized: Path, calibration, target: "TargetProfile") -> list[list[str]]:
        """Layers ranked by how much accuracy they lose on their own, most first: the drop in
        SQNR vs the float model between a layer's input and its output, measured with
        onnxruntime's qdq_loss_debug on calibration samples."""
        import onnx

        graph = onnx.load(str(fp32), load_external_data=False).graph
        wanted = {name for node in graph.node if node.op_type in WEIGHTED_OPS or node.op_type in ACTIVATIONS
                  for name in (*node.input, *node.output)}
        sample = {k: v[:SENSITIVITY_SAMPLES] for k, v in calibration.items()}
        with converter_output():
            errors = _streamed_sqnr(fp32, quantized, _Reader(sample), wanted)
        consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        producers = {name: node for node in graph.node for name in node.output}
        drops = []
        for node in graph.node:
            if node.op_type not in WEIGHTED_OPS or not node.output:
                continue
            after = consumers.get(node.output[0], [])
            # Quantization fuses an activation into the layer before it: judge them together.
            group = [node] + ([after[0]] if len(after) == 1 and after[0].op_type in ACTIVATIONS else [])
            # A Concat puts branches of different ranges under one scale (U^2-Net-p's
            # decoder: values up to 228 beside values near 8); a layer kept float keeps the
            # Concat feeding it float too, so its input keeps each branch's own scale
            # (measured there: one such layer float took mask IoU 0.63 -> 0.95; the layer
            # alone, its input still int8, 0.20).
            feeding = producers.get(node.input[0])
            group = ([feeding] if feeding is not None and feeding.op_type == "Concat" else []) + group
            sqnr_in = [errors[i]["xmodel_err"] for i in node.input if i in errors]
            out = group[-1].output[0]
            if sqnr_in and out in errors:
                drops.append((min(sqnr_in) - errors[out]["xmodel_err"], [n.name for n in group]))
        drops.sort(key=lambda d: -d[0])
        return [names for _, names in drops]

    def toolchain(self) -> dict[str, str]:
        import onnx
        import onnxruntime
        import onnxscript
        import torch

        return {"torch": torch.__version__, "onnx": onnx.__version__,
                "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}
