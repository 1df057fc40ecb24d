"""Ultralytics' letterbox, with or without OpenCV: a detector sees the pixels it was validated on.

YOLO models are trained and validated on images that `ultralytics.data.augment.LetterBox`
made: scaled with OpenCV's `cv2.resize(..., INTER_LINEAR)` so the whole image fits,
centred, the borders filled with grey 114. The runtime does not depend on OpenCV, and
Pillow's bilinear filter is a different one (it antialiases when shrinking), so
`resize_linear` re-implements OpenCV's 8-bit INTER_LINEAR bit for bit: its 11-bit
fixed-point weights, the order and rounding of its two passes, its edge rules, and the
2x2 box average it switches to for an exact halving (tests/runtime/test_letterbox.py
compares it with cv2 on thousands of random images and sizes). The weights and indices
depend on the sizes only, so they are computed once per size and cached. When OpenCV is
installed, `resize` (what the letterbox uses) calls it instead: same pixels, ~5x faster."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["Geometry", "letterbox", "letterbox_size", "resize", "resize_backend", "resize_linear", "PAD_VALUE"]

# Ultralytics' default border grey (LetterBox(padding_value=114)).
PAD_VALUE = 114
# OpenCV's INTER_RESIZE_COEF_BITS: interpolation weights are integers out of 2**11.
COEF_BITS = 11
COEF_ONE = 1 << COEF_BITS
# The vertical pass keeps 16-bit intermediates: OpenCV drops 4 bits of each horizontal
# sum, multiplies by the weight keeping the high 16 bits of the product, then rounds away
# the last 2 bits (VResizeLinear<uchar>: 11 + 11 = 4 + 16 + 2).
_ROW_SHIFT, _PRODUCT_SHIFT, _ROUND_SHIFT = 4, 16, 2
# OpenCV compares scale factors to integers within DBL_EPSILON.
_DBL_EPSILON = float(np.finfo(np.float64).eps)
# Ultralytics nudges the padding split (round(d - 0.1), round(d + 0.1)) so an odd total
# puts the extra pixel at the bottom/right.
_PAD_NUDGE = 0.1
# Resize plans kept (a few KB each): enough for every size a device's cameras and folders
# mix, small enough that a stream of ever-new sizes cannot grow memory.
PLAN_CACHE_SIZE = 64
# The int32 working rows of one band of output rows: small enough to stay in a core's L2
# cache and to be reused band after band (numpy's fresh multi-MB temporaries fault in page
# by page, which cost more than the arithmetic).
STRIP_BYTES = 256 * 1024


def _taps(src: int, dst: int, clamp_fraction: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and fixed-point weights of each output position along one axis, as
    OpenCV's resizeGeneric_ computes them: the position in float64, cast to float32, its
    floor and fraction in float32, weights rounded half to even (saturate_cast<short>).
    Horizontally a position outside the image takes the edge pixel at full weight
    (`clamp_fraction`); vertically OpenCV keeps the fraction and only clamps the rows, so
    both weights then apply to the same edge row, each product floored on its own."""
    scale = 1.0 / (dst / src)  # OpenCV inverts the inverse scale; the last bit can differ from src/dst
    position = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position)
    fraction = (position - first).astype(np.float32)
    first = first.astype(np.int64)
    if clamp_fraction:
        fraction[(first < 0) | (first >= src - 1)] = 0
    w1 = np.rint(fraction * np.float32(COEF_ONE)).astype(np.int32)
    w0 = np.rint((np.float32(1) - fraction) * np.float32(COEF_ONE)).astype(np.int32)
    return np.clip(first, 0, src - 1), np.clip(first + 1, 0, src - 1), w0, w1


@dataclass(frozen=True)
class _Strip:
    """A band of output rows and the band of horizontally resized rows it reads."""

    start: int  # output rows start:stop …
    stop: int
    first: int  # … read the horizontal pass's rows first:last (indices into _Plan.rows)
    last: int
    top: np.ndarray  # per output row: its upper tap, counted from `first` …
    bottom: np.ndarray  # … and its lower one


