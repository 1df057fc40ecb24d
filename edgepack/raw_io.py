"""What a bundle takes and answers besides tensors (docs/raw-inputs.md): the declared image
preprocessing, the tokenizer, the labels and the postprocessing, checked against the
model's tensors at build time so the device never meets a pipeline that cannot fit."""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from edgepack_runtime.manifest import (
    DetectionSettings,
    FileRef,
    ImageSteps,
    Postprocessing,
    Preprocessing,
    TensorSpec,
    TextSteps,
    image_steps_problem,
)
from edgepack_runtime.typed import Problem, did_you_mean, from_data

from .errors import ModelSourceError

__all__ = ["RawIO", "declare", "image_steps", "parse_image_spec", "PRESETS", "POSTPROCESS_CHOICES"]

LABELS_FILE = "labels.txt"
TOKENIZER_FILE = "tokenizer.json"
POSTPROCESS_CHOICES = ("classes", "embedding", "normalized-embedding", "detections")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's ImageNet evaluation: Resize(crop / 0.875) (256 for 224), CenterCrop, Normalize.
IMAGENET_CROP_RATIO = 0.875
# "unit": pixels / 255 in [0, 1], nothing else. "yolo": Ultralytics' inference transform,
# LetterBox to the input's size (grey 114 borders), / 255, RGB, NCHW.
PRESETS = ("imagenet", "unit", "yolo")
BOX_COORDINATES = 4  # a "yolo" detector output's rows: cx, cy, w, h, then one row per class
# Class scores of an exported YOLO head are sigmoids; PyTorch's golden outputs may stray by rounding.
SCORE_SLACK = 1e-4


@dataclasses.dataclass(frozen=True)
class RawIO:
    """The manifest's preprocessing and postprocessing, and the files they bring."""

    preprocessing: Optional[Preprocessing] = None
    postprocessing: Optional[Postprocessing] = None
    files: Mapping[str, bytes] = dataclasses.field(default_factory=dict)  # bundle path → content

    def write(self, bundle_dir: Path) -> None:
        for relative, data in self.files.items():
            (bundle_dir / relative).write_bytes(data)


