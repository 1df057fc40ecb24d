"""islands.py: which ops a quantized graph keeps float, on op graphs shaped like the
graphs it meets (a YOLO head whose split feeds a weighted DFL layer, a classifier), and
the formats keeping float exactly the ops a QuantPlan names."""

from pathlib import Path

import pytest

from edgepack.formats import Exported, OpGraph, QuantPlan, Recipe
from edgepack.islands import Islands, prefix, tail
from edgepack_runtime.precision import precision


def _yolo_head():
    # backbone conv -> (box conv, class conv) -> concat -> split -> (DFL conv -> decode, sigmoid) -> output
    return OpGraph.of([
        ("stem", ["images"], ["s"], True),
        ("act", ["s"], ["a"], False),
        ("body", ["a"], ["b"], True),
        ("box", ["b"], ["bx"], True),
        ("cls", ["b"], ["cl"], True),
        ("cat", ["bx", "cl"], ["c"], False),
        ("split", ["c"], ["dist", "logits"], False),
        ("softmax", ["dist"], ["p"], False),
        ("dfl", ["p"], ["d"], True),
        ("decode", ["d", "anchors"], ["xy"], False),
        ("sigmoid", ["logits"], ["scores"], False),
        ("out", ["xy", "scores"], ["output"], False),
    ])


def test_tail_takes_the_final_layers_and_the_split_that_mixes_boxes_and_scores():
    # The split feeds a weighted layer (DFL), so "ops that feed no weighted layer" alone
    # would quantize it, and with it every class score at the box logits' scale.
    assert tail(_yolo_head()) == ["box", "cls", "cat", "split", "softmax", "dfl", "decode", "sigmoid", "out"]


def test_tail_of_a_classifier_is_its_last_layer_and_what_follows():
    ops = OpGraph.of([("conv", ["x"], ["c"], True), ("relu", ["c"], ["r"], False),
                      ("fc", ["r"], ["l"], True), ("softmax", ["l"], ["p"], False)])
    assert tail(ops) == ["fc", "softmax"]


def test_prefix_is_a_share_of_the_weighted_layers_and_the_ops_up_to_the_next():
    ops = _yolo_head()  # 5 weighted layers
    assert prefix(ops, 0.0) == []
    assert prefix(ops, 0.05) == []  # rounds to no layer
    assert prefix(ops, 0.2) == ["stem", "act"]
    assert prefix(ops, 0.4) == ["stem", "act", "body"]
    assert prefix(ops, 1.0) == list(ops.ids)


def test_islands_are_op_ids_of_the_graph_and_need_one_for_a_tail_or_a_prefix():
    from edgepack.errors import BuildError

    graph = _yolo_head()
    islands = Islands(tail=True).with_prefix(0.2).with_ranked((("body",),))
    assert islands.ops(graph) == {"stem", "act", "body", *tail(graph)}
    assert islands.describe() == "tail, first 20% and 1 ranked layers float"
    assert Islands().describe() == "whole graph" and Islands().ops(None) == frozenset()
    assert Islands().with_ranked((("a", "b"),)).ops(None) == {"a", "b"}  # named by sensitive_layers(): no graph
    with pytest.raises(BuildError, match="gave no op graph"):
        Islands(prefix=0.2).ops(None)
    with pytest.raises(ValueError, match="appears twice"):
        OpGraph.of([("a", [], ["x"], True), ("a", ["x"], ["y"], False)])


