"""Where a quantized graph stays float: its tail and, when that is not enough, its first layers.

The tail: a detector's head ends in 1x1 convolutions whose outputs (box distributions and
class logits) are concatenated, split again and decoded into boxes (pixels, up to ~640)
and class scores (0..1) in one output. Quantized with one scale per tensor, the scores
round away (a real YOLOv8: 0 of 62 detections kept at cosine 0.9998), and a split that
shares one scale between box logits and class logits quantizes every score to steps of
0.03. So the tail is the final weighted layers (a path to an output through no other
weighted layer) and every op after them: a few small convolutions, the rest no weights.

The prefix: the first layers of a network see the full resolution. On thin-line drawings
one quantized tensor there costs a YOLOv8 detector 6 % of its detections, while its later
layers take int8 without loss (examples/yolo): keeping the first share of the weighted
layers float is what makes such a model hold, at part of the speed int8 is for.

Formats resolve their recipe's `float_tail` and `float_prefix` with these.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Sequence, TypeVar

__all__ = ["float_ops", "prefix", "tail"]

Id = TypeVar("Id", bound=Hashable)  # how a format names an op: an index, a node name
Op = tuple[Id, Iterable[str], Iterable[str], bool]  # id, input names, output names, is weighted


def tail(ops: Sequence[Op[Id]]) -> list[Id]:
    """The ids of the tail, in graph order: the final weighted layers, every op fed by them
    directly or through others, and the ops that feed no weighted op. `ops` in graph
    (topological) order."""
    ops = [(op_id, list(ins), list(outs), weighted) for op_id, ins, outs, weighted in ops]
    consumers: dict[str, list[int]] = {}
    for index, (_, ins, _, _) in enumerate(ops):
        for name in ins:
            consumers.setdefault(name, []).append(index)
    following = [[j for name in outs for j in consumers.get(name, ())] for _, _, outs, _ in ops]
    # free[i]: op i reaches an output (an op nothing consumes) through unweighted ops only.
    free = [False] * len(ops)
    for i in reversed(range(len(ops))):
        free[i] = not following[i] or any(free[j] and not ops[j][3] for j in following[i])
    kept = {i for i, op in enumerate(ops) if op[3] and free[i]}
    stack = list(kept)
    while stack:  # everything downstream of the final weighted layers
        for j in following[stack.pop()]:
            if j not in kept:
                kept.add(j)
                stack.append(j)
    feeding: set[int] = set()  # ops that feed a weighted op, directly or through others
    producer = {name: i for i, (_, _, outs, _) in enumerate(ops) for name in outs}
    stack = [i for i, op in enumerate(ops) if op[3]]
    while stack:
        i = stack.pop()
        if i not in feeding:
            feeding.add(i)
            stack.extend(producer[name] for name in ops[i][1] if name in producer)
    return [op[0] for i, op in enumerate(ops) if i in kept or i not in feeding]


def prefix(ops: Sequence[Op[Id]], share: float) -> list[Id]:
    """The ids of the first `share` of the weighted layers in graph order and of every op
    before the next weighted layer (their activations, splits and concatenations)."""
    weighted = [i for i, op in enumerate(ops) if op[3]]
    count = round(share * len(weighted))
    if count == 0:
        return []
    end = weighted[count] if count < len(weighted) else len(ops)
    return [op[0] for op in ops[:end]]


def float_ops(ops: Sequence[Op[Id]], recipe: dict) -> list[Id]:
    """The ids of the ops `recipe` keeps float through `float_tail` and `float_prefix`, in
    graph order, each once."""
    kept = set((tail(ops) if recipe.get("float_tail") else [])
               + (prefix(ops, recipe["float_prefix"]) if recipe.get("float_prefix") else []))
    return [op[0] for op in ops if op[0] in kept]
