"""Where a quantized graph stays float: the search's float islands, as op ids of the
exported graph (formats/contract.py). The search alone decides them (search.py); a format
only keeps float the ops its `QuantPlan` names.

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

The ranked layers: the most sensitive layers, as the format's `sensitive_layers()` names
them (MIXED_PRECISION), a few more at each step of the search.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from .errors import BuildError
from .formats.contract import OpGraph

__all__ = ["Islands", "tail", "prefix"]


def tail(graph: OpGraph) -> list[str]:
    """The ids of the tail, in graph order: the final weighted layers, every op fed by them
    directly or through others, and the ops that feed no weighted op."""
    ops = graph.ops
    consumers: dict[str, list[int]] = {}
    for index, op in enumerate(ops):
        for name in op.inputs:
            consumers.setdefault(name, []).append(index)
    following = [[j for name in op.outputs for j in consumers.get(name, ())] for op in ops]
    # free[i]: op i reaches an output (an op nothing consumes) through unweighted ops only.
    free = [False] * len(ops)
    for i in reversed(range(len(ops))):
        free[i] = not following[i] or any(free[j] and not ops[j].weighted for j in following[i])
    kept = {i for i, op in enumerate(ops) if op.weighted and free[i]}
    stack = list(kept)
    while stack:  # everything downstream of the final weighted layers
        for j in following[stack.pop()]:
            if j not in kept:
                kept.add(j)
                stack.append(j)
    feeding: set[int] = set()  # ops that feed a weighted op, directly or through others
    producer = {name: i for i, op in enumerate(ops) for name in op.outputs}
    stack = [i for i, op in enumerate(ops) if op.weighted]
    while stack:
        i = stack.pop()
        if i not in feeding:
            feeding.add(i)
            stack.extend(producer[name] for name in ops[i].inputs if name in producer)
    return [op.id for i, op in enumerate(ops) if i in kept or i not in feeding]


def prefix(graph: OpGraph, share: float) -> list[str]:
    """The ids of the first `share` of the weighted layers in graph order and of every op
    before the next weighted layer (their activations, splits and concatenations)."""
    ops = graph.ops
    weighted = [i for i, op in enumerate(ops) if op.weighted]
    count = round(share * len(weighted))
    if count == 0:
        return []
    end = weighted[count] if count < len(weighted) else len(ops)
    return [op.id for op in ops[:end]]


@dataclass(frozen=True)
class Islands:
    """What one candidate of the search keeps float, as the search decided it: the task's
    float scope (a detector's `tail`), a `prefix` share of the weighted layers, and `ranked`
    groups of the most sensitive layers (each group the op ids kept together)."""

    tail: bool = False
    prefix: float = 0.0
    ranked: tuple[tuple[str, ...], ...] = ()

    def with_prefix(self, share: float) -> "Islands":
        return replace(self, prefix=share)

    def with_ranked(self, groups: tuple[tuple[str, ...], ...]) -> "Islands":
        return replace(self, ranked=self.ranked + groups)

    def ops(self, graph: Optional[OpGraph]) -> frozenset[str]:
        """The op ids to keep float: the plan's `float_ops`. The tail and the prefix need the
        exported graph (BuildError without one: the search asks only where there is one)."""
        kept = {op_id for group in self.ranked for op_id in group}
        if self.tail or self.prefix:
            if graph is None:
                raise BuildError("this format's export gave no op graph, so no tail or prefix can be kept float; "
                                 "return one in its Exported (docs/extending.md)")
            kept.update(tail(graph) if self.tail else ())
            kept.update(prefix(graph, self.prefix) if self.prefix else ())
        return frozenset(kept)

    def describe(self) -> str:
        """For the progress line: "tail, first 25% and 4 ranked layers float", or "whole graph"."""
        parts = (["tail"] if self.tail else []) + ([f"first {self.prefix:.0%}"] if self.prefix else []) + (
            [f"{len(self.ranked)} ranked layers"] if self.ranked else [])
        if not parts:
            return "whole graph"
        return (", ".join(parts[:-1]) + " and " if len(parts) > 1 else "") + parts[-1] + " float"

    def to_dict(self) -> dict:
        """For the search's trail: the steps that chose the float ops (not the ops themselves)."""
        return {**({"tail": True} if self.tail else {}), **({"prefix": self.prefix} if self.prefix else {}),
                **({"ranked_layers": len(self.ranked)} if self.ranked else {})}
