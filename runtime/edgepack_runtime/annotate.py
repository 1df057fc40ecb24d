"""A detector's boxes, or a dense model's mask, drawn onto the image it was given
(`edgepack-runtime run --annotate`), with Pillow (the `image` extra), written atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import BackendUnavailableError, UsageError, first_line
from .files import atomic_write
from .postprocess import Detection, Prediction

__all__ = ["annotate", "overlay_mask", "check_destination", "write_annotated"]

# Box colours, one per class (cycled): saturated hues that read on photos and on drawings.
PALETTE = ((255, 56, 56), (72, 157, 255), (44, 189, 86), (255, 157, 0), (170, 80, 255), (0, 194, 204),
           (255, 84, 182), (140, 140, 20))
LINE_FRACTION = 1 / 320  # outline width per pixel of the image's longer side: 2 px at 640
FONT_FRACTION = 1 / 40  # label text height per pixel of the longer side: 16 px at 640
MIN_FONT_PX = 10
TEXT_PAD_PX = 2
JPEG_QUALITY = 92
MASK_OPACITY = 0.5  # a mask's colour over the photo: both stay readable


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def annotate(image: Any, detections: Sequence[Detection]) -> Any:
    """A copy of `image` (a PIL image) in RGB with each detection's box outlined and its
    label and score written above it (inside the image when the box touches the top)."""
    from PIL import ImageDraw

    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    longer = max(canvas.size)
    width = max(1, round(longer * LINE_FRACTION))
    font = _font(max(MIN_FONT_PX, round(longer * FONT_FRACTION)))
    colours: dict[str, tuple[int, int, int]] = {}
    for label, score, x1, y1, x2, y2 in detections:
        colour = colours.setdefault(label, PALETTE[len(colours) % len(PALETTE)])
        draw.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=colour, width=width)
        text = f"{label} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        height = bottom - top + 2 * TEXT_PAD_PX
        y = y1 - height if y1 - height >= 0 else y1
        draw.rectangle((x1, y, x1 + right - left + 2 * TEXT_PAD_PX, y + height), fill=colour)
        draw.text((x1 + TEXT_PAD_PX - left, y + TEXT_PAD_PX - top), text, fill=(255, 255, 255), font=font)
    return canvas


def overlay_mask(image: Any, mask: Any) -> Any:
    """A copy of `image` (a PIL image) in RGB with the mask's pixels tinted: a boolean mask
    in the first colour, class indices each in its own (class 0, the background, untinted)."""
    import numpy as np
    from PIL import Image

    canvas = np.asarray(image.convert("RGB"), dtype=np.float32)
    classes = np.asarray(mask).astype(np.int64)  # a boolean mask: class 1 on 0
    palette = np.asarray(((0, 0, 0),) + PALETTE, np.float32)
    tint = palette[np.where(classes > 0, (classes - 1) % len(PALETTE) + 1, 0)]
    shown = (classes > 0)[..., None]
    blended = np.where(shown, canvas * (1 - MASK_OPACITY) + tint * MASK_OPACITY, canvas)
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_destination(source: Path, destination: Path) -> str:
    """The Pillow format `destination` will be written in; UsageError when it is the input
    image, its suffix names no format Pillow writes, or its folder does not exist (checked
    before the inference, so a typo costs no model run)."""
    try:
        from PIL import Image
    except ImportError:
        raise BackendUnavailableError("--annotate needs Pillow: pip install 'edgepack-runtime[image]'") from None
    source, destination = Path(source), Path(destination)
    if _same_file(source, destination):
        raise UsageError(f"--annotate {destination} is the input image; write the drawing to another file")
    image_format = Image.registered_extensions().get(destination.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise UsageError(f"--annotate {destination}: no image format for suffix {destination.suffix or '(none)'!r}; "
                         "end the name with .jpg or .png")
    if not destination.parent.is_dir():
        raise UsageError(f"--annotate {destination}: folder {destination.parent} does not exist; create it first")
    return image_format


def write_annotated(source: Path, prediction: Prediction, destination: Path) -> None:
    """Draw the prediction's mask, else its detections, onto the image at `source` and write
    it to `destination`, in the format its suffix names (.jpg, .png, ...): never over the
    source, never half a file."""
    from PIL import Image

    image_format = check_destination(source, destination)
    with Image.open(source) as original:  # the file predict() read, decoded the same way: same pixel grid
        drawn = (overlay_mask(original, prediction.mask) if prediction.mask is not None
                 else annotate(original, prediction.detections or []))
    buffer = io.BytesIO()
    try:
        drawn.save(buffer, image_format, **({"quality": JPEG_QUALITY} if image_format == "JPEG" else {}))
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"--annotate {destination}: Pillow cannot write {image_format} ({first_line(exc, 120)}); "
                         "end the name with .jpg or .png") from exc
    try:
        atomic_write(destination, buffer.getvalue())
    except OSError as exc:
        raise UsageError(f"cannot write --annotate {destination} ({exc.strerror or first_line(exc)})") from exc