def test_onnx_candidates_share_their_calibration_ranges(tmp_path):
    """The search quantizes one graph many times, keeping different parts float: the
    ranges come from one calibration, and a cached run gives the same file as a fresh one."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgepack.formats import onnx as onnx_format

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(4, 3 if i == 0 else 4, 3, 3)).astype(np.float32), f"w{i}")
               for i in range(3)]
    nodes = []
    for i in range(3):
        nodes.append(helper.make_node("Conv", ["x" if i == 0 else f"r{i - 1}", f"w{i}"], [f"c{i}"], name=f"conv{i}",
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("r2", TensorProto.FLOAT, [1, 4, 8, 8])], weights)
    fp32 = tmp_path / "model.fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    calibration = {"x": rng.random((8, 1, 3, 8, 8), dtype=np.float32)}
    recipe = {"quant_format": "qdq", "activation_type": "uint8", "weight_type": "int8", "per_channel": True,
              "reduce_range": False, "calibrate_method": "minmax", "percentile": 99.999, "bias_correction": False}
    from edgepack.targets import load_target

    target = load_target("x86-64/avx2")
    exported, int8 = Exported(fp32, onnx_format._op_graph(fp32)), precision("int8")
    assert [op.id for op in exported.graph if op.weighted] == ["conv0", "conv1", "conv2"]
    cache = onnx_format._ranges_cache(onnx_format._prepared(fp32, tmp_path / "p.onnx"), calibration, recipe)
    if not cache:
        pytest.skip("this onnxruntime's quantize_static has no calibration cache: every candidate calibrates")
    cached = Path(cache["calibration_cache_path"])
    cached.unlink(missing_ok=True)
    fmt = onnx_format.OnnxFormat()
    whole = fmt.quantize(exported, tmp_path / "a.onnx", target, QuantPlan(int8, Recipe(recipe)), calibration)
    assert cached.is_file()  # the first candidate calibrated and kept its ranges
    stamp = cached.stat().st_mtime_ns
    fmt.quantize(exported, tmp_path / "b.onnx", target, QuantPlan(int8, Recipe(recipe)), calibration)
    first = Islands(prefix=0.34).ops(exported.graph)  # the first of three convs and its activation
    kept = fmt.quantize(exported, tmp_path / "c.onnx", target, QuantPlan(int8, Recipe(recipe), first), calibration)
    assert cached.stat().st_mtime_ns == stamp  # read, not calibrated again
    assert whole.float_ops == () and kept.float_ops == ("conv0", "relu0")  # what stayed float, in graph order
    assert kept.tool == "onnxruntime.quantization.quantize_static" and kept.recipe == recipe
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    quantized = {n.name for n in onnx.load(str(tmp_path / "c.onnx")).graph.node if n.op_type == "QuantizeLinear"}
    assert len(quantized) < len({n.name for n in onnx.load(str(tmp_path / "a.onnx")).graph.node
                                 if n.op_type == "QuantizeLinear"})  # the first conv stayed float
    other = onnx_format._ranges_cache(onnx_format._prepared(fp32, tmp_path / "q.onnx"),
                                      calibration, {**recipe, "calibrate_method": "percentile"})
    assert other["calibration_cache_path"] != cache["calibration_cache_path"]


THREE_CONVS = """
import torch

def create():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 3, padding=1)).eval()

def example_inputs():
    return {"x": torch.zeros(1, 3, 16, 16)}
