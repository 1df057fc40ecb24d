"""Sample data for calibration, validation and evaluation, as stacked per-input arrays.

File convention (`--calibration`, `--eval`): an `.npz` with one array per model input,
the first axis counting samples; or, for a model with one image input, a folder of images
(png, jpg, jpeg, bmp, webp; sorted by name), each made into the input tensor by the
runtime's own ImagePipeline for the declared image steps (what the device will do). For an
input of shape [1, 1, 8, 8] the array is [N, 1, 8, 8] (the batch axis of 1 becomes the sample
axis) or [N, 1, 1, 8, 8].
An eval file may add an integer `labels` array of length N (top-1 accuracy); without it,
artifacts are judged by how closely they follow PyTorch on those samples. Either file may
add an integer `groups` array of length N, one id per sample: samples that share an id
come from one source (crops or flips of one photo) and count as one independent unit in
every interval, and in every split of the samples (edgepack/holdout.py). A folder's
images are each their own group.
Inside edgepack every sample array is normalised to [N, *input_shape].
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from edgepack_runtime.dims import dim_sizes
from edgepack_runtime.errors import InputError
from edgepack_runtime.manifest import ImageSteps, TensorSpec

from .errors import ModelSourceError

__all__ = ["load_samples", "settle_shapes", "random_samples", "golden_inputs", "LABELS", "GROUPS",
           "IMAGE_SUFFIXES"]

LABELS = "labels"
GROUPS = "groups"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")  # what a folder of samples may hold
GOLDEN_FROM_CALIBRATION = 8
GOLDEN_RANDOM = 4
GOLDEN_SEED = 20240501


def _normalise(name: str, array: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    per_sample = array.shape[1:]
    if array.ndim == len(spec.shape) + 1 and spec.fits(per_sample):
        stacked = array
    elif array.ndim == len(spec.shape) and spec.fits((1,) + per_sample):
        stacked = array.reshape((array.shape[0], 1) + per_sample)
    else:
        dims = spec.describe().split(":")[1].split("x")
        wanted = ", ".join(dims[1:] if dims[0] == "1" else dims)
        raise ModelSourceError(
            f"{where}: array {name!r} has shape {list(array.shape)}, but input {spec.describe()} "
            f"needs [N, {wanted}] (N samples); re-save it with that shape"
        )
    want = np.dtype(spec.dtype)
    if stacked.dtype != want:
        if stacked.dtype.kind != want.kind:
            raise ModelSourceError(
                f"{where}: array {name!r} has dtype {stacked.dtype}, input needs {want}; convert it before saving"
            )
        stacked = stacked.astype(want)  # same kind (e.g. float64 → float32) is safe to cast
    return np.ascontiguousarray(stacked)


def load_samples(
    source: Union[Path, str, Mapping[str, Any]], specs: Sequence[TensorSpec], evaluation: bool = False,
    image_steps: Optional[ImageSteps] = None,
) -> tuple[dict[str, np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """Calibration (or, with `evaluation`, eval) samples from an .npz path, a folder of
    images (made into tensors by `image_steps`, the declared preprocessing) or a dict of
    arrays/tensors in hand; returns (inputs, labels, groups), labels None unless eval data
    has them, groups None unless the data has them (each sample its own group)."""
    role = "--eval" if evaluation else "--calibration"
    if isinstance(source, Mapping):
        return _samples_from(source, specs, evaluation, f"{role.lstrip('-')} arrays")
    where = f"{role} {source}"
    if Path(source).is_dir():
        return _samples_from(_images(Path(source), specs, image_steps, where), specs, evaluation, where)
    try:
        data = np.load(source, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelSourceError(f"cannot read {where} ({exc}); pass an .npz written by np.savez") from exc
    with data:
        try:
            return _samples_from(data, specs, evaluation, where)
        except (ValueError, OSError, zipfile.BadZipFile) as exc:  # object arrays (never unpickled), truncated members
            raise ModelSourceError(f"cannot read {where} ({exc}); save plain numeric arrays with np.savez") from exc


def _samples_from(data: Mapping[str, Any], specs: Sequence[TensorSpec], evaluation: bool, where: str
                  ) -> tuple[dict[str, np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    files = set(data.files if hasattr(data, "files") else data)
    missing = [s.name for s in specs if s.name not in files]
    if missing:
        raise ModelSourceError(
            f"{where} has no array for input(s) {missing} (it holds {sorted(files)}); "
            "give one array per model input, named like the input"
        )
    inputs = {s.name: _normalise(s.name, _array(data[s.name]), s, where) for s in specs}
    labels = _ids(data, LABELS, where) if evaluation else None
    groups = _ids(data, GROUPS, where)
    for name, value in inputs.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ModelSourceError(f"{where}: array {name!r} holds NaN or infinite values; "
                                   "calibration and evaluation need real, finite samples")
    try:
        dim_sizes(specs, {name: value.shape[1:] for name, value in inputs.items()})
    except ValueError as exc:
        raise ModelSourceError(f"{where}: array {exc}") from exc
    counts = {len(v) for v in inputs.values()} | {len(ids) for ids in (labels, groups) if ids is not None}
    if len(counts) != 1 or 0 in counts:
        raise ModelSourceError(f"{where}: every array needs the same, non-zero number of samples; got {sorted(counts)}")
    return inputs, labels, groups


def _ids(data: Mapping[str, Any], name: str, where: str) -> Optional[np.ndarray]:
    """The optional 1-D integer array `name` (labels, groups), checked."""
    if name not in (data.files if hasattr(data, "files") else data):
        return None
    ids = _array(data[name])
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise ModelSourceError(f"{where}: {name!r} must be a 1-D integer array (one id per sample), "
                               f"got {ids.dtype} {list(ids.shape)}")
    return ids


def _images(folder: Path, specs: Sequence[TensorSpec], steps: Optional[ImageSteps], where: str
            ) -> dict[str, np.ndarray]:
    """A folder's images → {image input: [N, *shape]}, each through the runtime's ImagePipeline."""
    from edgepack_runtime.preprocess import ImagePipeline

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ModelSourceError(f"{where} holds no images ({', '.join(IMAGE_SUFFIXES)}); put the images there, "
                               "or pass an .npz of input arrays")
    if steps is None:
        raise ModelSourceError(f"{where} is a folder of images, but no preprocessing says how an image becomes "
                               "the input tensor; pass --preprocess (e.g. yolo, imagenet), or an .npz of input arrays")
    if len(specs) != 1:
        raise ModelSourceError(f"{where} is a folder of images, but the model has {len(specs)} inputs; "
                               "pass an .npz with one array per input")
    pipeline = ImagePipeline(steps, specs[0])
    tensors = []
    for path in files:
        try:
            tensors.append(pipeline(path))
        except InputError as exc:
            raise ModelSourceError(f"{where}: {path.name}: {exc}") from exc
    return {steps.input: np.concatenate(tensors)}


def _array(value: Any) -> np.ndarray:
    """A numpy array from an array or a (CPU) torch tensor, without importing torch here."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise ModelSourceError(f"samples must be numpy arrays or torch tensors, not {type(value).__name__}")
    return value


