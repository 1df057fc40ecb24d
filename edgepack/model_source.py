"""Load the user's model: `FILE.py:FACTORY` or a module in hand, optional weights, and its input specs."""

from __future__ import annotations

import importlib.util
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from edgepack_runtime.manifest import DetectionSettings, Dim, TensorSpec

from .errors import ModelSourceError

__all__ = ["LoadedModel", "SourceDefaults", "load_model", "parse_input_specs"]

INPUT_DTYPES = ("float32", "float16", "int64", "int32", "uint8", "bool")
# NAME:DIMS:DTYPE, DIMS joined by "x", each a size (3), a range (1..128), a named range
# (seq=1..128) or the name of a range declared on another input (seq).
_DIM = r"(?:\d+|\d+\.\.\d+|[A-Za-z_]\w*=\d+\.\.\d+|[A-Za-z_]\w*)"
_INPUT_SPEC = re.compile(rf"^(?P<name>[A-Za-z_][\w.]*):(?P<shape>{_DIM}(?:x{_DIM})*):(?P<dtype>\w+)$")
_RANGE = re.compile(r"^(?:(?P<name>[A-Za-z_]\w*)=)?(?P<min>\d+)\.\.(?P<max>\d+)$")
EXAMPLE_INPUTS = "example_inputs"


@dataclass(frozen=True)
class SourceDefaults:
    """What a self-describing model source (an Ultralytics checkpoint) says about its raw
    inputs and answers; the build uses each one where the user gave no option of its own."""

    preprocess: Optional[str] = None  # a --preprocess spec, e.g. "yolo"
    labels: tuple[str, ...] = ()  # class names in class order, as --labels would list them
    postprocess: Optional[str] = None  # a --postprocess choice, e.g. "detections"
    detection: Optional[DetectionSettings] = None  # the source's own NMS thresholds


@dataclass
class LoadedModel:
    module: torch.nn.Module
    inputs: tuple[TensorSpec, ...]
    source: str  # FILE.py:FACTORY or the checkpoint path, as given
    defaults: SourceDefaults = SourceDefaults()


def parse_input_specs(texts: Sequence[str]) -> tuple[TensorSpec, ...]:
    """`--input` values → TensorSpecs: `image:1x3x224x224:float32`, or with dynamic dims
    `input_ids:1xseq=1..128:int64` plus `attention_mask:1xseq:int64` (same size as seq).
    A dynamic dim's example size (export, golden inputs) is its maximum until the
    calibration data says otherwise (`samples.settle_shapes`)."""
    parsed: list[tuple[str, list[str], str, str]] = []
    ranges: dict[str, tuple[int, int]] = {}
    for text in texts:
        match = _INPUT_SPEC.match(text.strip())
        if not match:
            raise ModelSourceError(
                f"--input {text!r} is not NAME:SHAPE:DTYPE; write it like image:1x3x224x224:float32, "
                "or with a dynamic length input_ids:1xseq=1..128:int64"
            )
        if match["dtype"] not in INPUT_DTYPES:
            raise ModelSourceError(f"--input {text!r}: dtype {match['dtype']!r} is not one of "
                                   f"{', '.join(INPUT_DTYPES)}")
        tokens = match["shape"].split("x")
        for axis, token in enumerate(tokens):
            bound = _RANGE.match(token)
            if bound:
                name = bound["name"] or f"{match['name']}.{axis}"
                low, high = int(bound["min"]), int(bound["max"])
                if not 1 <= low <= high:
                    raise ModelSourceError(f"--input {text!r}: range {token} needs 1 ≤ min ≤ max")
                if ranges.get(name, (low, high)) != (low, high):
                    raise ModelSourceError(f"--input {text!r}: dim {name!r} is declared with two ranges; "
                                           "declare it once and refer to it by name")
                ranges[name] = (low, high)
        parsed.append((match["name"], tokens, match["dtype"], text))
    specs = []
    for input_name, tokens, dtype, text in parsed:
        shape, dynamic = [], []
        for axis, token in enumerate(tokens):
            if token.isdigit():
                if int(token) == 0:
                    raise ModelSourceError(f"--input {text!r}: every dimension must be at least 1")
                shape.append(int(token))
                continue
            bound = _RANGE.match(token)
            name = (bound["name"] or f"{input_name}.{axis}") if bound else token
            if name not in ranges:
                raise ModelSourceError(f"--input {text!r}: dim {name!r} has no range; declare it once as "
                                       f"{name}=MIN..MAX, e.g. {name}=1..128")
            low, high = ranges[name]
            shape.append(high)
            dynamic.append(Dim(name=name, axis=axis, min=low, max=high))
        specs.append(TensorSpec(name=input_name, shape=tuple(shape), dtype=dtype, dynamic=tuple(dynamic)))
    return tuple(specs)


