"""Real photos that ship inside installed packages (scikit-image, scikit-learn,
matplotlib), made into several views each: shared by the examples' prepare.py scripts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image

__all__ = ["photo_path", "photo_views", "prepare_main"]


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


def prepare_main(description: str, prepare: Callable[[Path, int, int], Mapping[str, Path]], out_dir: Path,
                 views: int, calibration_views: int, eval_views: int) -> None:
    """A prepare.py's command line: [OUT_DIR] --calibration-views N --eval-views N (each
    1..`views`), then `prepare` and what it wrote, one line per file."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", type=Path, default=out_dir)
    for flag, default in (("--calibration-views", calibration_views), ("--eval-views", eval_views)):
        parser.add_argument(flag, type=int, default=default, choices=range(1, views + 1), metavar=f"1..{views}")
    args = parser.parse_args()
    for role, path in prepare(args.out_dir, args.calibration_views, args.eval_views).items():
        print(f"{role:12s} {path}")