def settle_shapes(specs: Sequence[TensorSpec], samples: dict[str, np.ndarray]) -> tuple[TensorSpec, ...]:
    """Specs whose dynamic dims take the size of the calibration data: the model is
    exported, and its golden inputs drawn, at the size it will be calibrated on."""
    return tuple(dataclasses.replace(s, shape=samples[s.name].shape[1:]) if s.dynamic else s for s in specs)


def random_samples(specs: Sequence[TensorSpec], count: int, seed: int,
                   like: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
    """Seeded random samples. With `like`, floats are drawn uniformly inside each input's
    observed range, so int8 parity is measured where the model was calibrated."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in specs:
        shape = (count,) + tuple(spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            if like is not None:
                low, high = float(like[spec.name].min()), float(like[spec.name].max())
                out[spec.name] = rng.uniform(low, high, size=shape).astype(dtype)
            else:
                out[spec.name] = rng.standard_normal(size=shape).astype(dtype)
        elif dtype.kind == "b":
            out[spec.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            out[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
    return out


def golden_inputs(specs: Sequence[TensorSpec],
                  calibration: Optional[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], int]:
    """The inputs every artifact is checked on: the first calibration samples plus seeded
    random ones; returns them and how many leading samples are real."""
    random = random_samples(specs, GOLDEN_RANDOM, GOLDEN_SEED, like=calibration)
    if calibration is None:
        return random, 0
    real = min(GOLDEN_FROM_CALIBRATION, len(next(iter(calibration.values()))))
    return {s.name: np.concatenate([calibration[s.name][:real], random[s.name]]) for s in specs}, real
