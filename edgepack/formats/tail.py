"""The tail of a graph: the ops after its last weighted layers (convolutions, matmuls).

A detector's tail decodes boxes and concatenates them (pixels, up to ~640) with class
scores (0..1) into one output; quantized with one scale per tensor, the scores round to
zero (a real YOLOv8: 0 of 62 detections kept at cosine 0.9998). Keeping the tail in float
costs little time (no weighted layer is in it) and keeps every part of the output at its
own scale. Formats resolve their recipe's `float_tail` with this.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Sequence

__all__ = ["tail"]


def tail(ops: Sequence[tuple[Hashable, Iterable[str], Iterable[str], bool]]) -> list[Hashable]:
    """The ids of the ops that feed no weighted op, directly or through others, in graph
    order. `ops`: (id, input tensor names, output tensor names, is weighted) per op."""
    producer = {out: op_id for op_id, _, outs, _ in ops for out in outs}
    inputs = {op_id: list(ins) for op_id, ins, _, _ in ops}
    feeding: set = set()
    stack = [op_id for op_id, _, _, weighted in ops if weighted]
    while stack:
        op_id = stack.pop()
        if op_id in feeding:
            continue
        feeding.add(op_id)
        stack.extend(producer[name] for name in inputs[op_id] if name in producer)
    return [op_id for op_id, _, _, _ in ops if op_id not in feeding]
