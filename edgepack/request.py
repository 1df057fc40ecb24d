"""What a build is asked to do, as typed objects, and the one list of build options.

Every build option is a field of a request part below, declared with `option(...)`: its
default, its `edgepack build` flag and its help. The CLI makes its options from them
(cli.py), `edgepack.build(model, output, target, **options)` takes the same names, and
`BuildRequest.of` puts each where it belongs. A new option is one field here plus the code
that uses it. Torch-free, so the CLI can build a request before anything heavy is imported."""

from __future__ import annotations

import textwrap
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

import click

from edgepack_runtime.errors import UsageError
from edgepack_runtime.tasks import TASKS
from edgepack_runtime.typed import did_you_mean

from .budget import (
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_COSINE,
    DEFAULT_MIN_F1,
    DEFAULT_MIN_IOU,
)

if TYPE_CHECKING:
    import torch

__all__ = ["ModelRequest", "InputsRequest", "DataRequest", "BudgetRequest", "OutputRequest", "SigningRequest",
           "BuildRequest", "Flag", "Option", "OPTIONS", "PREFERENCES", "comma_list", "describe_options"]

# Which int8 candidate within the budget a build ships (edgepack/search.py): the fastest that
# is as faithful as the most faithful within its noise, the most faithful, or the fastest.
PREFERENCES = ("balanced", "accuracy", "speed")

Samples = Union[Path, Mapping[str, Any], None]  # an .npz or folder path, or {input name: [N, ...] array}

_FLAG = "edgepack.flag"  # the field metadata key holding an option's Flag
_PATH = click.Path(path_type=Path)


@dataclass(frozen=True)
class Flag:
    """How a request field appears on `edgepack build`'s command line."""

    names: tuple[str, ...]  # click's declarations, e.g. ("--eval",)
    help: str
    settings: Mapping[str, Any]  # click.option's other arguments: type, metavar, multiple, is_flag...
    parse: Optional[Callable[[Any], Any]] = None  # the command line's value -> the field's (e.g. a comma list)
    keyword: Optional[str] = None  # its keyword in edgepack.build(), when not the field's name


def option(*names: str, help: str, default: Any = None, parse: Optional[Callable[[Any], Any]] = None,
           keyword: Optional[str] = None, **settings: Any) -> Any:
    """A request field that is a build option: its default (MISSING: none, the field is
    required), its flag(s) and help, and click's other settings for it (the default is the
    field's)."""
    return field(default=default, metadata={_FLAG: Flag(names, help, settings, parse, keyword)})


def switch(*names: str, help: str) -> Any:
    """An on/off build option, off by default."""
    return option(*names, help=help, default=False, is_flag=True)


