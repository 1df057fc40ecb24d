"""Real photos that ship inside installed packages (scikit-image, scikit-learn,
matplotlib), made into several views each: shared by the examples' prepare.py scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

__all__ = ["photo_path", "photo_views"]


def photo_path(package: str, relative: str) -> Path:
    """The file at `relative` inside the installed `package`."""
    module = __import__(package)
    return Path(module.__file__).resolve().parent / relative


def photo_views(photos: Sequence[tuple[str, str]], crops: Sequence[tuple[Any, ...]],
                view: Callable[..., np.ndarray]) -> dict[str, np.ndarray]:
    """{"image": `view(rgb, *crop)` of each photo for each crop, "groups": the photo each
    comes from}: views of one photo rise and fall together, so the build counts them as one
    independent unit."""
    out = []
    for package, relative in photos:
        with Image.open(photo_path(package, relative)) as img:
            rgb = img.convert("RGB")
        out += [view(rgb, *crop) for crop in crops]
    return {"image": np.stack(out).astype(np.float32), "groups": np.repeat(np.arange(len(photos)), len(crops))}