def _file_ref(relative: str, data: bytes) -> FileRef:
    return FileRef(path=relative, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def _numbers(key: str, text: str, kind=float) -> tuple:
    try:
        if kind is float and "/" in text:  # scale=1/255
            num, den = text.split("/")
            return (float(num) / float(den),)
        return tuple(kind(v) for v in text.replace("x", ",").split(",") if v.strip())
    except (ValueError, ZeroDivisionError):
        raise ModelSourceError(f"--preprocess {key}={text!r} is not a number list; e.g. resize=256, crop=224x224, "
                               "mean=0.485,0.456,0.406, scale=1/255") from None


def parse_image_spec(text: str) -> dict:
    """The short `--preprocess` spec → the keys of ImageSteps: a preset and/or key=value
    items separated by spaces, e.g. "imagenet", "imagenet crop=192",
    "resize=256 crop=224 mean=0.485,0.456,0.406 std=0.229,0.224,0.225", "yolo",
    "letterbox=640x640 pad=114 scale=1/255"."""
    keys: dict[str, Any] = {}
    for item in text.split():
        if "=" not in item:
            if item not in PRESETS:
                raise ModelSourceError(f"--preprocess {item!r} is neither a preset ({', '.join(PRESETS)}) "
                                       f"nor KEY=VALUE; {did_you_mean(item, PRESETS)}see docs/raw-inputs.md")
            keys["preset"] = item
            continue
        key, value = item.split("=", 1)
        if key in ("resize", "crop", "letterbox"):
            keys[key] = _numbers(key, value, int)
        elif key == "pad":
            number = _numbers(key, value, int)
            keys[key] = number[0] if len(number) == 1 else value  # anything else fails ImageSteps' type check
        elif key in ("mean", "std", "scale"):
            keys[key] = _numbers(key, value) if key != "scale" else _numbers(key, value)[0]
        else:
            keys[key] = value
    return keys


def _image_keys(preprocess: Union[str, Path, Mapping]) -> dict:
    """--preprocess as given (a spec, a .toml file with an [image] table, or a dict) → keys."""
    if isinstance(preprocess, Mapping):
        return dict(preprocess)
    if str(preprocess).endswith(".toml"):
        path = Path(preprocess)
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ModelSourceError(f"cannot read --preprocess {path} ({exc.strerror})") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ModelSourceError(f"--preprocess {path} is not valid TOML ({exc})") from exc
        if set(document) != {"image"} or not isinstance(document["image"], dict):
            raise ModelSourceError(f"--preprocess {path} must hold one [image] table (docs/raw-inputs.md)")
        return dict(document["image"])
    return parse_image_spec(str(preprocess))


def _letterbox_keys(keys: dict) -> dict:
    """`letterbox=HxW` (or S for SxS) and `pad=V`, the spelling users write, → ImageSteps'
    resize + letterbox flag and pad_value; `letterbox = true` with a resize is taken too."""
    keys = dict(keys)
    if "pad" in keys:
        keys["pad_value"] = keys.pop("pad")
    size = keys.get("letterbox")
    if size is None or isinstance(size, bool):
        return keys
    size = (size,) if isinstance(size, int) else tuple(size)
    if keys.get("resize"):
        raise ModelSourceError("--preprocess letterbox=HxW is the resize; give letterbox or resize, not both")
    keys["resize"] = size * 2 if len(size) == 1 else size
    keys["letterbox"] = True
    return keys


def _image_steps(preprocess, inputs: Sequence[TensorSpec]) -> ImageSteps:
    keys = _letterbox_keys(_image_keys(preprocess))
    for key in ("resize", "crop"):  # a number is a one-item list; crop=224 is 224x224, as torchvision's CenterCrop
        if isinstance(keys.get(key), int):
            keys[key] = (keys[key],)
        if key == "crop" and isinstance(keys.get(key), (list, tuple)) and len(keys[key]) == 1:
            keys[key] = (keys[key][0], keys[key][0])
    floats = [s for s in inputs if np.dtype(s.dtype).kind == "f" and len(s.shape) == 4]
    name = keys.get("input") or (floats[0].name if len(floats) == 1 and len(inputs) == 1 else None)
    if name is None or name not in {s.name for s in inputs}:
        raise ModelSourceError(f"--preprocess needs input=NAME naming the image input (one of "
                               f"{', '.join(s.name for s in inputs)}), or a model with one 4-D float input")
    spec = next(s for s in inputs if s.name == name)
    if len(spec.shape) != 4 or np.dtype(spec.dtype).kind != "f":
        raise ModelSourceError(f"--preprocess: input {name!r} is {spec.describe()}; an image input is 4-D float")
    layout = keys.get("layout") or ("nchw" if spec.shape[1] in (1, 3) else "nhwc")
    height, width, channels = (spec.shape[2], spec.shape[3], spec.shape[1]) if layout == "nchw" else spec.shape[1:]
    preset = keys.pop("preset", None)
    if preset == "imagenet":
        keys = {"resize": (int(min(height, width) / IMAGENET_CROP_RATIO),), "crop": (height, width),
                "mean": IMAGENET_MEAN, "std": IMAGENET_STD, **keys}
    elif preset == "unit":
        keys = {"scale": 1 / 255, **keys}
    elif preset == "yolo":
        keys = {"resize": (height, width), "letterbox": True, "scale": 1 / 255, **keys}
    if not keys.get("resize") and not keys.get("crop"):
        keys["resize"] = (height, width)  # nothing said about size: fit the image to the input
    keys = {"input": name, "layout": layout, "channels": "gray" if channels == 1 else "rgb", **keys}
    try:
        steps = from_data(ImageSteps, keys, "--preprocess")
    except Problem as problem:
        raise ModelSourceError(f"{problem}; see docs/raw-inputs.md") from problem
    why = image_steps_problem(steps)
    if why is not None:
        raise ModelSourceError(f"--preprocess {why}")
    _check_image_fit(steps, spec, (height, width, channels))
    return steps


def _check_image_fit(steps: ImageSteps, spec: TensorSpec, hwc: tuple[int, int, int]) -> None:
    """Sound steps (image_steps_problem) that must also produce the input's size and channels."""
    height, width, channels = hwc
    if channels != (1 if steps.channels == "gray" else 3):
        raise ModelSourceError(f"--preprocess channels={steps.channels} makes {1 if steps.channels == 'gray' else 3} "
                               f"channel(s), input {spec.name!r} ({steps.layout}) has {channels}")
    final = steps.crop or (steps.resize if len(steps.resize) == 2 else None)
    if final is None:
        raise ModelSourceError(f"--preprocess resize={steps.resize[0]} keeps the aspect ratio, so the size varies; "
                               f"add crop={height}x{width} or resize={height}x{width}")
    if tuple(final) != (height, width):
        raise ModelSourceError(f"--preprocess makes {final[0]}x{final[1]} images, input {spec.name!r} takes "
                               f"{height}x{width}; fix crop/resize")


def _text_steps(tokenizer: Path, inputs: Sequence[TensorSpec]) -> tuple[TextSteps, bytes]:
    try:
        data = Path(tokenizer).read_bytes()
    except OSError as exc:
        raise ModelSourceError(f"cannot read --tokenizer {tokenizer} ({exc.strerror})") from exc
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise ModelSourceError(f"--tokenizer {tokenizer} is not a Hugging Face tokenizer.json "
                               f"({' '.join(str(exc).split())[:160]}); "
                               "pass the tokenizer.json saved with the model") from exc
    names = {s.name: s for s in inputs}
    integers = [s.name for s in inputs if np.dtype(s.dtype).kind in "iu"]
    ids = "input_ids" if "input_ids" in names else (integers[0] if len(integers) == 1 else None)
    if ids is None:
        raise ModelSourceError("--tokenizer needs an input named input_ids (or one integer input) for the token ids; "
                               f"the model takes {', '.join(s.describe() for s in inputs)}")
    steps = TextSteps(tokenizer=_file_ref(TOKENIZER_FILE, data), ids=ids,
                      attention_mask="attention_mask" if "attention_mask" in names else None,
                      token_type_ids="token_type_ids" if "token_type_ids" in names else None)
    fed = {ids, steps.attention_mask, steps.token_type_ids}
    others = [s.name for s in inputs if s.name not in fed]
    if others:
        raise ModelSourceError(f"--tokenizer feeds input_ids, attention_mask and token_type_ids; the model also "
                               f"takes {', '.join(others)}, which a text cannot fill")
    for name in fed - {None}:
        if len(names[name].shape) != 2 or np.dtype(names[name].dtype).kind not in "iu":
            raise ModelSourceError(f"--tokenizer: input {name!r} is {names[name].describe()}; token inputs are "
                                   "[batch, tokens] integers")
    return steps, data


def _labels(path: Union[Path, Sequence[str]], classes: int, output: TensorSpec) -> bytes:
    """labels.txt's content from --labels FILE, or from class names in hand (a checkpoint's)."""
    if not isinstance(path, (str, Path)):
        path = list(path)
        if len(path) != classes or any("\n" in str(n) for n in path):
            raise ModelSourceError(f"the model's {len(path)} class names do not fit output {output.name!r} "
                                   f"{list(output.shape)} with {classes} classes; pass --labels FILE")
        return ("\n".join(map(str, path)) + "\n").encode("utf-8")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ModelSourceError(f"cannot read --labels {path} ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise ModelSourceError(f"--labels {path} is not UTF-8 text; one label per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != classes:
        raise ModelSourceError(f"--labels {path} has {len(lines)} labels, output {output.name!r} "
                               f"{list(output.shape)} has {classes} classes; one label per line, in class order")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _are_probabilities(values: np.ndarray) -> bool:
    """Whether reference outputs already are probabilities (non-negative rows summing to 1):
    then the runtime must not apply softmax again."""
    rows = values.reshape(values.shape[0], -1).astype(np.float64)
    return bool(np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))


def image_steps(preprocess, inputs: Sequence[TensorSpec]) -> ImageSteps:
    """The ImageSteps a --preprocess declaration (spec, .toml, dict or ImageSteps) makes for
    `inputs`: known before any sample loads, as a folder of images needs them."""
    return preprocess if isinstance(preprocess, ImageSteps) else _image_steps(preprocess, inputs)


def declare(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], reference_outputs: Mapping[str, np.ndarray], *,
            preprocess=None, tokenizer: Optional[Path] = None, labels: Union[Path, Sequence[str], None] = None,
            postprocess: Optional[str] = None, detection: Optional[DetectionSettings] = None) -> RawIO:
    """Check and record the declared raw-input handling (ModelSourceError on any misfit).
    `reference_outputs`: PyTorch's golden outputs, stacked ([N, ...] per output); `labels`
    a file or the class names; `detection` the NMS settings of "detections" (default:
    DetectionSettings())."""
    if preprocess is not None and tokenizer is not None:
        raise ModelSourceError("--preprocess (images) and --tokenizer (texts) exclude each other: a bundle takes "
                               "one kind of raw input")
    files: dict[str, bytes] = {}
    pre = None
    if preprocess is not None:
        pre = Preprocessing(image=preprocess if isinstance(preprocess, ImageSteps)
                            else _image_steps(preprocess, inputs))
    elif tokenizer is not None:
        steps, files[TOKENIZER_FILE] = _text_steps(tokenizer, inputs)
        pre = Preprocessing(text=steps)
    if postprocess is None and labels is not None:
        postprocess = "classes"
    if postprocess is None:
        return RawIO(pre, None, files)
    if postprocess not in POSTPROCESS_CHOICES:
        raise ModelSourceError(f"--postprocess {postprocess!r} is not one of {', '.join(POSTPROCESS_CHOICES)}")
    if len(outputs) != 1:
        raise ModelSourceError(f"--postprocess needs a model with one output; this one has {len(outputs)}")
    output = outputs[0]
    if postprocess == "detections":
        post = _detections(output, reference_outputs[output.name], labels, files)
        return RawIO(pre, dataclasses.replace(post, detection=detection or post.detection), files)
    classes = int(np.prod(output.shape[1:]))
    if postprocess != "classes":
        if labels is not None:
            raise ModelSourceError("--labels go with --postprocess classes or detections, not with an embedding")
        post = Postprocessing(output=output.name, kind="embedding", normalize=postprocess == "normalized-embedding")
        return RawIO(pre, post, files)
    label_ref = None
    if labels is not None:
        files[LABELS_FILE] = _labels(labels, classes, output)
        label_ref = _file_ref(LABELS_FILE, files[LABELS_FILE])
    post = Postprocessing(output=output.name, kind="classes", labels=label_ref,
                          softmax=not _are_probabilities(reference_outputs[output.name]), top_k=min(5, classes))
    return RawIO(pre, post, files)