@dataclass(frozen=True)
class _Plan:
    """Everything `resize_linear` computes from the sizes alone, once per (source size,
    output size, channels): a camera or a folder of photos repeats the same few sizes.
    Rows are addressed as flat runs of width x channels bytes, so every numpy loop runs
    over a whole row instead of a 3-element pixel (5x slower on an inner axis of 3)."""

    rows: np.ndarray  # the source rows the output reads (a big shrink reads few)
    left: np.ndarray  # per flat output column: the flat source column of the left tap …
    right: np.ndarray  # … and of the right tap
    left_weight: np.ndarray  # int32 per flat output column
    right_weight: np.ndarray
    top_weight: np.ndarray  # int32, a column: one weight per output row
    bottom_weight: np.ndarray
    strips: tuple[_Strip, ...]
    strip_rows: int  # the most output rows in a strip …
    band_rows: int  # … and the most horizontal rows one reads


def _flat_columns(columns: np.ndarray, channels: int) -> np.ndarray:
    """Pixel columns → the byte columns of all their channels in a flattened row."""
    return (columns[:, None] * channels + np.arange(channels)).ravel()


def _strips(top: np.ndarray, bottom: np.ndarray, row_bytes: int) -> tuple[_Strip, ...]:
    """Bands of output rows whose int32 working rows fit in STRIP_BYTES. Both taps grow
    with the output row, so each band reads one contiguous run of horizontal rows."""
    step = max(1, STRIP_BYTES // (row_bytes * np.dtype(np.int32).itemsize))
    strips = []
    for start in range(0, len(top), step):
        stop = min(start + step, len(top))
        first, last = int(top[start]), int(bottom[stop - 1]) + 1
        strips.append(_Strip(start, stop, first, last, top[start:stop] - first, bottom[start:stop] - first))
    return tuple(strips)


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def _plan(src_w: int, src_h: int, width: int, height: int, channels: int) -> _Plan:
    x0, x1, a0, a1 = _taps(src_w, width, clamp_fraction=True)
    y0, y1, b0, b1 = _taps(src_h, height, clamp_fraction=False)
    rows, row_of = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    strips = _strips(row_of[:height], row_of[height:], width * channels)
    plan = _Plan(rows=rows, left=_flat_columns(x0, channels), right=_flat_columns(x1, channels),
                 left_weight=np.repeat(a0, channels), right_weight=np.repeat(a1, channels),
                 top_weight=b0[:, None], bottom_weight=b1[:, None], strips=strips,
                 strip_rows=max(s.stop - s.start for s in strips), band_rows=max(s.last - s.first for s in strips))
    for array in (plan.rows, plan.left, plan.right, plan.left_weight, plan.right_weight, plan.top_weight,
                  plan.bottom_weight, *(a for s in strips for a in (s.top, s.bottom))):
        array.setflags(write=False)  # shared by every call (and thread) with these sizes
    return plan


def _halve(pixels: np.ndarray) -> np.ndarray:
    """OpenCV's INTER_AREA fast path, which INTER_LINEAR takes for an exact 2x shrink of
    both sides: each output is the mean of a 2x2 block. Its SIMD code for 1, 3 and 4
    channels rounds halves up; 2 channels take the generic code, which rounds half to even."""
    blocks = pixels.astype(np.int32)
    total = blocks[0::2, 0::2] + blocks[0::2, 1::2] + blocks[1::2, 0::2] + blocks[1::2, 1::2]
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        return np.rint(total / 4).astype(np.uint8)
    return ((total + 2) >> 2).astype(np.uint8)


def resize_linear(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)` of a uint8
    HxW or HxWxC array, bit for bit, shrinking or enlarging (a HxWx1 array stays 3-D),
    in numpy alone: the reference for `resize`, and what it runs without OpenCV."""
    _check_resize(pixels, width, height)
    src_h, src_w = pixels.shape[:2]
    if (src_w, src_h) == (width, height):
        return pixels.copy()  # cv2.resize copies an image already at the size
    if abs(1.0 / (width / src_w) - 2) < _DBL_EPSILON and abs(1.0 / (height / src_h) - 2) < _DBL_EPSILON:
        return _halve(pixels)
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    plan = _plan(src_w, src_h, width, height, channels)
    flat = np.ascontiguousarray(pixels).reshape(src_h, src_w * channels)
    out = np.empty((height, width * channels), np.uint8)
    # Band by band through buffers reused across bands: whole-image int32 temporaries
    # (5 MB each for 640x480 RGB) cost more in fresh pages than in arithmetic.
    row_bytes = width * channels
    gathered = np.empty((plan.band_rows, row_bytes), np.uint8)
    horizontal, right = (np.empty((plan.band_rows, row_bytes), np.int32) for _ in range(2))
    top, bottom = (np.empty((plan.strip_rows, row_bytes), np.int32) for _ in range(2))
    for strip in plan.strips:
        _horizontal(flat[plan.rows[strip.first:strip.last]], plan, gathered, horizontal, right)
        _vertical(horizontal, strip, plan, top, bottom)
        out[strip.start:strip.stop] = top[:strip.stop - strip.start]
    return out.reshape((height, width) + pixels.shape[2:])


def _horizontal(source: np.ndarray, plan: _Plan, gathered: np.ndarray, horizontal: np.ndarray,
                right: np.ndarray) -> None:
    """OpenCV's horizontal pass of `source`'s rows into the first rows of `horizontal`:
    (left * wl + right * wr) >> 4. Gathered as uint8, widened, then multiplied in place:
    numpy's gathers of int32 and its mixed uint8 x int32 loops are several times slower."""
    rows = len(source)
    gathered, horizontal, right = gathered[:rows], horizontal[:rows], right[:rows]
    np.take(source, plan.left, axis=1, out=gathered, mode="clip")
    horizontal[...] = gathered  # at most 255 * 2**11 below: int32 is wide enough
    horizontal *= plan.left_weight
    np.take(source, plan.right, axis=1, out=gathered, mode="clip")
    right[...] = gathered
    right *= plan.right_weight
    horizontal += right
    horizontal >>= _ROW_SHIFT


def _vertical(horizontal: np.ndarray, strip: _Strip, plan: _Plan, top: np.ndarray, bottom: np.ndarray) -> None:
    """OpenCV's vertical pass for the strip's output rows into the first rows of `top`,
    each product floored on its own as its 16-bit SIMD code does, then rounded."""
    rows = strip.stop - strip.start
    top, bottom = top[:rows], bottom[:rows]
    np.take(horizontal, strip.top, axis=0, out=top, mode="clip")
    top *= plan.top_weight[strip.start:strip.stop]
    top >>= _PRODUCT_SHIFT
    np.take(horizontal, strip.bottom, axis=0, out=bottom, mode="clip")
    bottom *= plan.bottom_weight[strip.start:strip.stop]
    bottom >>= _PRODUCT_SHIFT
    top += bottom
    top += 1 << (_ROUND_SHIFT - 1)
    top >>= _ROUND_SHIFT


def _check_resize(pixels: np.ndarray, width: int, height: int) -> None:
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"resize_linear takes a uint8 HxW or HxWxC array, not {pixels.dtype} {list(pixels.shape)}")
    if width < 1 or height < 1:
        raise ValueError(f"the target size must be at least 1x1, not {width}x{height}")


@lru_cache(maxsize=None)
def _opencv() -> Any:  # the cv2 module
    """OpenCV's module when it imports, else None. Imported on the first resize, not with
    the runtime: it costs a tenth of a second and tens of MB that a classifier never needs."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def resize_backend() -> str:
    """What `resize` runs here: "opencv <version>" or "numpy" (benchmark records name it)."""
    cv2 = _opencv()
    return f"opencv {cv2.__version__}" if cv2 is not None else "numpy"


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """`resize_linear`'s result, from OpenCV itself when it is installed (the reference,
    ~5x faster than numpy), else from numpy. Same rank as the input, like resize_linear."""
    cv2 = _opencv()
    if cv2 is None:
        return resize_linear(pixels, width, height)
    _check_resize(pixels, width, height)
    out: np.ndarray = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape((height, width) + pixels.shape[2:])  # cv2 drops the axis of a HxWx1 image


@dataclass(frozen=True)
class Geometry:
    """Where the model input's pixels lie in the original image: an input pixel
    coordinate is `original * scale + pad` per axis. For a letterbox the scale is
    Ultralytics' single ratio and the pad its left/top border (what its validator's
    `scale_boxes(..., ratio_pad)` uses); for resize + centre crop, the resize ratios and
    minus the crop offset."""

    scale_x: float
    scale_y: float
    pad_left: float
    pad_top: float
    width: int  # the original image's
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes [K, 4] (x1, y1, x2, y2) in input pixels → original pixels, clipped to the
        image (Ultralytics' scale_boxes)."""
        boxes = np.asarray(boxes)
        out: np.ndarray = (boxes - self._offset(boxes)) / self._scales(boxes)
        out[..., 0::2] = out[..., 0::2].clip(0, self.width)
        out[..., 1::2] = out[..., 1::2].clip(0, self.height)
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes [K, 4] (x1, y1, x2, y2) in original pixels → input pixels (the inverse
        of `to_original` inside the image): to draw labels on the model's view."""
        boxes = np.asarray(boxes)
        out: np.ndarray = boxes * self._scales(boxes) + self._offset(boxes)
        return out

    def _scales(self, boxes: np.ndarray) -> np.ndarray:
        return np.asarray([self.scale_x, self.scale_y] * 2, dtype=np.result_type(boxes.dtype, np.float32))

    def _offset(self, boxes: np.ndarray) -> np.ndarray:
        return np.asarray([self.pad_left, self.pad_top] * 2, dtype=np.result_type(boxes.dtype, np.float32))


def letterbox_size(width: int, height: int, out_height: int, out_width: int) -> tuple[float, int, int, int, int]:
    """Ultralytics' LetterBox arithmetic (auto=False, scaleup=True, center=True): the
    ratio, the scaled (width, height), and the left and top borders. Python's round()
    (half to even) as Ultralytics uses it."""
    ratio = min(out_height / height, out_width / width)
    new_w, new_h = round(width * ratio), round(height * ratio)
    dw, dh = (out_width - new_w) / 2, (out_height - new_h) / 2
    return ratio, new_w, new_h, round(dw - _PAD_NUDGE), round(dh - _PAD_NUDGE)


def letterbox(pixels: np.ndarray, height: int, width: int, pad_value: int = PAD_VALUE) -> tuple[np.ndarray, Geometry]:
    """A uint8 HxW or HxWxC image → exactly what Ultralytics' `LetterBox(new_shape=(height,
    width), auto=False, scale_fill=False, scaleup=True, center=True)` makes of it (any
    colour order: the resize works per channel), and the Geometry mapping back."""
    src_h, src_w = pixels.shape[:2]
    ratio, new_w, new_h, left, top = letterbox_size(src_w, src_h, height, width)
    if new_w < 1 or new_h < 1:  # where Ultralytics' cv2.resize would fail
        raise InputError(f"a {src_w}x{src_h} image scaled to fit {width}x{height} keeps no pixel on one side; "
                         "crop it to a less extreme aspect ratio first")
    if (new_w, new_h) != (src_w, src_h):  # Ultralytics leaves an image at its size untouched
        pixels = resize(pixels, new_w, new_h)
    # round(d + 0.1) on the other side always completes the size: the sides sum to the pad.
    out = np.full((height, width) + pixels.shape[2:], pad_value, dtype=np.uint8)
    out[top:top + new_h, left:left + new_w] = pixels
    return out, Geometry(scale_x=ratio, scale_y=ratio, pad_left=left, pad_top=top, width=src_w, height=src_h)