def _import_file(path: Path):
    if not path.is_file() or path.suffix != ".py":
        raise ModelSourceError(f"model file {path} does not exist or is not a .py file; give MODEL as FILE.py:FACTORY")
    module_name = f"edgepack_user_model_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelSourceError(f"model file {path} cannot be imported; give MODEL as FILE.py:FACTORY")
    module = importlib.util.module_from_spec(spec)
    # Let the user's file import its neighbours, as `python FILE.py` would.
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a model file that calls sys.exit() is a broken model file
        raise ModelSourceError(f"importing {path} failed: {type(exc).__name__}: {exc}; fix the model file") from exc
    finally:
        sys.path.pop(0)
    return module


def _specs_from_examples(examples, where: str) -> tuple[TensorSpec, ...]:
    """Specs from example tensors (or numpy arrays): `{name: tensor}`, or one tensor named "input"."""
    if isinstance(examples, (torch.Tensor, np.ndarray)):
        examples = {"input": examples}
    if not isinstance(examples, Mapping) or not examples or not all(
            isinstance(v, (torch.Tensor, np.ndarray)) for v in examples.values()):
        raise ModelSourceError(f"{where} must be a dict of {{name: tensor}}; fix it or pass --input")
    specs = tuple(
        TensorSpec(name=str(name), shape=tuple(t.shape), dtype=str(t.dtype).removeprefix("torch."))
        for name, t in examples.items()
    )
    bad = [s.describe() for s in specs if s.dtype not in INPUT_DTYPES or 0 in s.shape]
    if bad:
        raise ModelSourceError(f"{where}: inputs {bad} need dimensions of at least 1 and a dtype in "
                               f"{', '.join(INPUT_DTYPES)}")
    return specs


def _load_weights(module: torch.nn.Module, weights: Path, trust_checkpoint: bool) -> None:
    if not weights.is_file():
        raise ModelSourceError(f"weights file {weights} does not exist; check --weights")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights))
        except Exception as exc:
            raise ModelSourceError(f"cannot read {weights} as safetensors ({exc}); "
                                   "re-save it with safetensors.torch.save_file") from exc
    else:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=not trust_checkpoint)
        except pickle.UnpicklingError:
            raise ModelSourceError(
                f"{weights} is a full pickle, not a plain state_dict; loading it can run arbitrary code. "
                "Save model.state_dict() instead, or pass --trust-checkpoint if you trust its source"
            ) from None
        except Exception as exc:
            raise ModelSourceError(f"cannot read {weights} ({type(exc).__name__}: {exc}); "
                                   "pass a .safetensors or a state_dict .pt") from exc
        if isinstance(state, torch.nn.Module):
            state = state.state_dict()
    if not isinstance(state, dict):
        raise ModelSourceError(f"{weights} holds a {type(state).__name__}, not a state_dict; save model.state_dict()")
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelSourceError(
            f"{weights} does not fit the model: missing {result.missing_keys[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}; check that FACTORY builds the architecture these weights were trained with"
        )


