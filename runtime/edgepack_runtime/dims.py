"""Dynamic dimensions: checking a call's shapes against the manifest, and fitting tensors
to a size (artifacts built for a few fixed sizes, golden inputs resized for a sweep)."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from .manifest import TensorSpec

__all__ = ["dim_sizes", "size_label", "tile_to", "resize", "pad", "crop"]


def dim_sizes(specs: Iterable[TensorSpec], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """The size each dynamic dim takes in `shapes` (tensor name → shape), after checking
    every shape against its spec and shared dims against each other; ValueError says what
    does not fit."""
    sizes: dict[str, int] = {}
    for spec in specs:
        shape = tuple(shapes[spec.name])
        if not spec.fits(shape):
            raise ValueError(f"{spec.name!r} has shape {list(shape)}, expected {spec.describe().split(':')[1]}")
        for dim in spec.dynamic:
            size = shape[dim.axis]
            if sizes.setdefault(dim.name, size) != size:
                raise ValueError(f"{spec.name!r} has {dim.name}={size} but another input has "
                                 f"{dim.name}={sizes[dim.name]}; inputs sharing a dim need the same size")
    return sizes


def size_label(sizes: Mapping[str, int]) -> str:
    """`seq=16,batch=4`: how reports, bench rows and validation name a size of the dynamic dims."""
    return ",".join(f"{name}={size}" for name, size in sizes.items())


def tile_to(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`value` cut or repeated (tiled) along each axis to `shape`: realistic content at any
    size, for calibration, parity sweeps and benchmarks; not for inference (see `pad`)."""
    for axis, size in enumerate(shape):
        if size != value.shape[axis]:
            value = np.take(value, np.arange(size) % value.shape[axis], axis=axis)
    return value


def resize(specs: Iterable[TensorSpec], values: Mapping[str, np.ndarray], sizes: Mapping[str, int],
           stacked: bool = False) -> dict[str, np.ndarray]:
    """`values` with each dynamic dim tiled or cut to `sizes` (`tile_to`); `stacked`: the
    values carry a leading samples axis."""
    offset = 1 if stacked else 0
    out = {}
    for spec in specs:
        value = values[spec.name]
        shape = list(value.shape)
        for dim in spec.dynamic:
            shape[dim.axis + offset] = sizes.get(dim.name, shape[dim.axis + offset])
        out[spec.name] = tile_to(value, tuple(shape))
    return out


def pad(specs: Iterable[TensorSpec], values: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]
        ) -> dict[str, np.ndarray]:
    """`values` padded at the end of each axis to `shapes`: how a call reaches an artifact
    built for a larger fixed size. The batch axis (0) repeats the last sample: samples are
    independent and the extra outputs are cut off, so any valid sample will do (zeros may
    not be valid: a mask of zeros divides by zero). Other axes get zeros, which is what
    attention masks and padding ids mean; the build checks padded sizes against PyTorch."""
    out = {}
    for spec in specs:
        value = values[spec.name]
        want = shapes[spec.name]
        if value.shape[0] != want[0]:
            value = np.pad(value, [(0, want[0] - value.shape[0])] + [(0, 0)] * (value.ndim - 1), mode="edge")
        if value.shape != want:
            value = np.pad(value, [(0, w - n) for n, w in zip(value.shape, want)])
        out[spec.name] = value
    return out


def crop(specs: Iterable[TensorSpec], values: Mapping[str, np.ndarray], sizes: Mapping[str, int]
         ) -> dict[str, np.ndarray]:
    """Outputs of a padded call cut back to the call's own dim sizes."""
    out = dict(values)
    for spec in specs:
        if spec.dynamic and spec.name in out:
            slices = [slice(None)] * out[spec.name].ndim
            for dim in spec.dynamic:
                slices[dim.axis] = slice(0, sizes[dim.name])
            out[spec.name] = out[spec.name][tuple(slices)]
    return out