"""


@pytest.mark.slow
def test_tflite_prefix_keeps_the_first_layers_float(tmp_path):
    """ai-edge-quantizer scopes NO_QUANTIZE by output tensor: the first conv of three
    (a plan with the prefix of 0.34) keeps float weights and output, the others are int8."""
    import numpy as np

    import edgepack
    from edgepack.formats import get_format
    from edgepack.targets import load_target

    model = tmp_path / "convs.py"
    model.write_text(THREE_CONVS)
    built = edgepack.build(f"{model}:create", tmp_path / "b", "host", formats=["tflite"], precisions=["fp32"])
    fp32 = built.path / built.manifest.artifact("tflite-fp32").path
    from edgepack.formats import tflite

    fmt, target, int8 = get_format("tflite"), load_target("host"), precision("int8")
    exported = Exported(fp32, tflite._op_graph(fp32))
    calibration = {"x": np.random.default_rng(0).random((8, 1, 3, 16, 16), dtype=np.float32)}
    recipe = fmt.recipes(target, int8)[0]
    from ai_edge_litert.interpreter import Interpreter

    def conv_outputs(path: Path) -> list[str]:
        """The dtype of each CONV_2D's output, in graph order."""
        interpreter = Interpreter(model_path=str(path))
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        ops = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
        return [np.dtype(details[op["outputs"][0]]["dtype"]).name for op in ops]

    fmt.quantize(exported, tmp_path / "all.tflite", target, QuantPlan(int8, recipe), calibration)
    first = Islands(prefix=0.34).ops(exported.graph)
    kept = fmt.quantize(exported, tmp_path / "prefix.tflite", target, QuantPlan(int8, recipe, first), calibration)
    assert conv_outputs(tmp_path / "all.tflite") == ["int8", "int8", "int8"]
    assert conv_outputs(tmp_path / "prefix.tflite") == ["float32", "int8", "int8"]
    assert kept.float_ops == exported.graph.in_order(first) and len(kept.float_ops) >= 1


def test_a_layer_ranked_for_float_keeps_the_concat_feeding_it_float(tmp_path):
    """Branches of very different ranges joined by a Concat share one int8 scale; keeping
    the layer after it float only helps when its input, the Concat, stays float too (the
    U^2-Net-p decoder)."""
    import numpy as np
    import torch
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgepack.formats import get_format
    from edgepack.formats.onnx import _Reader
    from edgepack.targets import load_target
    from edgepack_runtime.manifest import TensorSpec

    class Branches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.small, self.large = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(3, 4, 3, padding=1)
            self.after = torch.nn.Conv2d(8, 2, 3, padding=1)

        def forward(self, x):
            return self.after(torch.cat([self.small(x), self.large(x) * 200], dim=1))

    fmt, target = get_format("onnx"), load_target("host")
    fp32 = fmt.export(Branches().eval(), (TensorSpec("x", (1, 3, 16, 16), "float32"),), ["y"], target,
                      tmp_path / "m.onnx").path
    calibration = {"x": np.random.default_rng(0).normal(size=(8, 1, 3, 16, 16)).astype(np.float32)}
    quantize_static(str(fp32), str(tmp_path / "q.onnx"), _Reader(calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    groups = fmt.sensitive_layers(fp32, tmp_path / "q.onnx", calibration, target)
    import onnx

    nodes = {n.name: n for n in onnx.load(str(fp32)).graph.node}
    joined = [g for g in groups if any(nodes[name].op_type == "Concat" for name in g)]
    assert len(joined) == 1 and [nodes[name].op_type for name in joined[0]] == ["Concat", "Conv"]
    concat, conv = (nodes[name] for name in joined[0])
    assert conv.input[0] == concat.output[0]  # the layer after the Concat, with the Concat
    assert all(len(g) == 1 for g in groups if g is not joined[0])  # the branches' layers alone


def test_one_nncf_bias_correction_serves_every_copy_of_a_graph(tmp_path):
    """A multi-target build gives each target its own copy of the same export: NNCF's bias
    correction (about a minute on a YOLOv8n) runs once per graph and sample set, not per copy."""
    import shutil

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgepack.formats import onnx as onnx_format

    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")]
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], weights)
    first, second = tmp_path / "pi-5" / "model.onnx", tmp_path / "x86" / "model.onnx"
    first.parent.mkdir()
    second.parent.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(first))
    shutil.copy2(first, second)
    calibration = {"x": rng.random((8, 1, 3, 8, 8), dtype=np.float32)}
    corrected = onnx_format._bias_corrected(first, calibration)
    stamp = corrected.stat().st_mtime_ns
    assert onnx_format._bias_corrected(second, calibration) == corrected and corrected.stat().st_mtime_ns == stamp
    other = onnx_format._bias_corrected(second, {"x": calibration["x"][:4]})  # a cross-fitted fold: its own
    assert other != corrected and other.is_file()