def load_model(
    source: Union[str, torch.nn.Module],
    weights: Optional[Path] = None,
    inputs: Union[Sequence[str], Mapping[str, object]] = (),
    trust_checkpoint: bool = False,
) -> LoadedModel:
    """The model, with weights loaded and input specs settled. `source` is FILE.py:FACTORY
    (imported, FACTORY() called), an Ultralytics checkpoint `best.pt` (network, input size,
    labels and detection settings from the file: `LoadedModel.defaults`) or a module already
    in hand; `inputs` are `--input` spec strings or example tensors/arrays `{name: tensor}`
    (else FILE.py's example_inputs())."""
    user_module = None
    defaults = SourceDefaults()
    if isinstance(source, str) and _is_checkpoint(source):
        if weights is not None:
            raise ModelSourceError(f"{source} is a checkpoint and carries its weights; drop --weights")
        user_module, module, defaults = _from_checkpoint(source)
        label = source
    elif isinstance(source, torch.nn.Module):
        module, label = source, f"{type(source).__module__}.{type(source).__qualname__}"
    elif isinstance(source, str):
        user_module, module = _from_file(source)
        label = source
    else:
        raise ModelSourceError(f"model must be FILE.py:FACTORY or a torch.nn.Module, not {type(source).__name__}")
    if weights is not None:
        _load_weights(module, Path(weights), trust_checkpoint)
    module.eval()

    if isinstance(inputs, Mapping):
        specs = _specs_from_examples(inputs, "inputs")
    elif inputs:
        if isinstance(inputs, str):
            inputs = [inputs]
        specs = parse_input_specs(inputs)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ModelSourceError(f"--input names must be unique, got {names}")
    elif user_module is not None and callable(getattr(user_module, EXAMPLE_INPUTS, None)):
        specs = _specs_from_examples(getattr(user_module, EXAMPLE_INPUTS)(),
                                     f"{label.rpartition(':')[0]}:{EXAMPLE_INPUTS}()")
    elif callable(getattr(module, EXAMPLE_INPUTS, None)):
        specs = _specs_from_examples(getattr(module, EXAMPLE_INPUTS)(), f"{type(module).__name__}.{EXAMPLE_INPUTS}()")
    else:
        raise ModelSourceError(
            f"{label} defines no {EXAMPLE_INPUTS}(), so the input shapes are unknown; pass --input "
            "NAME:1x3x224x224:float32 for each model input (Python: inputs={name: example tensor})"
        )
    return LoadedModel(module=module, inputs=specs, source=label, defaults=defaults)


def _is_checkpoint(source: str) -> bool:
    """MODEL names a checkpoint file: it ends in .pt and is not FILE.py:FACTORY."""
    from .ultralytics_source import is_checkpoint_path

    file, sep, _ = source.rpartition(":")
    return is_checkpoint_path(source) and not (sep and file.endswith(".py"))


def _from_checkpoint(source: str):
    """An Ultralytics checkpoint: (the loaded checkpoint, offering example_inputs(), its
    export-mode module, the defaults it declares)."""
    from .ultralytics_source import load_checkpoint

    loaded = load_checkpoint(Path(source))
    detection = DetectionSettings(score_threshold=loaded.score_threshold, iou_threshold=loaded.iou_threshold,
                                  max_detections=loaded.max_detections)
    return loaded, loaded.module, SourceDefaults(preprocess="yolo", labels=loaded.names, postprocess="detections",
                                                 detection=detection)


def _from_file(source: str):
    """Import FILE.py and call FACTORY(): (the imported file, the module it made)."""
    file, sep, factory_name = source.rpartition(":")
    if not sep or not file or not factory_name.isidentifier():
        raise ModelSourceError(f"model {source!r} must be FILE.py:FACTORY, e.g. examples/digits/model.py:create")
    user_module = _import_file(Path(file))
    factory = getattr(user_module, factory_name, None)
    if not callable(factory):
        found = [n for n, v in vars(user_module).items() if callable(v) and not n.startswith("_")]
        raise ModelSourceError(
            f"{file} has no function {factory_name!r}; callables defined there: {', '.join(found) or 'none'}"
        )
    try:
        module = factory()
    except (Exception, SystemExit) as exc:
        raise ModelSourceError(f"{source}() raised {type(exc).__name__}: {exc}; fix the factory") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelSourceError(f"{source}() returned {type(module).__name__}, not a torch.nn.Module")
    return user_module, module
