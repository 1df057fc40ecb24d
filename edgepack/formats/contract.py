"""The typed quantization contract between the build and a format (docs/extending.md).

`export()` returns an `Exported`: the fp32 file, the op graph read from it once (what the
search needs to decide which ops stay float) and whatever the format itself needs later
(ncnn: the traced TorchScript its fp16 is converted from). `quantize()` takes a `QuantPlan`:
the precision (edgepack_runtime.precision), one of the format's `Recipe`s, and the op ids
to keep float, which the search alone decides (edgepack/islands.py); it returns a
`QuantResult`: the tool, the recipe it applied and the ops that actually stayed float,
which is what the manifest records (`Artifact.quantization`).

An op id is how the format names an op in its own graph, and the same string everywhere:
in the graph, in `sensitive_layers()`, in the plan and in the result (ONNX: the node name;
TFLite: the op's first output tensor, how ai-edge-quantizer scopes per-op overrides).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Optional

from edgepack_runtime.precision import Precision

__all__ = ["Op", "OpGraph", "Exported", "Recipe", "QuantPlan", "QuantResult"]


class Op(NamedTuple):
    """One op of an exported graph: its id, the tensors it reads and writes, and whether it
    has learned weights (a convolution, a fully connected layer, a matmul with weights)."""

    id: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    weighted: bool


@dataclass(frozen=True)
class OpGraph:
    """An exported graph's ops in graph (topological) order, each id once."""

    ops: tuple[Op, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for op in self.ops:
            if op.id in seen:  # a programming error of the format that read the graph
                raise ValueError(f"op id {op.id!r} appears twice in the graph; op ids must be unique")
            seen.add(op.id)

    @classmethod
    def of(cls, ops: Iterable[tuple[str, Iterable[str], Iterable[str], bool]]) -> "OpGraph":
        """From (id, inputs, outputs, weighted) tuples in graph order."""
        return cls(tuple(Op(str(i), tuple(ins), tuple(outs), bool(w)) for i, ins, outs, w in ops))

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(op.id for op in self.ops)

    def in_order(self, ids: Iterable[str]) -> tuple[str, ...]:
        """Those of `ids` that are ops of this graph, in graph order."""
        wanted = set(ids)
        return tuple(op.id for op in self.ops if op.id in wanted)


@dataclass(frozen=True)
class Exported:
    """What `export()` made: the fp32 artifact at `path`, its op graph (None: the format
    reads none, and the search keeps nothing float but the layers `sensitive_layers()`
    names) and `state`, the format's own (passed back to its `quantize()`; the build never
    reads it)."""

    path: Path
    graph: Optional[OpGraph] = None
    state: Any = None

    def at(self, path: Path) -> "Exported":
        """The same export, its files copied to `path` (a multi-target build's other targets)."""
        return replace(self, path=Path(path))


class Recipe(Mapping[str, Any]):
    """One set of a format's quantization knobs, as `recipes()` lists them (ONNX:
    quant_format, calibrate_method, …; TFLite: recipe, range_update): what the tool is
    told, never which ops stay float (that is the plan's). Immutable; `Recipe(mapping,
    **more)` like a dict."""

    __slots__ = ("_knobs",)

    def __init__(self, knobs: Optional[Mapping[str, Any]] = None, /, **more: Any) -> None:
        self._knobs = {**dict(knobs or {}), **more}

    def __getitem__(self, key: str) -> Any:
        return self._knobs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._knobs)

    def __len__(self) -> int:
        return len(self._knobs)

    def __repr__(self) -> str:
        return f"Recipe({self._knobs!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._knobs.items())))

    def to_dict(self) -> dict[str, Any]:
        """As the manifest records it."""
        return dict(self._knobs)


@dataclass(frozen=True)
class QuantPlan:
    """What to build: `precision`, with `recipe` (one of the format's `recipes()`), keeping
    the ops `float_ops` names (ids of the exported graph or of `sensitive_layers()`) in float
    weights and activations."""

    precision: Precision
    recipe: Recipe = field(default_factory=Recipe)
    float_ops: frozenset[str] = frozenset()


@dataclass(frozen=True)
class QuantResult:
    """What `quantize()` did: the `tool` that quantized, the `recipe` it applied (the plan's,
    or what the precision implies where it has no knobs) and the ops that actually stayed
    float, in graph order (those of the plan the tool's graph has)."""

    tool: str
    recipe: Recipe = field(default_factory=Recipe)
    float_ops: tuple[str, ...] = ()
