"""Multiply-accumulates per inference, counted on the exported ONNX graph.

Counts the ops that dominate CNN and MLP cost (Conv, ConvTranspose, Gemm, MatMul);
element-wise ops are ignored. Used for achieved GMAC/s in benchmarks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import onnx
from onnx import shape_inference

__all__ = ["count_macs"]


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def count_macs(path: Path) -> Optional[int]:
    """MACs of one inference of the ONNX model at `path`; None if shapes are unknown."""
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        try:
            out = shapes[node.output[0]]
            if node.op_type == "Conv":  # weight [Cout, Cin/groups, *kernel]
                total += math.prod(out) * math.prod(shapes[node.input[1]][1:])
            elif node.op_type == "ConvTranspose":  # weight [Cin, Cout/groups, *kernel]
                total += math.prod(shapes[node.input[0]]) * math.prod(shapes[node.input[1]][1:])
            else:
                a = shapes[node.input[0]]
                transposed = any(attr.name == "transA" and attr.i for attr in node.attribute)
                total += math.prod(out) * (a[-2] if transposed else a[-1])
        except KeyError:
            return None  # a dynamic or unknown shape: better no number than a wrong one
    return total
