"""Raw inputs → the model's tensors, exactly as the manifest declares (docs/raw-inputs.md).

Images go through Pillow and numpy in the order torchvision's transforms take a PIL image
(decode, convert, Resize, CenterCrop, ToTensor, Normalize), with torchvision's own size
and crop arithmetic, so a bundle built from a torchvision-trained model sees the tensors
it was trained on; a detector's letterbox is Ultralytics' LetterBox (letterbox.py). Texts
go through the bundle's Hugging Face tokenizer. Pillow and tokenizers are the `image` and
`text` extras, imported only here.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Union

import numpy as np

from .errors import BackendUnavailableError, InputError, InputTooLarge, first_line
from .letterbox import Geometry, letterbox
from .manifest import ImageSteps, TensorSpec, TextSteps

if TYPE_CHECKING:
    from .bundle import Bundle

__all__ = ["pipeline", "ImagePipeline", "TextPipeline", "MAX_IMAGE_PIXELS", "MAX_TEXT_CHARS", "IMAGE_FORMATS",
           "resized_size", "crop_box"]

# A 40 MP photo decodes to 120 MB of RGB, more than any model input needs; a decompression
# bomb (a few KB of PNG declaring a 100k x 100k canvas) is refused from its header alone.
MAX_IMAGE_PIXELS = 40_000_000
# Far beyond any tokenizer's maximum length in characters; tokenizing megabytes costs seconds.
MAX_TEXT_CHARS = 100_000
# The decoders Pillow may use: the common photo formats, none of the exotic ones.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")

ImageSource = Union[str, "os.PathLike[str]", bytes, Any]  # a path, encoded bytes, a PIL image or a uint8 array


def pipeline(bundle: Bundle) -> Union[ImagePipeline, TextPipeline]:
    """The pipeline a bundle declares (BundleError-free: the manifest was checked on reading)."""
    pre = bundle.manifest.preprocessing
    specs = {s.name: s for s in bundle.manifest.inputs}
    if pre is not None and pre.image is not None:
        return ImagePipeline(pre.image, specs[pre.image.input])
    if pre is not None and pre.text is not None:
        return TextPipeline(pre.text, specs, bundle.read_data_file(pre.text.tokenizer))
    raise InputError("this bundle declares no preprocessing of raw inputs: pass tensors, or rebuild it with "
                     "--preprocess or --tokenizer")


def _pillow() -> tuple[Any, Any]:  # PIL's Image and ImageOps modules
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise BackendUnavailableError("images need Pillow: pip install 'edgepack-runtime[image]'") from None
    return Image, ImageOps


def resized_size(width: int, height: int, resize: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) after `resize`, with torchvision's arithmetic: Resize(S) sets the
    shorter side to S and the longer to int(S * long / short), truncated."""
    if not resize:
        return width, height
    if len(resize) == 2:
        return resize[1], resize[0]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize[0], int(resize[0] * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def crop_box(width: int, height: int, crop: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Pillow's (left, top, right, bottom) of torchvision's CenterCrop, including its zero
    padding of a smaller image (Pillow fills outside the image with zeros) and its
    round-half-to-even offsets."""
    crop_h, crop_w = crop
    pad_left = (crop_w - width) // 2 if crop_w > width else 0
    pad_top = (crop_h - height) // 2 if crop_h > height else 0
    left = int(round((max(width, crop_w) - crop_w) / 2.0)) - pad_left
    top = int(round((max(height, crop_h) - crop_h) / 2.0)) - pad_top
    return left, top, left + crop_w, top + crop_h


class ImagePipeline:
    """An image (path, bytes, PIL image or uint8 HWC array) → the input tensor."""

    def __init__(self, steps: ImageSteps, spec: TensorSpec, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        self.steps, self.spec, self.max_pixels = steps, spec, max_pixels
        self._image, self._ops = _pillow()
        channels = 1 if steps.channels == "gray" else 3
        # Every pixel value's tensor value, per channel, computed once with torchvision's own
        # float32 operations in its order (ToTensor's / 255, then Normalize's - mean, / std):
        # a lookup is bit-exact to it, and 3x faster than the arithmetic per pixel.
        levels = np.arange(256, dtype=np.float32)
        levels = levels / np.float32(255) if abs(steps.scale - 1 / 255) < 1e-12 else levels * np.float32(steps.scale)
        mean = np.asarray(steps.mean or (0.0,) * channels, np.float32)[:, None]
        std = np.asarray(steps.std or (1.0,) * channels, np.float32)[:, None]
        self._table = ((levels[None, :] - mean) / std).astype(spec.dtype)
        self._filter = getattr(self._image.Resampling, steps.interpolation.upper())

    def __call__(self, source: ImageSource, channels: str = "rgb") -> np.ndarray:
        return self.prepare(source, channels)[0]

    def prepare(self, source: ImageSource, channels: str = "rgb") -> tuple[np.ndarray, Geometry]:
        """The input tensor, and the Geometry that maps the input's pixels back to the
        original image (detections → `geometry.to_original(boxes)`)."""
        image, where = self._place(self.decode(source, channels))
        return self.to_tensor(image), where

    def decode(self, source: ImageSource, channels: str = "rgb") -> Any:
        """A decoded PIL image in the model's colour mode. `channels` is the order of a numpy
        array's last axis ("bgr" for OpenCV frames); files and PIL images say their own."""
        Image = self._image
        if isinstance(source, np.ndarray):
            image = self._from_array(source, channels)
        elif isinstance(source, Image.Image):
            self._check_pixels(*source.size)
            image = source
        else:
            image = self._open(source)
        return image.convert("L" if self.steps.channels == "gray" else "RGB")

    def _from_array(self, array: np.ndarray, channels: str) -> Any:
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise InputError(f"an image array must be uint8 HxW or HxWxC with 1, 3 or 4 channels, not {array.dtype} "
                             f"{list(array.shape)}; pass the camera frame as it comes, or a file")
        if channels not in ("rgb", "bgr"):
            raise InputError(f"channels must be 'rgb' or 'bgr' (OpenCV's order), not {channels!r}")
        self._check_pixels(array.shape[1], array.shape[0])
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim == 3 and channels == "bgr":
            array = array[..., [2, 1, 0, 3][:array.shape[2]]]
        return self._image.fromarray(np.ascontiguousarray(array))

    def _open(self, source: Any) -> Any:
        Image = self._image
        what = "the image"  # encoded bytes or a file object
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)):
            what = str(source)
            if not Path(source).is_file():
                raise InputError(f"no image file at {what}; pass the path of a JPEG or PNG")
        try:
            with Image.open(source, formats=IMAGE_FORMATS) as image:
                self._check_pixels(*image.size)  # from the header, before any pixel is decoded
                image.load()
                return image
        except InputError:
            raise
        except Image.DecompressionBombError:  # Pillow's own guard, far above ours: only a bomb trips it
            raise InputTooLarge(f"{what} declares an image of more than the {self.max_pixels:,} pixels the runtime "
                                "decodes; downscale it first") from None
        except Image.UnidentifiedImageError:
            raise InputError(f"{what} is not an image in a format the runtime reads "
                             f"({', '.join(IMAGE_FORMATS)})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
            raise InputError(f"{what} cannot be decoded ({first_line(exc, 120)}); send an intact image") from exc

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise InputTooLarge(f"image of {width}x{height} pixels is larger than the {self.max_pixels:,} "
                                "the runtime decodes; downscale it first")

    def geometry(self, image: Any) -> Any:
        """Resize, then centre crop (a PIL image in, a PIL image out), or the letterbox (a
        PIL image in, a uint8 array out)."""
        return self._place(image)[0]

    def _place(self, image: Any) -> tuple[Any, Geometry]:
        """`geometry`, and where the original's pixels went."""
        steps = self.steps
        width, height = image.size
        if steps.letterbox:
            return letterbox(np.asarray(image), steps.resize[0], steps.resize[1], steps.pad_value)
        size = resized_size(width, height, steps.resize)
        if size != image.size:  # torchvision leaves an image at its size untouched
            image = image.resize(size, self._filter)
        left = top = 0
        if steps.crop and (image.size[0], image.size[1]) != (steps.crop[1], steps.crop[0]):
            box = crop_box(image.size[0], image.size[1], steps.crop)
            left, top = box[:2]
            image = image.crop(box)
        # Pillow and torchvision map pixel edges: input x = original x * new/old - crop left.
        where = Geometry(scale_x=size[0] / width, scale_y=size[1] / height, pad_left=-left, pad_top=-top,
                         width=width, height=height)
        return image, where

    def to_tensor(self, image: Any) -> np.ndarray:
        """Scale, normalise, lay out, add the batch axis, in the input's dtype."""
        pixels = np.asarray(image)  # uint8, HxW (gray) or HxWx3 (RGB)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        height, width, channels = pixels.shape
        nchw = self.steps.layout == "nchw"
        tensor = np.empty((1, channels, height, width) if nchw else (1, height, width, channels), self._table.dtype)
        for c in range(channels):
            source = channels - 1 - c if self.steps.channels == "bgr" else c
            # mode="clip" never clips (a uint8 indexes 256 levels) but lets np.take write
            # straight into `out`: the default mode buffers it, 1.5x slower.
            np.take(self._table[c], pixels[..., source], out=tensor[0, c] if nchw else tensor[0, ..., c], mode="clip")
        if not self.spec.fits(tensor.shape):
            raise InputError(f"the declared preprocessing makes {list(tensor.shape)}, but input {self.spec.name!r} is "
                             f"{self.spec.describe().split(':')[1]}; rebuild the bundle with matching resize/crop")
        return tensor


class TextPipeline:
    """A string → token ids (and attention mask, token types) through the bundle's
    tokenizer: truncated to the ids input's maximum length, padded to its minimum (a
    static length pads to that length)."""

    def __init__(self, steps: TextSteps, specs: Mapping[str, TensorSpec], tokenizer_json: bytes) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise BackendUnavailableError("texts need tokenizers: pip install 'edgepack-runtime[text]'") from None
        self.steps = steps
        self.specs = {k: specs[k] for k in (steps.ids, steps.attention_mask, steps.token_type_ids) if k}
        ids = specs[steps.ids]
        axis = len(ids.shape) - 1  # [batch, seq]: the last axis holds the tokens
        dim = next((d for d in ids.dynamic if d.axis == axis), None)
        self.min_length, self.max_length = (dim.min, dim.max) if dim else (ids.shape[axis], ids.shape[axis])
        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        except Exception as exc:  # tokenizers raises plain Exceptions on a bad file
            raise InputError(f"the bundle's tokenizer cannot be read ({first_line(exc, 120)}); "
                             "rebuild the bundle") from exc
        padding = self.tokenizer.padding or {}
        self.pad_id = padding.get("pad_id", 0)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)  # counts the special tokens it adds

    def __call__(self, text: str) -> dict[str, np.ndarray]:
        if not isinstance(text, str):
            raise InputError(f"a text model takes a str, not {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise InputTooLarge(f"text of {len(text):,} characters is longer than the {MAX_TEXT_CHARS:,} the runtime "
                                f"tokenizes (the model reads {self.max_length} tokens at most); send less")
        encoding = self.tokenizer.encode(text)
        length = max(len(encoding.ids), self.min_length)
        pad = length - len(encoding.ids)
        columns = {self.steps.ids: encoding.ids + [self.pad_id] * pad}
        if self.steps.attention_mask:
            columns[self.steps.attention_mask] = encoding.attention_mask + [0] * pad
        if self.steps.token_type_ids:
            columns[self.steps.token_type_ids] = encoding.type_ids + [0] * pad
        return {name: np.asarray([values], dtype=self.specs[name].dtype) for name, values in columns.items()}
