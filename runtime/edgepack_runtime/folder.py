"""`edgepack-runtime run BUNDLE --image DIR/`: a folder's images, in name order, and one
line per answer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from .errors import InputError, UsageError

if TYPE_CHECKING:
    from .postprocess import Detection, Prediction

__all__ = ["IMAGE_SUFFIXES", "image_files", "annotation_paths", "answer_line"]

# The suffixes of the formats the runtime decodes (preprocess.IMAGE_FORMATS); other files
# in the folder (labels, notes, hidden files) are skipped.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name; InputError when there are none."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list --image folder {folder} ({exc.strerror or exc}); check its permissions") from exc
    files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    if not files:
        others = sum(1 for p in entries if p.is_file())
        what = f"only {others} other file(s)" if others else "nothing"
        raise InputError(f"--image folder {folder} holds no images ({what}; the runtime reads "
                         f"{', '.join(IMAGE_SUFFIXES)}); put the images there or pass one file")
    return files


def annotation_paths(files: list[Path], folder: Path) -> list[Path]:
    """Where `--annotate DIR` writes each file's drawing: DIR/<same name>, DIR made if its
    parent exists. Checked before any inference, like a single --annotate."""
    from .annotate import check_destination

    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--annotate {folder} is a file; with an --image folder, give a folder for the drawings")
    if not folder.parent.is_dir():
        raise UsageError(f"--annotate {folder}: folder {folder.parent} does not exist; create it first")
    folder.mkdir(exist_ok=True)
    destinations = [folder / f.name for f in files]
    for source, destination in zip(files, destinations):
        check_destination(source, destination)  # the input folder itself would write over the photos
    return destinations


def _top(top: list[tuple[str, float]]) -> str:
    return ", ".join(f"{label} {score:.4f}" for label, score in top)


def _detections(detections: list[Detection]) -> str:
    counts: dict[str, list[float]] = {}
    for label, score, *_ in detections:
        counts.setdefault(label, []).append(score)
    found = ", ".join(f"{len(s)} {label} (best {max(s):.3f})" for label, s in counts.items())
    return f"{len(detections)} detection(s)" + (f": {found}" if found else "")


def answer_line(name: str, prediction: Prediction) -> str:
    """One image's answer on one line: top labels, detections counted per label (their boxes
    are in --json), a mask's size and share, an embedding's size and norm, or the outputs' shapes."""
    if prediction.top is not None:
        answer: Optional[str] = _top(prediction.top)
    elif prediction.detections is not None:
        answer = _detections(prediction.detections)
    elif prediction.mask is not None:
        from .postprocess import mask_summary

        answer = mask_summary(prediction.mask)
    elif prediction.embedding is not None:
        answer = f"embedding of {prediction.embedding.size} values, L2 norm {np.linalg.norm(prediction.embedding):.4f}"
    else:
        answer = ", ".join(f"{k} {list(v.shape)}" for k, v in prediction.outputs.items())
    return f"{name}: {answer}"
