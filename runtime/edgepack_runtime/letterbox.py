"""Ultralytics' letterbox in numpy: a detector sees the pixels it was validated on.

YOLO models are trained and validated on images that `ultralytics.data.augment.LetterBox`
made: scaled with OpenCV's `cv2.resize(..., INTER_LINEAR)` so the whole image fits,
centred, the borders filled with grey 114. The runtime does not depend on OpenCV, and
Pillow's bilinear filter is a different one (it antialiases when shrinking), so
`resize_linear` re-implements OpenCV's 8-bit INTER_LINEAR bit for bit: its 11-bit
fixed-point weights, the order and rounding of its two passes, its edge rules, and the
2x2 box average it switches to for an exact halving (tests/runtime/test_letterbox.py
compares it with cv2 on thousands of random images and sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["Geometry", "letterbox", "letterbox_size", "resize_linear", "PAD_VALUE"]

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
    HxW or HxWxC array, bit for bit, shrinking or enlarging (a HxWx1 array stays 3-D)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"resize_linear takes a uint8 HxW or HxWxC array, not {pixels.dtype} {list(pixels.shape)}")
    if width < 1 or height < 1:
        raise ValueError(f"the target size must be at least 1x1, not {width}x{height}")
    src_h, src_w = pixels.shape[:2]
    if (src_w, src_h) == (width, height):
        return pixels.copy()  # cv2.resize copies an image already at the size
    if abs(1.0 / (width / src_w) - 2) < _DBL_EPSILON and abs(1.0 / (height / src_h) - 2) < _DBL_EPSILON:
        return _halve(pixels)
    x0, x1, a0, a1 = _taps(src_w, width, clamp_fraction=True)
    y0, y1, b0, b1 = _taps(src_h, height, clamp_fraction=False)
    # Horizontal pass on the source rows the output uses only (a big shrink reads few).
    rows, row_of = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    source = pixels[rows]
    if pixels.ndim == 3:
        a0, a1 = a0[:, None], a1[:, None]
    # Gather uint8, widen, then multiply in place: several times faster than gathering
    # int32 or multiplying uint8 by int32 (numpy's mixed-type loops are slow).
    horizontal = np.take(source, x0, axis=1).astype(np.int32)  # at most 255 * 2**11 below
    horizontal *= a0
    right = np.take(source, x1, axis=1).astype(np.int32)
    right *= a1
    horizontal += right
    horizontal >>= _ROW_SHIFT
    column = (height,) + (1,) * (pixels.ndim - 1)
    top = np.take(horizontal, row_of[:height], axis=0)
    top *= b0.reshape(column)
    top >>= _PRODUCT_SHIFT
    bottom = np.take(horizontal, row_of[height:], axis=0)
    bottom *= b1.reshape(column)
    bottom >>= _PRODUCT_SHIFT
    top += bottom
    top += 1 << (_ROUND_SHIFT - 1)
    top >>= _ROUND_SHIFT
    return top.astype(np.uint8)


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
        out = (boxes - self._offset(boxes)) / self._scales(boxes)
        out[..., 0::2] = out[..., 0::2].clip(0, self.width)
        out[..., 1::2] = out[..., 1::2].clip(0, self.height)
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes [K, 4] (x1, y1, x2, y2) in original pixels → input pixels (the inverse
        of `to_original` inside the image): to draw labels on the model's view."""
        boxes = np.asarray(boxes)
        return boxes * self._scales(boxes) + self._offset(boxes)

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
        pixels = resize_linear(pixels, new_w, new_h)
    # round(d + 0.1) on the other side always completes the size: the sides sum to the pad.
    out = np.full((height, width) + pixels.shape[2:], pad_value, dtype=np.uint8)
    out[top:top + new_h, left:left + new_w] = pixels
    return out, Geometry(scale_x=ratio, scale_y=ratio, pad_left=left, pad_top=top, width=src_w, height=src_h)