def _detections(output: TensorSpec, reference: np.ndarray, labels: Union[Path, Sequence[str], None],
                files: dict) -> Postprocessing:
    """--postprocess detections: an output laid out as Ultralytics' exported head, [1, 4 +
    classes, anchors] (box centre, size, then class scores in 0..1), with one label per class."""
    shape = tuple(output.shape)
    if len(shape) != 3 or shape[0] != 1 or shape[1] < BOX_COORDINATES + 1:
        raise ModelSourceError(f"--postprocess detections needs an output [1, 4 + classes, anchors] (cx, cy, w, h, "
                               f"then a score per class, as Ultralytics' exported head); {output.name!r} is "
                               f"{list(shape)}")
    scores = np.asarray(reference)[..., BOX_COORDINATES:, :]  # stacked samples [N, 1, 4 + C, A]
    if scores.size and (scores.min() < -SCORE_SLACK or scores.max() > 1 + SCORE_SLACK):
        raise ModelSourceError(f"--postprocess detections: output {output.name!r} rows 4.. hold values from "
                               f"{scores.min():.3g} to {scores.max():.3g}, not class scores in 0..1; export the head "
                               "with its sigmoid (Ultralytics: model.model[-1].export = True)")
    label_ref = None
    if labels is not None:
        files[LABELS_FILE] = _labels(labels, shape[1] - BOX_COORDINATES, output)
        label_ref = _file_ref(LABELS_FILE, files[LABELS_FILE])
    return Postprocessing(output=output.name, kind="detections", labels=label_ref, softmax=False,
                          detection=DetectionSettings())