def comma_list(value: Optional[str]) -> Optional[list[str]]:
    """A comma list, "onnx, tflite" -> ["onnx", "tflite"]; nothing -> None (the target's)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def key_values(pairs: Sequence[str]) -> Optional[dict[str, str]]:
    """("git=3f2a1c", "run=42") -> {"git": "3f2a1c", "run": "42"}; nothing -> None."""
    for pair in pairs:
        key, equals, _ = pair.partition("=")
        if not equals or not key.strip():
            raise UsageError(f"--meta {pair!r} must look like KEY=VALUE, e.g. --meta git=3f2a1c")
    return {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in pairs)} or None


@dataclass(frozen=True)
class ModelRequest:
    """The model: a torch.nn.Module, "FILE.py:FACTORY" or a checkpoint, with its weights."""

    model: Union[str, "torch.nn.Module"]
    weights: Optional[Path] = option("--weights", type=_PATH, help=".safetensors or a state_dict .pt")
    trust_checkpoint: bool = switch("--trust-checkpoint", help="Allow a full pickle as --weights (runs its code).")


@dataclass(frozen=True)
class InputsRequest:
    """The inputs (example tensors or --input specs) and the raw inputs and answers a bundle
    can carry (docs/raw-inputs.md)."""

    inputs: Union[Sequence[str], Mapping[str, Any]] = option(
        "--input", default=(), multiple=True, metavar="NAME:1x3x224x224:float32",
        help="Model input (repeat per input); optional if the file defines example_inputs(). A dim may be a range, "
             "named to share it: input_ids:1xseq=1..128:int64 attention_mask:1xseq:int64.")
    preprocess: Union[str, Path, Mapping[str, Any], None] = option(
        "--preprocess", metavar="SPEC|FILE.toml",
        help='How an image becomes the input: a preset ("imagenet"), KEY=VALUE items '
             '("resize=256 crop=224 mean=0.485,0.456,0.406 std=0.229,0.224,0.225") or a .toml [image] table.')
    tokenizer: Optional[Path] = option("--tokenizer", type=_PATH,
                                       help="tokenizer.json turning texts into the token inputs.")
    # a file, or (from a self-describing source) the class names in hand
    labels: Union[Path, tuple[str, ...], None] = option("--labels", type=_PATH,
                                                        help="Class names, one per line in class order.")
    postprocess: Optional[str] = option(
        "--postprocess", type=click.Choice(["classes", "embedding", "normalized-embedding", "detections"]),
        help="What predict() answers with (default: classes with --labels).")


@dataclass(frozen=True)
class DataRequest:
    """Samples to calibrate on and to measure accuracy on (eval may hold integer `labels`)."""

    calibration: Samples = option(
        "--calibration", type=_PATH,
        help=".npz, one array [N, ...] per input; or a folder of images, made into the input by the declared "
             "--preprocess (a checkpoint's own letterbox).")
    eval_data: Samples = option("--eval", type=_PATH,
                                help="Like --calibration, samples not used for calibration; optional int `labels`.")


@dataclass(frozen=True)
class BudgetRequest:
    """How much an artifact may lose vs PyTorch, in the terms of the model's task (None:
    inferred, edgepack/task.py)."""

    max_accuracy_drop: float = option(
        "--accuracy-budget", default=DEFAULT_MAX_ACCURACY_DROP, type=click.FloatRange(min=0), metavar="POINTS",
        help="Top-1 points an artifact may lose vs PyTorch (--eval labels).")
    min_cosine: float = option(
        "--min-cosine", default=DEFAULT_MIN_COSINE, type=click.FloatRange(-1, 1),
        help="Mean cosine similarity to PyTorch's outputs every artifact must keep (embeddings and generic outputs: "
             "each output tensor).")
    min_agreement: float = option(
        "--min-agreement", default=DEFAULT_MIN_AGREEMENT, type=click.FloatRange(0, 100), metavar="PCT",
        help="Top-1 agreement with PyTorch every artifact of a classifier must keep.")
    min_f1: float = option(
        "--min-f1", default=DEFAULT_MIN_F1, type=click.FloatRange(0, 1),
        help="Detection F1 vs PyTorch's detections (IoU 0.5, same class) every artifact of a detector must keep.")
    min_iou: float = option(
        "--min-iou", default=DEFAULT_MIN_IOU, type=click.FloatRange(0, 1),
        help="IoU of the masks vs PyTorch's (pooled over the images) every artifact of a dense model (--task "
             "segment) must keep.")
    task: Optional[str] = option(
        "--task", type=click.Choice(list(TASKS)),
        help="What the outputs are for, which decides how artifacts are judged (default: from --postprocess/"
             "--labels, else a single [N, C] output is a classifier, or an embedder when its rows are unit vectors, "
             "a single [N, 1, H, W] map of values in 0..1 a mask (segment), else generic).")
    mask_threshold: Optional[float] = option(
        "--mask-threshold", type=float,
        help="Dense models: a one-channel map's pixels above this value form the mask (default 0.5, for "
             "probabilities; 0 for logits).")
    prefer: str = option(
        "--prefer", default="balanced", type=click.Choice(PREFERENCES),
        help="Which int8 candidate within the budget ships: the fastest as faithful as the best within its noise "
             "(balanced), the most faithful (accuracy) or the fastest (speed); the manifest's quantization.search "
             "holds them all.")


@dataclass(frozen=True)
class OutputRequest:
    """Where the bundle goes, and which misses still let it be written."""

    path: Path
    name: Optional[str] = option("--name", help="Bundle name, default: the -o directory name.")
    meta: Optional[Mapping[str, str]] = option(
        "--meta", multiple=True, metavar="KEY=VALUE", parse=key_values,
        help="Record where the bundle comes from in its manifest (build.meta; repeatable): the git commit, the "
             "training run, the dataset version.")
    allow_mismatch: bool = switch("--allow-mismatch", help="Write the bundle even if an artifact fails validation.")
    allow_partial: bool = switch(
        "--allow-partial",
        help="Leave out any artifact that fails to build or misses its checks, also of the precisions named.")
    strict: bool = switch(
        "--strict", help="Fail the build if any artifact fails or misses its checks, also of the profile's "
                         "precisions (by default those are left out, with the reason in the table).")


@dataclass(frozen=True)
class SigningRequest:
    """Sign the finished bundle with this elliptic-curve private key (PEM)."""

    key: Path = option("--sign", keyword="sign", default=MISSING, type=_PATH, metavar="KEY.pem",
                       help="Sign the bundle with this EC private key (OpenSSF model-signing format).")


@dataclass(frozen=True, kw_only=True)
class BuildRequest:
    """One build: the model for `target`, in `formats` × `precisions` (None: the target's).
    `edgepack build --help` lists the options in the order of these fields and their parts."""

    model: ModelRequest
    target: str = "host"
    formats: Optional[Sequence[str]] = option("--formats", parse=comma_list,
                                              help="Comma list, default: the target's.")
    precisions: Optional[Sequence[str]] = option(
        "--precisions", parse=comma_list,
        help="Comma list of fp32,int8,dynamic-int8,fp16; default: the target's. On request any precision a format "
             "can build (dynamic-int8 for transformers).")
    inputs: InputsRequest = field(default_factory=InputsRequest)
    data: DataRequest = field(default_factory=DataRequest)
    budget: BudgetRequest = field(default_factory=BudgetRequest)
    output: OutputRequest
    signing: Optional[SigningRequest] = None  # made only when a key is given
    verify_emulated: bool = switch(
        "--verify-emulated",
        help="Also run the self-test, and int8 accuracy on eval data, on the target's ISA under qemu (slow).")

    @classmethod
    def of(cls, model, output, target: str = "host", **options: Any) -> "BuildRequest":
        """The request from `edgepack.build`'s arguments (and `edgepack build`'s): each
        option (OPTIONS) goes to its part. An unknown option is a UsageError naming them all."""
        unknown = [k for k in options if k not in OPTIONS]
        if unknown:
            raise UsageError(f"edgepack.build() has no option {', '.join(map(repr, unknown))}; "
                             f"{did_you_mean(unknown[0], OPTIONS)}its options are: {', '.join(OPTIONS)}")
        given: dict[Optional[str], dict[str, Any]] = {None: {"target": target}, "model": {"model": model},
                                                      "output": {"path": Path(output)}}
        for keyword, value in options.items():
            where = OPTIONS[keyword]
            given.setdefault(where.part, {})[where.field] = where.checked(value)
        optional = {f.name for f in fields(cls) if f.default is None}  # a part that is None unless asked for
        parts = {name: part(**given.get(name, {})) for name, part in _PARTS.items()
                 if name not in optional or any(v is not None for v in given.get(name, {}).values())}
        return cls(**parts, **given[None])


# BuildRequest's fields that are request parts.
_PARTS: dict[str, type] = {"model": ModelRequest, "inputs": InputsRequest, "data": DataRequest,
                           "budget": BudgetRequest, "output": OutputRequest, "signing": SigningRequest}
_POSITIONAL = ("model", "output", "target")  # edgepack.build()'s arguments before the options


@dataclass(frozen=True)
class Option:
    """One build option: its keyword in edgepack.build(), where it lives in a BuildRequest
    (`part` None: a field of BuildRequest itself), its default and its flag."""

    keyword: str
    part: Optional[str]
    field: str
    default: Any
    flag: Flag

    def from_command_line(self, value: Any) -> Any:
        return self.flag.parse(value) if self.flag.parse is not None else value

    def checked(self, value: Any) -> Any:
        """`value` as the command line would accept it: a choice or a number in range is
        checked as the flag checks it (edgepack.build() gets the same one-line refusal),
        other values pass as they are (paths may be arrays in hand, lists are lists)."""
        kind = self.flag.settings.get("type")
        if value is None or not isinstance(kind, (click.Choice, click.FloatRange, click.IntRange)):
            return value
        try:
            return kind.convert(value, None, None)
        except click.BadParameter as exc:
            raise UsageError(f"{self.keyword}={value!r}: {exc.message.rstrip('.')} ({self.flag.names[0]})") from None

    @property
    def shown_default(self) -> bool:
        """Whether help shows the default: not for nothing, an empty list or an off switch."""
        return self.default not in (None, ()) and not isinstance(self.default, bool)


def _options() -> dict[str, Option]:
    found: dict[str, Option] = {}
    for outer in fields(BuildRequest):
        part = _PARTS.get(outer.name)
        for f in fields(part) if part is not None else (outer,):
            flag = f.metadata.get(_FLAG)
            if flag is not None:
                keyword = flag.keyword or f.name
                if keyword in found or keyword in _POSITIONAL:  # a programming error, met on import
                    raise TypeError(f"build option {keyword!r} is declared twice; give one a keyword=")
                default = None if f.default is MISSING else f.default
                found[keyword] = Option(keyword, outer.name if part is not None else None, f.name, default, flag)
    return found


# Every build option by its edgepack.build() keyword, in `edgepack build --help`'s order.
OPTIONS: dict[str, Option] = _options()


def describe_options(indent: str = "    ") -> str:
    """`edgepack.build`'s options, one paragraph each: keyword, flag, default and help."""
    lines = ["", f"{indent}Options, with the `edgepack build` flag whose help this is:"]
    for o in OPTIONS.values():
        default = f", default {o.default!r}" if o.shown_default else ""
        lines.append(textwrap.fill(f"{o.keyword} ({o.flag.names[0]}{default}): {o.flag.help}", width=92,
                                   initial_indent=indent * 2, subsequent_indent=indent * 3))
    return "\n".join(lines) + "\n"
